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

Command ``faithful`` (:func:`main_faithful`): FairAL as its authors ran it
(``protocol: faithful``, ``RefitConfig(method="exact")``: every refit liblinear's C = 1 logistic
regression from scratch to its tolerance) on a real Adult sample, timing *on the same
candidates, interleaved in one run* (engine order rotated every repeat, nothing extrapolated):

* ``fast``: :func:`~rayfal.acquisition.fairal.fairal_fast` (batched Newton-PCG refits);
* ``reference``: :func:`~rayfal.acquisition.fairal.fairal_reference` (the project's own loop,
  one Newton refit from zero at a time, in torch);
* ``sklearn``: :func:`~rayfal.acquisition.fairal.fairal_sklearn` (the authors' code path:
  ``LogisticRegression(solver="liblinear", C=1)`` fitted per candidate and label);
* ``fast_gd`` (context, a different refit): the default ``rayfal`` protocol's fast path (20
  warm-started gradient steps of a softmax head), on the same rows.

It prints the ratios, the Spearman correlation of each engine's expected unfairness with
sklearn's, and the machine (CPU model from /proc/cpuinfo, load average)::

    .venv/bin/python benchmarks/bench_fairal.py faithful

Command ``ray`` (:func:`main_ray`): the per-candidate refits as the Ray Data job
(:func:`rayfal.scoring.fairal_refits.fairal_fast_ray`) over growing candidate counts on a local
Ray, with the driver's anonymous RSS (its heap, sampled every 0.1 s) over its level before each
call; the smallest size is checked equal to the in-process :func:`fairal_fast`::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fairal.py ray --candidates 1000,10000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "fairal.json"
FAITHFUL_OUT = REPO / "benchmarks" / "results" / "fairal_faithful.json"
ADULT_DIR = REPO / ".." / "shared" / "data" / "adult"


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["faithful"]:
        return main_faithful(argv[1:])
    if argv[:1] == ["ray"]:
        return main_ray(argv[1:])
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


def _adult_sample(n_labelled: int, n_cand: int, n_fair: int, seed: int):
    """Rayfal's Adult encoding and split (standardised, ``sex`` one-hot kept as features);
    ``L`` = ``n_labelled`` rows of the meta split, half per class (the authors start from 3
    per class, FAL/prep.py line 41); candidates and the fairness set (U) from the pool split;
    the sensitive columns dropped as ``drop_features: auto`` does."""
    from rayfal.acquisition.fairal import sensitive_columns
    from rayfal.data.sources.adult import AdultData, encode, load_raw, read_categories

    rows, _ = load_raw(ADULT_DIR)
    x, y, g, names = encode(rows, read_categories(ADULT_DIR / "adult.names"))
    data = AdultData(x, y, g, names, seed=0)
    x = data.x.astype(np.float64)
    rng = np.random.default_rng(seed)
    meta, pool = data.idx["meta"], data.idx["pool"]
    half = n_labelled // 2
    lab = np.r_[rng.choice(meta[y[meta] == 0], n_labelled - half, replace=False),
                rng.choice(meta[y[meta] == 1], half, replace=False)]
    cand = np.sort(rng.choice(pool, n_cand, replace=False))
    fair = np.sort(rng.choice(pool, min(n_fair, len(pool)), replace=False))
    seen = np.r_[lab, cand, fair]
    drop = sensitive_columns(x[seen], g[seen])
    keep = np.setdiff1d(np.arange(x.shape[1]), drop)
    return (x[lab][:, keep], y[lab], x[cand][:, keep], x[fair][:, keep], g[fair],
            [names[i] for i in drop])


