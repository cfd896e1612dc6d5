"""Benchmark, side by side in one process: BALD (T MC-dropout samples) of the glyph CNN by

* ``baal``: a plain single-process PyTorch loop that replicates each batch T times through the
  whole model, as baal's ``ModelWrapper.predict_on_batch`` with ``replicate_in_memory=True``
  does (``x.repeat(T)`` -> ``model`` -> ``view(T, n, C)``), MC dropout from torch's global RNG;
* ``kernel``: rayfal's cached kernel in-process, exactly as a scoring actor calls it
  (:func:`rayfal.models.predict.mc_probs` with the trunk once per batch, the head T times on
  row-keyed masks, then :func:`rayfal.acquisition.scores.bald`);
* ``ray``: the ``rayfal score`` path, :func:`rayfal.scoring.per_row.score_pool` (Ray Data
  streaming Parquet read, ``PoolScorer`` actor pool, driver-side top-K) on a fresh local Ray;

with the same seeded model, the same pool rows and the same torch thread count (``--threads``,
default 1 = the CPU share of the one ``auto`` scoring actor on 2 CPUs). The in-process loops
start from the decoded float tensor of the first ``--kernel-rows`` pool rows (no Parquet read,
which favours them); they run in alternating repeats before and after the Ray run, so slow
phases of the shared machine hit all of them. Reported: rows per wall second, rows per
CPU-second (``time.process_time``; for Ray, the scoring actor's CPU time from ``/proc``), the
ratios, and a roofline: FLOPs per row (``torch.utils.flop_counter.FlopCounterMode``; cached:
trunk once + head T times; baal: the whole model T times) x rows/s over the measured float32
``torch.mm`` FLOP/s at the same thread count.

Example (the BENCHMARKS.md run)::

    .venv/bin/python benchmarks/bench_compare.py \\
        --pool /tmp/rayfal-bench/glyphs-sensitive_attribute-4000000-seed0-rg4096/pool \\
        --ray-files 1 --kernel-rows 4096
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_bald_scoring import RssSampler, loadavg, machine_info  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "compare.json"


# ----------------------------------------------------------------------------- the three paths


def baal_loop(model, x, T: int, batch_size: int) -> np.ndarray:
    """baal-style MC sampling: each batch repeated T times in memory through the whole model."""
    import torch

    from rayfal.acquisition.scores import bald

    out = []
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            xb = x[lo : lo + batch_size]
            n = xb.shape[0]
            logits = model(xb.repeat(T, *([1] * (xb.dim() - 1)))).view(T, n, -1)
            probs = torch.softmax(logits, dim=-1).permute(1, 2, 0)  # [n, C, T]
            out.append(bald(probs.numpy().astype(np.float64)))
    return np.concatenate(out)


def cached_kernel(model, x, row_id: np.ndarray, T: int, batch_size: int, seed: int) -> np.ndarray:
    """What ``PoolScorer`` runs per batch: cached-trunk ``mc_probs`` (row-keyed masks) + BALD."""
    from rayfal.acquisition.scores import bald
    from rayfal.models.predict import mc_probs

    out = []
    for lo in range(0, len(x), batch_size):
        out.append(bald(mc_probs(model, x[lo : lo + batch_size], mc_samples=T,
                                 batch_size=batch_size, generator_seed=seed,
                                 row_keys=row_id[lo : lo + batch_size])))
    return np.concatenate(out)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


# ----------------------------------------------------------------------------- roofline


def flops_per_row(model, x, T: int) -> dict[str, float]:
    """FLOPs per pool row of the cached path (trunk once + head on T copies) and of the baal
    path (whole model on T copies), counted by ``FlopCounterMode`` on one batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n = len(x)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as trunk:
            z = model.embed(x)
        with FlopCounterMode(display=False) as head:
            model.head(z.repeat(T, 1))
        with FlopCounterMode(display=False) as full:
            model(x.repeat(T, 1, 1, 1))
    return {
        "trunk": trunk.get_total_flops() / n,
        "head_T": head.get_total_flops() / n,
        "cached": (trunk.get_total_flops() + head.get_total_flops()) / n,
        "baal": full.get_total_flops() / n,
    }


