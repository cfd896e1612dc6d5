"""Benchmark, side by side in one run: rayfal's BALD kernel vs a real baal 2.1 ``ModelWrapper``
vs rayfal's Ray Data path, with the one-thread matmul roofline measured in the same run; and
FairAL's fast (batched Newton) refits vs sklearn's ``LogisticRegression(liblinear, C=1)`` loop.

Contenders (same seeded glyph CNN, same pool rows, same torch thread count, ``--threads``):

* ``baal``: baal 2.1's ``ModelWrapper`` (``TrainingArgs(replicate_in_memory=True)``) on the
  model after ``baal.bayesian.dropout.patch_module`` (its own MC-dropout layers),
  ``predict_on_batch(x, iterations=T)`` then baal's ``BALD().compute_score``;
* ``kernel``: :func:`rayfal.models.predict.mc_probs` (row-keyed masks, the fast kernel) +
  :func:`rayfal.acquisition.scores.bald`, exactly as a scoring actor calls them;
* ``kernel_before``: the straightforward implementation the kernel replaced (the frozen copy in
  ``tests/test_kernel_identity.py``), for the speed-up; its scores are checked equal;
* ``ray``: :func:`rayfal.scoring.per_row.score_pool` (Ray Data Parquet read, ``PoolScorer``
  actors, driver top-K) on a fresh local Ray with 1 and with 2 scoring actors, rows per
  actor-CPU-second from ``/proc``.

The in-process contenders alternate (order rotated each repeat) and are timed by CPU time of
this process (``time.process_time``) and wall time; the machine is shared, so CPU time is the
figure to compare. Roofline: FLOPs per row (``torch.utils.flop_counter``: trunk once + head T
times for rayfal, the whole model T times for baal) x rows per CPU-s over the best float32
``torch.mm`` GFLOP per CPU-s at the same thread count, measured before and after.

baal is not a rayfal dependency: run this script from a separate environment that has it
(BENCHMARKS.md shows how ``.venv-bench`` was made)::

    .venv-bench/bin/python benchmarks/bench_kernel_vs_baal.py --data-dir /tmp/rayfal-bench

``--no-ray`` / ``--no-fairal`` skip those parts; without baal importable the ``baal`` row is
left out (and said so).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_bald_scoring import loadavg, machine_info  # noqa: E402
from bench_compare import load_rows, matmul_flops, ray_scoring, timed  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "kernel_vs_baal.json"


def cpu_facts() -> dict[str, Any]:
    """CPU model, family/model numbers and the AVX-512 flag, from ``/proc/cpuinfo``."""
    info: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key in ("model name", "cpu family", "model", "vendor_id") and key not in info:
            info[key] = val
        if key == "flags" and "flags" not in info:
            flags = set(val.split())
            info["flags"] = sorted(f for f in flags if f.startswith(("avx512f", "avx2", "fma")))
    fam, mod = int(info.get("cpu family", 0)), int(info.get("model", 0))
    if info.get("vendor_id") == "AuthenticAMD" and fam == 25:  # family 19h
        info["microarchitecture"] = "Zen 4" if mod >= 0x10 else "Zen 3"
    return info


# ----------------------------------------------------------------------------- contenders


def baal_contender(model, T: int, batch_size: int):
    """A baal 2.1 ``ModelWrapper`` around a copy of ``model`` with baal's own MC dropout."""
    from baal.active.heuristics import BALD
    from baal.bayesian.dropout import patch_module
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    net = patch_module(copy.deepcopy(model), inplace=True).eval()
    wrapper = ModelWrapper(net, TrainingArgs(batch_size=batch_size, use_cuda=False,
                                             replicate_in_memory=True, workers=0))
    heuristic = BALD()

    def run(x, row_id) -> np.ndarray:
        out = []
        for lo in range(0, len(x), batch_size):
            logits = wrapper.predict_on_batch(x[lo : lo + batch_size], iterations=T)
            out.append(heuristic.compute_score(logits.numpy()))
        return np.concatenate(out)

    return run


