"""Micro-benchmark: FairAL expected-unfairness scoring, batched (fast) vs plain loop (reference).

Same pool and settings for both: ``D`` features, ``|L|`` labelled rows, a fairness set of
``|F|`` rows in 2 groups, ``K`` labels, ``steps`` gradient steps per refit, demographic parity.
The reference (:func:`rayfal.acquisition.fairal.fairal_reference`) refits one (candidate,
label) pair at a time and measures unfairness with :mod:`rayfal.fairness.metrics`; the fast path
(:func:`~rayfal.acquisition.fairal.fairal_fast`) runs all pairs of a chunk as one tensor
program. Candidates/second = candidates / wall time, best of ``--repeats`` runs. The reference
is timed on ``--ref-candidates`` candidates (its cost is linear in the number of candidates),
and its E values are compared with the fast path's on those candidates.

Example::

    .venv/bin/python benchmarks/bench_fairal.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "fairal.json"


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, default=32)
    ap.add_argument("--labelled", type=int, default=200)
    ap.add_argument("--fair", type=int, default=500)
    ap.add_argument("--labels", type=int, default=2)
    ap.add_argument("--head", choices=["auto", "softmax"], default="auto",
                    help="auto: sigmoid head for 2 labels; softmax: K output columns")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--candidates", default="256,1024,4096")
    ap.add_argument("--methods", default="gd,newton",
                    help="gd: --steps gradient steps per refit (the main setting); newton: one "
                         "Newton step (sigmoid head; Sherman-Morrison on the fast path)")
    ap.add_argument("--newton-candidates", default="4096,65536")
    ap.add_argument("--ref-candidates", type=int, default=64)
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch

    from rayfal.acquisition.fairal import (
        RefitConfig,
        fairal_fast,
        fairal_reference,
        fit_logistic_head,
    )

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    d, n, nf, k = args.dims, args.labelled, args.fair, args.labels
    w_true = rng.normal(size=(d, k))
    xl = rng.normal(size=(n, d))
    yl = np.argmax(xl @ w_true + rng.gumbel(size=(n, k)), axis=1)
    gf = rng.integers(0, 2, nf)
    xf = rng.normal(size=(nf, d)) + 0.5 * gf[:, None] * (w_true[:, -1] / np.linalg.norm(w_true[:, -1]))
    sizes = [int(s) for s in args.candidates.split(",")]
    binary = (k == 2) if args.head == "auto" else False
    head = fit_logistic_head(xl, yl, k, binary=binary, steps=200, lr=0.5)
    load_before = loadavg()
    newton_sizes = [int(s) for s in args.newton_candidates.split(",")]
    x_cand = rng.normal(size=(max(sizes + newton_sizes + [args.ref_candidates]), d))

    rows = []
    for method in args.methods.split(","):
        if method == "newton" and not binary:
            continue
        cfg = (RefitConfig(steps=args.steps, lr=0.5, l2=1e-3) if method == "gd"
               else RefitConfig(steps=1, lr=1.0, l2=1e-3, method="newton"))
        rows += _bench(method, cfg, sizes if method == "gd" else newton_sizes, args, head,
                       xl, yl, x_cand, xf, gf, fairal_fast, fairal_reference)
    result = {
        "benchmark": "fairal",
        "settings": {"D": d, "labelled": n, "fairness_set": nf, "labels": k,
                     "head": "sigmoid" if binary else "softmax", "gd_refit_steps": args.steps,
                     "newton_refit_steps": 1,
                     "measure": "dp", "reference_candidates": args.ref_candidates,
                     "repeats": args.repeats, "torch_threads": args.threads, "seed": args.seed},
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_before": load_before,
                    "loadavg_after": loadavg()},
        "rows": rows,
    }
    print(f"FairAL scoring, D={d}, |L|={n}, |F|={nf}, K={k} "
          f"({result['settings']['head']}), {args.threads} thread(s), "
          f"best of {args.repeats}; load avg {load_before} -> {result['machine']['loadavg_after']}")
    print("| refit | dtype | candidates | reference cand/s | fast cand/s | speedup | max abs dE "
          "| same rank |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['refit']} | {r['dtype']} | {r['candidates']} | "
              f"{r['reference_cand_per_s']} | {r['fast_cand_per_s']} | {r['speedup']}x | "
              f"{r['max_abs_dE_vs_reference']:.1e} | {r['same_ranking_as_reference']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


def _bench(method, cfg, sizes, args, head, xl, yl, x_cand, xf, gf, fairal_fast,
           fairal_reference) -> list[dict[str, Any]]:
    import torch

    label = f"gd x{cfg.steps}" if method == "gd" else "newton x1"
    rows = []
    for dt_name in args.dtypes.split(","):
        dtype = getattr(torch, dt_name)
        xr = x_cand[: args.ref_candidates]
        ref_out = {}

        def run_ref(xr=xr, dtype=dtype, ref_out=ref_out):
            ref_out["s"] = fairal_reference(head, xl, yl, xr, xf, gf, refit=cfg, dtype=dtype)

        t_ref = best_time(run_ref, args.repeats)
        fast_small = fairal_fast(head, xl, yl, xr, xf, gf, refit=cfg, dtype=dtype)
        max_de = float(np.abs(fast_small.expected_unfairness
                              - ref_out["s"].expected_unfairness).max())
        same_order = bool(np.array_equal(np.argsort(-fast_small.score, kind="stable"),
                                          np.argsort(-ref_out["s"].score, kind="stable")))
        ref_cps = args.ref_candidates / t_ref
        for size in sizes:
            xc = x_cand[:size]
            t_fast = best_time(lambda xc=xc, dtype=dtype: fairal_fast(
                head, xl, yl, xc, xf, gf, refit=cfg, dtype=dtype), args.repeats)
            fast_cps = size / t_fast
            rows.append({
                "refit": label, "dtype": dt_name, "candidates": size,
                "reference_cand_per_s": round(ref_cps, 1),
                "fast_cand_per_s": round(fast_cps, 1),
                "speedup": round(fast_cps / ref_cps, 1),
                "max_abs_dE_vs_reference": max_de,
                "same_ranking_as_reference": same_order,
            })
    return rows


if __name__ == "__main__":
    main()