def main_faithful(argv: list[str] | None = None) -> dict[str, Any]:
    """``bench_fairal.py faithful``: see the module docstring."""
    ap = argparse.ArgumentParser(prog="bench_fairal.py faithful",
                                 description="FairAL faithful protocol: fast vs the project's "
                                             "loop vs sklearn liblinear, interleaved")
    ap.add_argument("--labelled", default="6,206",
                    help="|L| settings (the authors' first and last: 6, then b = 200 labels)")
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--fair", type=int, default=10000, help="fairness-set (U) rows")
    ap.add_argument("--engines", default="fast,reference,sklearn,fast_gd")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=FAITHFUL_OUT)
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr
    from threadpoolctl import threadpool_limits

    from rayfal.acquisition.fairal import (
        FairALParams,
        RefitConfig,
        fairal_fast,
        fairal_reference,
        fairal_sklearn,
        fit_exact,
        fit_logistic_head,
    )

    torch.set_num_threads(args.threads)
    params = FairALParams(protocol="faithful")
    cfg = params.refit_config()
    gd = RefitConfig()  # the rayfal protocol's default refit (20 warm-started GD steps)
    engines = args.engines.split(",")
    load_before = loadavg()
    rows = []
    with threadpool_limits(limits=args.threads):
        for n_l in (int(v) for v in args.labelled.split(",")):
            xl, yl, xc, xf, gf, dropped = _adult_sample(n_l, args.candidates, args.fair,
                                                        args.seed)
            head = fit_exact(xl, yl, cfg)
            soft = fit_logistic_head(xl, yl, 2, binary=False, steps=300, lr=0.5)
            data = (xl, yl, xc, xf, gf)
            calls = {
                "fast": partial(fairal_fast, head, *data, measure=params.measure, refit=cfg),
                "reference": partial(fairal_reference, head, *data, measure=params.measure,
                                     refit=cfg),
                "sklearn": partial(fairal_sklearn, head, *data, measure=params.measure,
                                   refit=cfg),
                "fast_gd": partial(fairal_fast, soft, *data, measure=params.measure, refit=gd),
            }
            times: dict[str, list[float]] = {e: [] for e in engines}
            out: dict[str, Any] = {}
            for rep in range(args.repeats):
                order = engines[rep % len(engines):] + engines[: rep % len(engines)]
                for e in order:
                    t0 = time.perf_counter()
                    out[e] = calls[e]()
                    times[e].append(time.perf_counter() - t0)
            ref_e = out["sklearn"].expected_unfairness if "sklearn" in out else None
            row: dict[str, Any] = {"labelled": n_l, "candidates": args.candidates,
                                   "fairness_rows": len(xf), "features": xl.shape[1],
                                   "dropped": dropped, "engines": {}}
            for e in engines:
                med = float(np.median(times[e]))
                info = {"median_s": round(med, 4), "best_s": round(min(times[e]), 4),
                        "times_s": [round(t, 4) for t in times[e]],
                        "cand_per_s": round(args.candidates / med, 1)}
                if ref_e is not None:
                    ee = out[e].expected_unfairness
                    info["spearman_vs_sklearn"] = round(float(spearmanr(ee, ref_e).statistic), 5)
                    info["same_first_pick"] = bool(np.argmin(ee) == np.argmin(ref_e))
                row["engines"][e] = info
            for num in ("reference", "sklearn"):
                for den in ("fast", "fast_gd"):
                    if num in times and den in times:
                        row[f"{num}/{den}"] = round(float(np.median(times[num])
                                                          / np.median(times[den])), 1)
            rows.append(row)
    result = {
        "benchmark": "fairal_faithful",
        "settings": {"protocol": "faithful", "C": cfg.C, "tol": cfg.tol,
                     "penalize_bias": cfg.penalize_bias, "measure": params.measure,
                     "repeats": args.repeats, "threads": args.threads, "seed": args.seed,
                     "timing": "median of interleaved repeats (engine order rotated)"},
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": loadavg()},
        "rows": rows,
    }
    print(f"FairAL faithful protocol on Adult (C={cfg.C}, tol={cfg.tol}, measure "
          f"{params.measure}), {args.threads} thread(s), median of {args.repeats} interleaved "
          f"repeats; CPU {result['machine']['cpu']} x{os.cpu_count()}; load avg {load_before} "
          f"-> {result['machine']['loadavg_after']}")
    print("| |L| | cand. | |F| | engine | median s | cand/s | Spearman vs sklearn | same 1st |")
    print("|---:|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        for e, info in r["engines"].items():
            print(f"| {r['labelled']} | {r['candidates']} | {r['fairness_rows']} | {e} | "
                  f"{info['median_s']} | {info['cand_per_s']} | "
                  f"{info.get('spearman_vs_sklearn', '')} | {info.get('same_first_pick', '')} |")
        ratios = {k: v for k, v in r.items() if "/" in k}
        print(f"|L| = {r['labelled']}: speed-ups {ratios}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result



RAY_OUT = REPO / "benchmarks" / "results" / "fairal_ray.json"


def main_ray(argv: list[str] | None = None) -> dict[str, Any]:
    """``ray`` command (module docstring): time and driver memory of ``fairal_fast_ray``."""
    ap = argparse.ArgumentParser(description="FairAL refits as a Ray Data job")
    ap.add_argument("--candidates", default="1000,10000,100000")
    ap.add_argument("--dims", type=int, default=16)
    ap.add_argument("--labelled", type=int, default=100)
    ap.add_argument("--fair", type=int, default=500)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RAY_OUT)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import ray
    import ray.data
    from bench_pool_memory import PeakSampler, status_kib

    from rayfal.acquisition.fairal import RefitConfig, fairal_fast, fit_logistic_head
    from rayfal.config import ScoringConfig
    from rayfal.scoring.fairal_refits import ray_refit_scorer

    rng = np.random.default_rng(args.seed)
    d = args.dims
    xl = rng.normal(size=(args.labelled, d))
    yl = (xl[:, 0] + 0.5 * rng.normal(size=args.labelled) > 0).astype(int)
    xf, gf = rng.normal(size=(args.fair, d)), rng.integers(0, 2, args.fair)
    head = fit_logistic_head(xl, yl, 2, binary=False, steps=50, lr=0.5)
    cfg = RefitConfig(steps=args.steps, lr=1.0, l2=1e-3)
    sizes = [int(n) for n in args.candidates.split(",")]
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             object_store_memory=1_000_000_000, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    scorer, plan = ray_refit_scorer(ScoringConfig(compute="actors"), ray.cluster_resources())
    points = []
    try:
        for n in sizes:
            x_cand = rng.normal(size=(n, d)) * 1.5
            before, load0 = status_kib()["RssAnon"], loadavg()
            t0 = time.perf_counter()
            with PeakSampler() as peak:
                got = scorer(head, xl, yl, x_cand, xf, gf, refit=cfg, measure="dp", alpha=0.5)
            wall = time.perf_counter() - t0
            point = {"candidates": n, "wall_s": round(wall, 1),
                     "candidates_per_s": round(n / wall, 1),
                     "driver_anon_peak_over_before_mib":
                         round((peak.peak["RssAnon"] - before) / 1024, 1),
                     "driver_anon_before_mib": round(before / 1024, 1),
                     "candidate_table_mib": round(x_cand.nbytes / 2**20, 1),
                     "loadavg_before": load0, "loadavg_after": loadavg()}
            if n == sizes[0]:
                want = fairal_fast(head, xl, yl, x_cand, xf, gf, refit=cfg, measure="dp",
                                   alpha=0.5)
                point["equal_to_in_process"] = bool(np.array_equal(got.score, want.score))
            print(json.dumps(point), flush=True)
            points.append(point)
    finally:
        ray.shutdown()
    result = {"benchmark": "fairal_ray",
              "command": "python " + " ".join(["benchmarks/bench_fairal.py", "ray", *argv]),
              "args": {k: str(v) for k, v in vars(args).items()}, "actor_pool": plan,
              "cpu": cpu_model(), "points": points,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