def kernel_contender(model, T: int, batch_size: int, seed: int, before: bool = False):
    """rayfal's kernel (or the implementation it replaced) + BALD, per scoring batch."""
    from rayfal.acquisition.scores import bald
    from rayfal.models.predict import mc_probs

    if before:
        from test_kernel_identity import _reference_mc_probs as probs_fn
    else:
        probs_fn = mc_probs

    def run(x, row_id) -> np.ndarray:
        out = []
        for lo in range(0, len(x), batch_size):
            out.append(bald(probs_fn(model, x[lo : lo + batch_size], mc_samples=T,
                                     batch_size=batch_size, generator_seed=seed,
                                     row_keys=row_id[lo : lo + batch_size])))
        return np.concatenate(out)

    return run


def flops_per_row(model, x, T: int) -> dict[str, float]:
    """FLOPs per row (``FlopCounterMode``): rayfal's trunk once + head on T copies, and baal's
    whole model on T copies."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n = len(x)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as trunk:
            z = model.embed(x)
        with FlopCounterMode(display=False) as head:
            model.head(z.repeat(T, 1))
        with FlopCounterMode(display=False) as full:
            model(x.repeat(T, *([1] * (x.dim() - 1))))
    return {"trunk": trunk.get_total_flops() / n, "head_T": head.get_total_flops() / n,
            "cached": (trunk.get_total_flops() + head.get_total_flops()) / n,
            "baal": full.get_total_flops() / n}


def in_process(model, x, row_id, args, seed: int, tag: str) -> dict[str, Any]:
    """Alternating CPU-timed repeats of every in-process contender on the same rows."""
    import torch

    n = len(x)
    contenders = {"kernel": kernel_contender(model, args.mc, args.batch_size, seed),
                  "kernel_before": kernel_contender(model, args.mc, args.batch_size, seed,
                                                    before=True)}
    try:
        contenders["baal"] = baal_contender(model, args.mc, args.baal_batch_size)
    except ImportError as exc:
        print(f"baal not importable here ({exc}); run from .venv-bench for the baal row")
    k = contenders["kernel"](x[:512], row_id[:512])
    identical = bool(np.array_equal(k, contenders["kernel_before"](x[:512], row_id[:512])))
    flops = flops_per_row(model, x[: args.batch_size], args.mc)
    torch.set_num_threads(args.threads)
    for f in contenders.values():  # warm-up
        f(x[:128], row_id[:128])
    timings: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    names = list(contenders)
    for rep in range(args.repeats):
        for c in names[rep % len(names):] + names[: rep % len(names)]:
            w, cs = timed(lambda c=c: contenders[c](x, row_id))
            timings[c].append({"wall_s": w, "cpu_s": cs})
            print(f"  [{tag} {rep}] {c}: {n / w:,.0f} rows/s, {n / cs:,.0f} rows/CPU-s",
                  flush=True)
    return {"rows": n, "kernel_equals_before": identical, "flops": flops, "timings": timings,
            "summary": {c: rates(ts, n) for c, ts in timings.items()}}


def add_roofline(part: dict[str, Any], peak: float) -> None:
    for c, s in part["summary"].items():
        fl = part["flops"]["baal"] if c == "baal" else part["flops"]["cached"]
        s["flops_per_row"] = fl
        s["pct_of_mm_peak_cpu"] = 100 * s["rows_per_cpu_s_median"] * fl / peak
        if "baal" in part["summary"]:
            s["over_baal_cpu"] = (s["rows_per_cpu_s_median"]
                                  / part["summary"]["baal"]["rows_per_cpu_s_median"])


def rates(ts: list[dict[str, float]], n: int) -> dict[str, float]:
    return {"repeats": len(ts),
            "rows_per_s_median": statistics.median(n / t["wall_s"] for t in ts),
            "rows_per_cpu_s_median": statistics.median(n / t["cpu_s"] for t in ts),
            "rows_per_cpu_s_best": max(n / t["cpu_s"] for t in ts)}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="/tmp/rayfal-bench",
                   help="where the glyph pool is generated once (then reused)")
    p.add_argument("--pool-rows", type=int, default=100_000, help="rows of the generated pool")
    p.add_argument("--ray-rows", type=int, default=100_000,
                   help="rows scored through Ray (whole shards, at least one)")
    p.add_argument("--kernel-rows", type=int, default=2048, help="rows of the in-process runs")
    p.add_argument("--repeats", type=int, default=3, help="alternating in-process repeats")
    p.add_argument("--mc", type=int, default=20)
    p.add_argument("--width", type=int, default=16, help="CNN width (quickstart/synbols: 16)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=512, help="rayfal scoring batch size")
    p.add_argument("--baal-batch-size", type=int, default=64,
                   help="baal ModelWrapper batch (T x this many rows per forward)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--actors", default="1,2", help="scoring actor counts for the Ray path")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--no-fairal", action="store_true")
    p.add_argument("--fairal-candidates", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch
    from safetensors.torch import save as save_safetensors

    from rayfal.data.pool import Pool
    from rayfal.data.sources.glyphs import generate_glyphs
    from rayfal.models.checkpoint import model_from_spec, model_spec, state_dict_cpu

    load_start = loadavg()
    cpu = cpu_facts()
    print(f"CPU {cpu.get('model name')} ({cpu.get('microarchitecture', '?')}, "
          f"{', '.join(cpu.get('flags', []))}) x{os.cpu_count()}; load {load_start}", flush=True)
    torch.set_num_threads(args.threads)

    data = Path(args.data_dir) / f"glyphs-sensitive_attribute-{args.pool_rows}-seed{args.seed}"
    t0 = time.perf_counter()
    generate_glyphs(data, scenario="sensitive_attribute", n_pool=args.pool_rows, n_test=100,
                    seed=args.seed, num_workers=1, shard_rows=50_000, progress=False)
    print(f"pool {data} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    full = Pool(str(data / "pool"))
    spec = model_spec("cnn", full.input_shape, 2, width=args.width, hidden=args.hidden,
                      dropout=0.5)
    torch.manual_seed(args.seed)
    model = model_from_spec(spec).eval()
    weights = save_safetensors(state_dict_cpu(model))
    x, row_id = load_rows(full, args.kernel_rows)
    n, seed = len(x), args.seed * 100_003  # PoolScorer's generator seed for round 0

    try:
        from importlib.metadata import version

        baal_version = version("baal")
    except Exception:  # noqa: BLE001 (not installed here)
        baal_version = None
    mm_before = matmul_flops(args.threads)
    torch.set_num_threads(args.threads)
    cnn = in_process(model, x, row_id, args, seed, "cnn")
    # the MLP (tabular; Adult's 105 standardised features, hidden 128, as jobs/adult*.yaml)
    torch.manual_seed(args.seed)
    mlp = model_from_spec(model_spec("mlp", (105,), 2, hidden=128, dropout=0.5)).eval()
    x_mlp = torch.randn(args.kernel_rows * 4, 105, generator=torch.Generator().manual_seed(1))
    mlp_part = in_process(mlp, x_mlp, np.arange(len(x_mlp), dtype=np.int64), args, seed, "mlp")
    mm_after = matmul_flops(args.threads)
    peak = max(mm_before["flops_per_cpu_s"], mm_after["flops_per_cpu_s"])
    add_roofline(cnn, peak)
    add_roofline(mlp_part, peak)
    summary = cnn["summary"]

    ray_runs = []
    if not args.no_ray:
        shards, rows = [], 0
        for f in full.files:
            if rows >= args.ray_rows:
                break
            shards.append(f)
            rows += Pool(f).num_rows
        pool = Pool(shards)
        for actors in (int(a) for a in args.actors.split(",")):
            ns = argparse.Namespace(num_cpus=actors * args.threads + 1, threads=args.threads,
                                    mc=args.mc, batch_size=args.batch_size, seed=args.seed)
            r = ray_scoring(ns, pool, spec, weights)
            r["over_kernel_per_cpu_s"] = ((r["rows_per_cpu_s"] or 0)
                                          / summary["kernel"]["rows_per_cpu_s_median"])
            ray_runs.append(r)
            print(f"  ray, {r['actors']} actor(s): {r['rows_per_s']:,.0f} rows/s, "
                  f"{r['rows_per_cpu_s'] or 0:,.0f} rows/actor-CPU-s "
                  f"({r['over_kernel_per_cpu_s']:.2f} of the kernel), driver peak "
                  f"{r['driver_peak_rss_mib']} MiB, read worker peak "
                  f"{r['read_worker_peak_rss_mib']} MiB", flush=True)
            torch.set_num_threads(args.threads)

    fairal = None
    if not args.no_fairal:
        from bench_fairal import main_faithful

        fairal = main_faithful(["--engines", "fast,sklearn", "--repeats", "3",
                                "--candidates", str(args.fairal_candidates),
                                "--threads", str(args.threads),
                                "--out", str(Path(args.out).with_name("kernel_vs_baal_fairal.json"))])

    result = {
        "benchmark": "kernel_vs_baal",
        "command": " ".join([Path(sys.executable).parent.parent.name + "/bin/python",
                             os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "args": vars(args), "cpu": cpu, "machine": machine_info(), "baal": baal_version,
        "loadavg_start": load_start, "kernel_rows": n,
        "kernel_equals_before": cnn["kernel_equals_before"], "flops": cnn["flops"],
        "matmul_before": mm_before, "matmul_after": mm_after, "mm_peak_flops_per_cpu_s": peak,
        "timings": cnn["timings"], "summary": summary, "mlp": mlp_part,
        "ray": ray_runs, "fairal": fairal, "loadavg_end": loadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print()
    print(markdown(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result


def markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    base = s.get("baal", {}).get("rows_per_cpu_s_median")
    lines = ["| contender | rows/s (wall) | rows per CPU-s | x baal (CPU) | MFLOP/row | "
             "% of 1-thread mm peak (CPU) |", "|---|---:|---:|---:|---:|---:|"]
    label = {"baal": f"baal {r['baal']} ModelWrapper (replicate_in_memory, bs "
                     f"{r['args']['baal_batch_size']})",
             "kernel": f"rayfal kernel (bs {r['args']['batch_size']})",
             "kernel_before": "rayfal kernel before this rewrite"}
    for c in ("baal", "kernel_before", "kernel"):
        if c not in s:
            continue
        v = s[c]
        ratio = f"{v['rows_per_cpu_s_median'] / base:.1f}" if base else "—"
        lines.append(f"| {label[c]} | {v['rows_per_s_median']:,.0f} | "
                     f"{v['rows_per_cpu_s_median']:,.0f} | {ratio} | "
                     f"{v['flops_per_row'] / 1e6:.2f} | {v['pct_of_mm_peak_cpu']:.1f} |")
    for ray_r in r["ray"]:
        ratio = f"{(ray_r['rows_per_cpu_s'] or 0) / base:.1f}" if base else "—"
        pct = 100 * (ray_r["rows_per_cpu_s"] or 0) * r["flops"]["cached"] \
            / r["mm_peak_flops_per_cpu_s"]
        lines.append(f"| rayfal Ray Data path, {ray_r['actors']} actor(s), {ray_r['rows']:,} "
                     f"rows | {ray_r['rows_per_s']:,.0f} | {ray_r['rows_per_cpu_s'] or 0:,.0f} "
                     f"| {ratio} | {r['flops']['cached'] / 1e6:.2f} | {pct:.1f} |")
    m = r["mlp"]["summary"]
    lines.append("")
    lines.append("MLP (105 features, hidden 128, T = 20), same run:")
    lines.append("")
    lines.append("| contender | rows per CPU-s | x baal (CPU) | MFLOP/row | % of mm peak (CPU) |")
    lines.append("|---|---:|---:|---:|---:|")
    for c in ("baal", "kernel_before", "kernel"):
        if c in m:
            v = m[c]
            lines.append(f"| {label[c]} | {v['rows_per_cpu_s_median']:,.0f} | "
                         f"{v.get('over_baal_cpu', float('nan')):.1f} | "
                         f"{v['flops_per_row'] / 1e6:.3f} | {v['pct_of_mm_peak_cpu']:.1f} |")
    lines.append("")
    lines.append(f"1-thread float32 mm peak: {r['mm_peak_flops_per_cpu_s'] / 1e9:.1f} GFLOP per "
                 f"CPU-s; kernel scores equal the previous implementation's bit for bit: "
                 f"{r['kernel_equals_before']}; load {r['loadavg_start']} -> {r['loadavg_end']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