def matmul_flops(threads: int, size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best float32 ``torch.mm`` FLOP/s (2 n^3 per product) at ``threads`` torch threads, per
    wall second and per CPU-second of this process (the CPU figure is the peak to compare with
    on a shared machine: it does not count time the process waited for a core)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w, c = timed(lambda: torch.mm(a, b))
        best, best_cpu = min(best, w), min(best_cpu, c)
    return {"size": size, "threads": threads, "best_s": best, "best_cpu_s": best_cpu,
            "flops_per_s": 2 * size**3 / best,
            "flops_per_cpu_s": 2 * size**3 / best_cpu}


# ----------------------------------------------------------------------------- Ray Data path


def ray_scoring(args: argparse.Namespace, pool, spec: dict, weights: bytes) -> dict[str, Any]:
    import ray
    import ray.data

    from rayfal.config import ScoringConfig
    from rayfal.scoring.per_row import score_pool

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             object_store_memory=2_000_000_000, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    init_s = time.perf_counter() - t0
    cfg = ScoringConfig(compute="actors", mc_samples=args.mc, batch_size=args.batch_size,
                        cpus_per_actor=float(args.threads))
    try:
        sampler = RssSampler(interval=1.0)
        sampler._sample_workers()
        base = dict(sampler.cpu_s)
        sampler.start()
        load0 = loadavg()
        t0 = time.perf_counter()
        try:
            res = score_pool(pool, strategy="bald", strategy_params={}, seed=args.seed, round=0,
                             budget=50, labelled=np.array([], np.int64), model=(spec, weights),
                             cfg=cfg, progress=False)
        finally:
            wall = time.perf_counter() - t0
            sampler.stop()
    finally:
        ray.shutdown()
    cpu = sampler.cpu_by_kind(base)
    return {
        "rows": res.rows_scored, "files": len(pool.files), "ray_init_s": round(init_s, 1),
        "wall_s": round(wall, 2), "rows_per_s": res.rows_scored / wall,
        "actors": res.workers, "cpus_per_actor": float(args.threads), "cpu_seconds": cpu,
        "rows_per_cpu_s": res.rows_scored / cpu["actor"] if cpu["actor"] else None,
        "rows_per_pipeline_cpu_s": res.rows_scored / max(sum(cpu.values()), 1e-9),
        "actor_peak_rss_mib": round(sampler.actor_peak["VmRSS"] / 1024, 1),
        "read_worker_peak_rss_mib": round(sampler.other_workers_peak_kb / 1024, 1),
        "driver_peak_rss_mib": round(sampler.driver_peak_kb / 1024, 1),
        "loadavg_before": load0, "loadavg_after": loadavg(),
    }


# ----------------------------------------------------------------------------- main


def load_rows(pool, n: int):
    """The first ``n`` pool rows as the model's float input, plus their row ids."""
    import pyarrow.parquet as pq
    import torch

    from rayfal.data import schema as S

    tables, got = [], 0
    for f in pool.files:
        t = pq.read_table(f, columns=[S.ROW_ID, pool.feature_column]).slice(0, n - got)
        tables.append(t)
        got += len(t)
        if got >= n:
            break
    feats = np.concatenate([S.column_to_numpy(t.column(pool.feature_column)) for t in tables])
    row_id = np.concatenate([t.column(S.ROW_ID).to_numpy() for t in tables]).astype(np.int64)
    return torch.from_numpy(S.to_model_input(feats, pool.input_shape)), row_id


def run_kernels(args, model, x, row_id, seed: int, tag: str) -> list[dict[str, Any]]:
    """One alternating round: every baal batch size, then the cached kernel."""
    out = []
    for bs in args.baal_batch_sizes:
        w, c = timed(lambda bs=bs: baal_loop(model, x, args.mc, bs))
        out.append({"path": f"baal_bs{bs}", "phase": tag, "wall_s": w, "cpu_s": c})
        print(f"  [{tag}] baal bs={bs}: {len(x) / w:,.0f} rows/s, {len(x) / c:,.0f} rows/cpu-s",
              flush=True)
    w, c = timed(lambda: cached_kernel(model, x, row_id, args.mc, args.batch_size, seed))
    out.append({"path": "kernel", "phase": tag, "wall_s": w, "cpu_s": c})
    print(f"  [{tag}] kernel: {len(x) / w:,.0f} rows/s, {len(x) / c:,.0f} rows/cpu-s", flush=True)
    return out


def summarise(timings: list[dict[str, Any]], n: int) -> dict[str, dict[str, float]]:
    """Median and best rows/s and rows/CPU-s of each path over its repeats."""
    out = {}
    for path in dict.fromkeys(t["path"] for t in timings):
        ts = [t for t in timings if t["path"] == path]
        out[path] = {
            "repeats": len(ts),
            "rows_per_s_median": statistics.median(n / t["wall_s"] for t in ts),
            "rows_per_s_best": max(n / t["wall_s"] for t in ts),
            "rows_per_cpu_s_median": statistics.median(n / t["cpu_s"] for t in ts),
            "rows_per_cpu_s_best": max(n / t["cpu_s"] for t in ts),
        }
    return out


def markdown(r: dict[str, Any]) -> str:
    s, ray_r = r["summary"], r["ray"]
    # the higher of the two matmul measurements (before / after), per CPU-second
    peak = max(m.get("flops_per_cpu_s", m["flops_per_s"]) for m in (r["matmul"], r["matmul_after"]))
    baal = s[r["baal_best"]]
    rows = [
        (f"baal-style loop ({r['baal_best'].split('_')[1]}, best of "
         f"{', '.join(map(str, r['args']['baal_batch_sizes']))})",
         baal["rows_per_s_median"], baal["rows_per_cpu_s_median"], r["flops"]["baal"]),
        ("rayfal kernel in-process (bs 512)", s["kernel"]["rows_per_s_median"],
         s["kernel"]["rows_per_cpu_s_median"], r["flops"]["cached"]),
        (f"rayfal score path, Ray Data ({ray_r['rows']:,} rows, {ray_r['actors']} actor)",
         ray_r["rows_per_s"], ray_r["rows_per_cpu_s"] or 0.0, r["flops"]["cached"]),
    ]
    lines = ["| path | rows/s (wall) | rows per CPU-s | x baal (wall / CPU) | "
             "GFLOP/row | % of mm peak (wall / CPU) |", "|---|---:|---:|---:|---:|---:|"]
    for name, rps, rpc, fl in rows:
        lines.append(
            f"| {name} | {rps:,.0f} | {rpc:,.0f} | "
            f"{rps / baal['rows_per_s_median']:.1f} / {rpc / baal['rows_per_cpu_s_median']:.1f} |"
            f" {fl / 1e9:.3f} | {100 * rps * fl / peak:.1f} / {100 * rpc * fl / peak:.1f} |"
        )
    lines.append("")
    lines.append(f"matmul peak ({r['matmul']['threads']} thread, {r['matmul']['size']}^2 float32)"
                 f": {peak / 1e9:.1f} GFLOP per CPU-s; FLOPs/row: trunk {r['flops']['trunk'] / 1e6:.2f} M,"
                 f" head x T {r['flops']['head_T'] / 1e6:.2f} M")
    if "rows_per_pipeline_cpu_s" in ray_r:
        lines.append(f"Ray Data rows per CPU-s of all its processes (actor + read tasks + "
                     f"raylet/GCS/agents): {ray_r['rows_per_pipeline_cpu_s']:,.0f}")
    lines.append(f"Ray / in-process kernel: {r['ray_over_kernel_wall']:.2f} wall, "
                 f"{r['ray_over_kernel_cpu']:.2f} per CPU-s; load {r['loadavg_start']} -> "
                 f"{r['loadavg_end']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pool", required=True, help="directory (or glob) of the glyph pool shards")
    p.add_argument("--ray-files", type=int, default=1, help="pool shards scored through Ray")
    p.add_argument("--kernel-rows", type=int, default=4096, help="rows of the in-process loops")
    p.add_argument("--repeats", type=int, default=2,
                   help="alternating in-process rounds before and after the Ray run (each)")
    p.add_argument("--mc", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=512, help="rayfal scoring batch size")
    p.add_argument("--baal-batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                   default=[16, 64], help="baal loop batch sizes (the best is compared)")
    p.add_argument("--threads", type=int, default=1, help="torch threads = CPUs per actor")
    p.add_argument("--num-cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch
    from safetensors.torch import save as save_safetensors

    from rayfal.data.pool import Pool
    from rayfal.models.checkpoint import model_from_spec, model_spec, state_dict_cpu

    load_start = loadavg()
    print(f"load average at start: {load_start}", flush=True)
    torch.set_num_threads(args.threads)
    full = Pool(args.pool)
    pool = Pool(full.files[: args.ray_files])
    spec = model_spec("cnn", pool.input_shape, 2, width=16, hidden=64, dropout=0.5)
    torch.manual_seed(args.seed)
    model = model_from_spec(spec).eval()
    weights = save_safetensors(state_dict_cpu(model))
    x, row_id = load_rows(pool, args.kernel_rows)
    n = len(x)
    seed = args.seed * 100_003  # PoolScorer's generator_seed for round 0

    # the same model gives the same BALD scores through the cached and uncached paths
    from rayfal.acquisition.scores import bald
    from rayfal.models.predict import mc_probs

    kw = dict(mc_samples=args.mc, batch_size=64, generator_seed=seed, row_keys=row_id[:64])
    same = np.allclose(bald(mc_probs(model, x[:64], **kw)),
                       bald(mc_probs(model, x[:64], cache_trunk=False, **kw)), atol=1e-9)

    flops = flops_per_row(model, x[: args.batch_size], args.mc)
    mm = matmul_flops(args.threads)
    torch.set_num_threads(args.threads)
    for bs in args.baal_batch_sizes:  # warm-up
        baal_loop(model, x[:bs], args.mc, bs)
    cached_kernel(model, x[:512], row_id[:512], args.mc, args.batch_size, seed)

    timings = []
    for rep in range(args.repeats):
        timings += run_kernels(args, model, x, row_id, seed, f"before-{rep}")
    print(f"Ray Data: {len(pool.files)} shard(s), {pool.num_rows:,} rows ...", flush=True)
    ray_r = ray_scoring(args, pool, spec, weights)
    print(f"  ray: {ray_r['rows_per_s']:,.0f} rows/s, "
          f"{ray_r['rows_per_cpu_s'] or 0:,.0f} rows/actor-cpu-s", flush=True)
    torch.set_num_threads(args.threads)
    for rep in range(args.repeats):
        timings += run_kernels(args, model, x, row_id, seed, f"after-{rep}")
    mm_after = matmul_flops(args.threads)

    summary = summarise(timings, n)
    baal_best = max((k for k in summary if k.startswith("baal")),
                    key=lambda k: summary[k]["rows_per_cpu_s_median"])
    k = summary["kernel"]
    result = {
        "benchmark": "compare",
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "args": vars(args),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "kernel_rows": n,
        "cached_equals_uncached_bald": bool(same),
        "flops": flops,
        "matmul": mm,
        "matmul_after": mm_after,
        "timings": timings,
        "summary": summary,
        "baal_best": baal_best,
        "ray": ray_r,
        "kernel_over_baal_wall": k["rows_per_s_median"] / summary[baal_best]["rows_per_s_median"],
        "kernel_over_baal_cpu": k["rows_per_cpu_s_median"]
        / summary[baal_best]["rows_per_cpu_s_median"],
        "ray_over_baal_wall": ray_r["rows_per_s"] / summary[baal_best]["rows_per_s_median"],
        "ray_over_baal_cpu": (ray_r["rows_per_cpu_s"] or 0)
        / summary[baal_best]["rows_per_cpu_s_median"],
        "ray_over_kernel_wall": ray_r["rows_per_s"] / k["rows_per_s_median"],
        "ray_over_kernel_cpu": (ray_r["rows_per_cpu_s"] or 0) / k["rows_per_cpu_s_median"],
        "loadavg_end": loadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print()
    print(markdown(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
