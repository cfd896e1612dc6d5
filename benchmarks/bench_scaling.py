"""Benchmark: glyph pool generation rate, and Ray Data scoring vs pool size (wall time, peak RSS).

Steps (one process):

1. ``generate``: write one glyph pool of ``--rows`` rows (50,000-row Parquet shards in
   4,096-row row groups, ``num_workers`` spawn processes) under ``--data-dir``, timing wall
   and CPU seconds (the children's ``getrusage``); cached: a re-run reuses the pool and the
   first run's timing (sidecar JSON);
2. ``score``: for each ``--sizes`` N (a prefix of the pool's shards: every size is a whole
   number of shards) and each ``--kernels`` entry (``STRATEGY:T``, e.g. ``bald:20`` or
   ``entropy:1``), one :func:`rayfal.scoring.per_row.score_pool` round on a fresh local
   Ray, sampling the peak RSS of the driver, the scoring actors and the other Ray workers
   (the Parquet read tasks) and their CPU seconds (``bench_bald_scoring.RssSampler``).
   A time budget per point (``--max-point-s``) can skip the points that would not fit.

Example (the BENCHMARKS.md run)::

    .venv/bin/python benchmarks/bench_scaling.py --rows 4000000 --data-dir /tmp/rayfal-bench \\
        --points entropy:1:100000,entropy:1:1000000,entropy:1:4000000,bald:20:100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_bald_scoring import RssSampler, loadavg, machine_info, maxrss_mib  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "scaling.json"
SHARD_ROWS = 50_000


def generate(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Generate (or reuse) the pool; returns its directory and the generation timing."""
    from rayfal.data.sources.glyphs import MANIFEST, ROW_GROUP_ROWS, generate_glyphs

    name = f"glyphs-sensitive_attribute-{args.rows}-seed{args.seed}-rg{ROW_GROUP_ROWS}"
    out_dir = Path(args.data_dir) / name
    sidecar = Path(args.data_dir) / f"{name}.generation.json"
    cached = (out_dir / MANIFEST).is_file()
    if not cached:
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, load0 = time.process_time(), loadavg()
        t0 = time.perf_counter()
        generate_glyphs(out_dir, scenario="sensitive_attribute", n_pool=args.rows, n_test=100,
                        seed=args.seed, num_workers=args.gen_workers, shard_rows=SHARD_ROWS,
                        progress=args.progress)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        info = {
            "rows": args.rows + 100,
            "seconds": round(wall, 1),
            "rows_per_s": round((args.rows + 100) / wall, 1),
            "num_workers": args.gen_workers,
            "cpu_seconds_workers": round(child_cpu, 1),
            "cpu_seconds_parent": round(time.process_time() - cpu0, 1),
            "rows_per_cpu_s": round((args.rows + 100) / max(child_cpu, 1e-9), 1),
            "worker_peak_rss_mib": round(usage1.ru_maxrss / 1024, 1),
            "bytes_on_disk": sum(f.stat().st_size for f in out_dir.rglob("*.parquet")),
            "row_group_rows": ROW_GROUP_ROWS,
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        sidecar.write_text(json.dumps(info, indent=2) + "\n")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {"seconds": None}
    return out_dir, {**info, "this_run": "cached" if cached else "generated"}


def make_model(seed: int, input_shape: tuple[int, ...], width: int = 16,
               hidden: int = 64) -> tuple[dict, bytes]:
    """The ``jobs/quickstart.yaml`` SmallCNN (width 16, hidden 64, dropout 0.5), seeded; a
    smaller ``width``/``hidden`` makes the kernel cheap so that the pipeline (Parquet reads of
    the image column, Arrow -> torch, the reducer) is what is timed."""
    import torch
    from safetensors.torch import save as save_safetensors

    from rayfal.models.checkpoint import model_from_spec, model_spec, state_dict_cpu

    spec = model_spec("cnn", input_shape, 2, width=width, hidden=hidden, dropout=0.5)
    torch.manual_seed(seed)
    model = model_from_spec(spec).eval()
    return spec, save_safetensors(state_dict_cpu(model))


def score_point(args: argparse.Namespace, pool, strategy: str, mc: int) -> dict[str, Any]:
    """One ``score_pool`` round over ``pool`` on a fresh local Ray; time, RSS and CPU."""
    import ray
    import ray.data

    from rayfal.config import ScoringConfig
    from rayfal.scoring.per_row import score_pool

    spec, weights = make_model(args.seed, pool.input_shape, args.width, args.hidden)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             object_store_memory=args.object_store_memory, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    init_s = time.perf_counter() - t0
    cfg = ScoringConfig(compute="actors", mc_samples=mc, batch_size=args.batch_size)
    try:
        sampler = RssSampler(interval=args.sample_interval)
        sampler._sample_workers()
        cpu_base = dict(sampler.cpu_s)
        sampler.start()
        load_before, driver_cpu0 = loadavg(), time.process_time()
        t0 = time.perf_counter()
        try:
            res = score_pool(pool, strategy=strategy, strategy_params={}, seed=args.seed,
                             round=0, budget=50, labelled=np.array([], np.int64),
                             model=(spec, weights), cfg=cfg, progress=args.progress)
        finally:
            wall = time.perf_counter() - t0
            driver_cpu = time.process_time() - driver_cpu0
            sampler.stop()
    finally:
        ray.shutdown()
    cpu = sampler.cpu_by_kind(cpu_base)
    cpu["driver"] = round(driver_cpu, 1)
    return {
        "strategy": strategy,
        "mc_samples": mc,
        "rows": res.rows_scored,
        "files": len(pool.files),
        "ray_init_s": round(init_s, 1),
        "wall_s": round(wall, 1),
        "rows_per_s": round(res.rows_scored / wall, 1),
        "actors": res.workers,
        "cpu_seconds": cpu,
        "actor_rows_per_cpu_s": round(res.rows_scored / cpu["actor"], 1) if cpu["actor"] else None,
        "driver_peak_rss_mib": round(sampler.driver_peak_kb / 1024, 1),
        "driver_ru_maxrss_mib": round(maxrss_mib(), 1),
        "actor_peak_rss_mib": round(sampler.actor_peak["VmRSS"] / 1024, 1),
        "actor_peak_rss_anon_mib": round(sampler.actor_peak["RssAnon"] / 1024, 1),
        "read_worker_peak_rss_mib": round(sampler.other_workers_peak_kb / 1024, 1),
        "ray_process_titles_peak_mib": {k: round(v / 1024, 1)
                                        for k, v in sorted(sampler.titles.items())},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown(result: dict[str, Any]) -> str:
    g = result["generation"]
    lines = [
        f"Generation: {g.get('rows', 0):,} rows in {g.get('seconds')} s = "
        f"{g.get('rows_per_s', 0):,.0f} rows/s ({g.get('num_workers')} processes; "
        f"{g.get('rows_per_cpu_s', 0):,.0f} rows per CPU-second; load {g.get('loadavg_before')}"
        f" -> {g.get('loadavg_after')})",
        "",
        "| kernel | rows | wall s | rows/s | actor rows/CPU-s | CPU-s actor / read+other / "
        "raylet+gcs / driver | driver peak MiB | actor peak MiB | read worker peak MiB | "
        "load before -> after |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for p in result["points"]:
        c = p["cpu_seconds"]
        lines.append(
            f"| {p['strategy']} T={p['mc_samples']} | {p['rows']:,} | {p['wall_s']:,.1f} | "
            f"{p['rows_per_s']:,.0f} | {p['actor_rows_per_cpu_s'] or 0:,.0f} | "
            f"{c['actor']:.0f} / {c['ray_worker']:.0f} / {c['ray_system']:.0f} / "
            f"{c['driver']:.0f} | {p['driver_peak_rss_mib']:,.0f} | {p['actor_peak_rss_mib']:,.0f} |"
            f" {p['read_worker_peak_rss_mib']:,.0f} | {p['loadavg_before'][0]:.1f} -> "
            f"{p['loadavg_after'][0]:.1f} |"
        )
    for kernel, ratios in result["ratios"].items():
        for r in ratios:
            lines.append(f"\n{kernel}: rows x{r['rows_ratio']:g} -> wall x{r['wall_ratio']:.2f}, "
                         f"actor CPU-s x{r['actor_cpu_ratio']:.2f}")
    return "\n".join(lines)


def ratios(points: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """For each kernel, time ratios of every size vs the smallest size of that kernel."""
    out: dict[str, list[dict[str, float]]] = {}
    for key in sorted({(p["strategy"], p["mc_samples"]) for p in points}):
        pts = sorted((p for p in points if (p["strategy"], p["mc_samples"]) == key),
                     key=lambda p: p["rows"])
        base = pts[0]
        out[f"{key[0]} T={key[1]}"] = [
            {"rows": p["rows"], "rows_ratio": p["rows"] / base["rows"],
             "wall_ratio": round(p["wall_s"] / base["wall_s"], 3),
             "actor_cpu_ratio": round(p["cpu_seconds"]["actor"]
                                      / max(base["cpu_seconds"]["actor"], 1e-9), 3)}
            for p in pts[1:]
        ]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=4_000_000, help="rows of the generated pool")
    p.add_argument("--data-dir", default="/tmp/rayfal-bench")
    p.add_argument("--gen-workers", type=int, default=2, help="generator processes")
    p.add_argument("--points", default="entropy:1:100000,entropy:1:1000000,entropy:1:4000000,"
                   "bald:20:100000", help="STRATEGY:T:ROWS,... (ROWS a multiple of 50,000)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--width", type=int, default=16, help="CNN width (16 = the glyph CNN)")
    p.add_argument("--hidden", type=int, default=64, help="CNN hidden units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--object-store-memory", type=int, default=2_000_000_000)
    p.add_argument("--sample-interval", type=float, default=1.0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from rayfal.data.pool import Pool

    load_start = loadavg()
    print(f"load average at start: {load_start}", flush=True)
    pool_dir, gen = generate(args)
    print(f"pool {pool_dir}: {gen}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "scaling",
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "args": vars(args),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "generation": gen,
        "points": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.generate_only:
        full = Pool(pool_dir / "pool")
        for spec in args.points.split(","):
            strategy, mc, rows = spec.split(":")
            n_files = int(rows) // SHARD_ROWS
            if n_files * SHARD_ROWS != int(rows) or n_files > len(full.files):
                raise SystemExit(f"--points {spec}: rows must be a multiple of {SHARD_ROWS} "
                                 f"and at most {len(full.files) * SHARD_ROWS}")
            print(f"scoring {spec} ({n_files} shards) ...", flush=True)
            point = score_point(args, Pool(full.files[:n_files]), strategy, int(mc))
            print(f"  {point['rows']:,} rows in {point['wall_s']} s ({point['rows_per_s']:,} "
                  f"rows/s); RSS driver {point['driver_peak_rss_mib']} MiB, actor "
                  f"{point['actor_peak_rss_mib']} MiB, read {point['read_worker_peak_rss_mib']}"
                  " MiB", flush=True)
            result["points"].append(point)
            result["ratios"] = ratios(result["points"])
            out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive
    result["ratios"] = ratios(result["points"])
    result["loadavg_end"] = loadavg()
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print()
    print(markdown(result))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
