"""Benchmark: PANDA meta-training speed and test-time selection (one forward pass).

1. Meta-steps per second of :func:`rayfal.acquisition.panda.meta.meta_train` (Algorithm 1:
   forward step + up to ``--prox-steps`` proximal iterations) on synthetic standardised data
   of Adult's width (105 features) for each ``--configs`` entry ``POOL:VAL:BUDGET``; the first
   ``--warmup`` steps are not timed. ``rho`` is 0 by default, so every proximal step runs all
   its iterations (the worst case); ``--rho 1`` measures the forward step alone.
2. :func:`rayfal.acquisition.panda.policy.select` over a ``--select-rows`` pool (one forward pass of
   the Transformer + top-B), median of ``--repeats``, with peak RSS.

Prints a Markdown table and writes JSON to ``--out``. Example::

    .venv/bin/python benchmarks/bench_panda.py --configs 2000:1000:400 500:500:100 \\
        --steps 6 --select-rows 10000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rayfal.acquisition.panda.meta import InnerConfig, MetaData, meta_train
from rayfal.acquisition.panda.policy import PandaPolicy, select


def _data(n: int, d: int, seed: int) -> MetaData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    g = rng.integers(0, 2, n)
    y = ((x[:, 0] + 0.8 * g + rng.normal(0, 0.5, n)) > 0.7).astype(np.int64)
    return MetaData.from_arrays(x, y, g)


def _policy(d: int, args) -> PandaPolicy:
    torch.manual_seed(0)
    return PandaPolicy(d, d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
                       dim_feedforward=2 * args.d_model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["2000:1000:400", "500:500:100"])
    p.add_argument("--features", type=int, default=105)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prox-steps", type=int, default=10)
    p.add_argument("--rho", type=float, default=0.0)
    p.add_argument("--inner-mode", default="batch", choices=["batch", "sequential"])
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--select-rows", type=int, default=10_000)
    p.add_argument("--select-budget", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/panda.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d = args.features
    rows = []
    for cfg in args.configs:
        pool, val, budget = (int(v) for v in cfg.split(":"))
        data = _data(max(4 * (pool + val), 8000), d, 0)
        policy = _policy(d, args)
        times: list[float] = []
        last = [time.perf_counter()]

        def tick(record, times=times, last=last):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        hist = meta_train(policy, data, budget=budget, steps=args.steps, pool_size=pool,
                          val_size=val, rho=args.rho, prox_steps=args.prox_steps,
                          inner=InnerConfig(steps=5, lr=1.0, mode=args.inner_mode),
                          progress=False, on_step=tick)
        timed = times[args.warmup:]
        prox = statistics.mean(h["prox_steps"] for h in hist)
        rows.append({"pool": pool, "val": val, "budget": budget,
                     "seconds_per_step": statistics.median(timed),
                     "steps_per_second": 1.0 / statistics.median(timed),
                     "mean_prox_iterations": prox})
    policy = _policy(d, args)
    x = np.random.default_rng(1).normal(size=(args.select_rows, d)).astype(np.float32)
    sel = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        idx = select(policy, x, args.select_budget, seed=0)
        sel.append(time.perf_counter() - t0)
    assert len(set(idx.tolist())) == args.select_budget
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"meta_train": rows,
              "select": {"rows": args.select_rows, "budget": args.select_budget,
                         "seconds_median": statistics.median(sel), "peak_rss_mb": rss_mb},
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "torch": torch.__version__, "machine": platform.machine(),
              "load_avg": list(__import__("os").getloadavg())}
    print("| pool | val | B | s / meta-step | meta-steps/s | prox iters/step |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pool']} | {r['val']} | {r['budget']} | {r['seconds_per_step']:.3f} | "
              f"{r['steps_per_second']:.2f} | {r['mean_prox_iterations']:.1f} |")
    s = result["select"]
    print(f"\nselect: {s['rows']} rows, B={s['budget']}: {s['seconds_median']:.3f} s "
          f"(median of {args.repeats}), peak RSS {s['peak_rss_mb']:.0f} MB; "
          f"load avg {result['load_avg'][0]:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
