"""Benchmark: the driver's memory over pool size (opening a pool, a round's driver-side index
work, and optionally a ``random`` per-row scoring round through Ray Data).

A features pool (``row_id``, ``group``, 4 float32 features, ``label``; 50,000-row shards,
``row_id`` increasing, or shuffled within and across shards with ``--shuffled``) of the largest
size is written once under ``--data-dir``; each size N is a prefix of its shards, measured in a
fresh child process (so ``ru_maxrss`` is that point's peak):

* ``open``: ``Pool(files)`` plus what the campaign driver does with the index every round
  (``group_counts(exclude=labelled)``, ``is_known``, ``groups_of`` of the labelled rows);
* ``score`` (``--score``): then one :func:`rayfal.scoring.per_row.score_pool` round of the
  ``random`` strategy (no model: only ``row_id``/``group`` are read) on a fresh local Ray.

Reported per point: ``ru_maxrss`` (the process's peak RSS, imports included), the peaks of
``VmRSS`` and of the anonymous RSS (``RssAnon``: the driver's own heap, what cannot be paged
out) sampled every 0.1 s, and ``RssFile``/``RssShmem`` at the end (file pages such as the memory-mapped pool index, and Ray object-store pages the driver
mapped), each relative to the child's baseline after its imports. ``--src DIR`` imports rayfal
from another checkout (e.g. an older commit exported with ``git archive``) to compare.

Example (the BENCHMARKS.md run)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pool_memory.py \\
        --sizes 100000,1000000,4000000 --score
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARD_ROWS = 50_000
DEFAULT_OUT = REPO / "benchmarks" / "results" / "pool_memory.json"


def status_kib() -> dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` of this process in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0])
    return out


class PeakSampler:
    """Samples ``VmRSS`` and ``RssAnon`` in a thread; ``peak[key]`` in KiB."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak = interval, {"VmRSS": 0, "RssAnon": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = status_kib()
        for k in self.peak:
            self.peak[k] = max(self.peak[k], now[k])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def write_pool(root: Path, rows: int, shuffled: bool, seed: int) -> list[str]:
    """The pool's shards (cached): ``rows`` rows in 50,000-row files."""
    import numpy as np
    import pyarrow.parquet as pq

    from rayfal.data import schema as S

    out = root / f"features-{rows}-{'shuffled' if shuffled else 'sorted'}-seed{seed}"
    done = out / "_done"
    n_files = -(-rows // SHARD_ROWS)
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        ids = np.arange(rows, dtype=np.int64) * 3 + 11
        if shuffled:
            rng.shuffle(ids)
        for i in range(n_files):
            sl = slice(i * SHARD_ROWS, min(rows, (i + 1) * SHARD_ROWS))
            n = sl.stop - sl.start
            group = rng.integers(0, 4, n)
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = rng.integers(0, 2, n)
            pq.write_table(S.feature_table(ids[sl], x, group, y), out / f"part-{i:05d}.parquet")
        done.write_text("ok\n")
    return [str(out / f"part-{i:05d}.parquet") for i in range(n_files)]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One point, in this (fresh) process; prints its JSON."""
    import numpy as np

    if args.score:
        import ray  # noqa: F401  (imports count in the baseline, not in the point)
        import ray.data  # noqa: F401
    from rayfal.data.pool import Pool

    files = json.loads(Path(args.files_json).read_text())[: args.n_files]
    base = status_kib()
    t0 = time.perf_counter()
    with PeakSampler() as peak:
        pool = Pool(files)
        open_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        labelled = np.unique(pool.row_ids()[rng.integers(0, pool.num_rows, 1000)])
        counts = pool.group_counts(exclude=labelled)
        assert sum(counts.values()) == pool.num_rows - len(labelled)
        assert pool.is_known(labelled).all()
        if hasattr(pool, "groups_of"):
            pool.groups_of(labelled)
        score_s = None
        if args.score:
            import ray

            from rayfal.config import ScoringConfig
            from rayfal.scoring.per_row import score_pool

            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     object_store_memory=1_000_000_000, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            try:
                t1 = time.perf_counter()
                res = score_pool(pool, strategy="random", strategy_params={}, seed=0, round=0,
                                 budget=50, labelled=labelled, model=None,
                                 cfg=ScoringConfig(compute="actors"), progress=False)
                score_s = time.perf_counter() - t1
                assert res.rows_scored == pool.num_rows - len(labelled)
            finally:
                ray.shutdown()
    end = status_kib()
    mib = 1 / 1024
    return {
        "rows": pool.num_rows, "files": len(files), "score": bool(args.score),
        "open_s": round(open_s, 2), "score_s": None if score_s is None else round(score_s, 1),
        "baseline_rss_mib": round(base["VmRSS"] * mib, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mib, 1),
        "peak_rss_over_baseline_mib": round((peak.peak["VmRSS"] - base["VmRSS"]) * mib, 1),
        "peak_anon_over_baseline_mib": round((peak.peak["RssAnon"] - base["RssAnon"]) * mib, 1),
        "end_anon_over_baseline_mib": round((end["RssAnon"] - base["RssAnon"]) * mib, 1),
        "end_file_mib": round(end["RssFile"] * mib, 1),
        "end_shmem_mib": round(end["RssShmem"] * mib, 1),
    }


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000,4000000",
                   help="pool sizes (multiples of 50,000)")
    p.add_argument("--data-dir", default="/tmp/rayfal-bench-pool")
    p.add_argument("--shuffled", action="store_true", help="row_ids not increasing")
    p.add_argument("--score", action="store_true", help="also a random scoring round on Ray")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--src", default=str(REPO), help="import rayfal from this checkout")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--files-json", help=argparse.SUPPRESS)
    p.add_argument("--n-files", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        sys.path.insert(0, args.src)
        print(json.dumps(child(args)), flush=True)
        return {}
    if args.write:  # --n-files carries the row count here
        sys.path.insert(0, args.src)
        files = write_pool(Path(args.data_dir), args.n_files, args.shuffled, args.seed)
        Path(args.files_json).write_text(json.dumps(files))
        return {}
    sys.path.insert(0, str(REPO))
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s % SHARD_ROWS for s in sizes):
        raise SystemExit(f"--sizes must be multiples of {SHARD_ROWS}")
    # the pool is written by a child too: a child's ru_maxrss starts at its parent's RSS at
    # fork time (Linux keeps it across exec), so the parent must stay small
    files_json = Path(args.data_dir) / "files.json"
    env = {**os.environ, "PYTHONPATH": args.src, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run([sys.executable, __file__, "--write", "--src", str(REPO), "--data-dir",
                    args.data_dir, "--files-json", str(files_json), "--n-files",
                    str(max(sizes)), "--seed", str(args.seed)]
                   + (["--shuffled"] if args.shuffled else []), env=env, check=True)
    result: dict[str, Any] = {
        "benchmark": "pool_memory",
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items()
                 if k not in ("child", "write", "files_json", "n_files")},
        "cpus": os.cpu_count(), "points": [],
    }
    for n in sizes:
        load_before = loadavg()
        cmd = [sys.executable, __file__, "--child", "--src", args.src, "--files-json",
               str(files_json), "--n-files", str(n // SHARD_ROWS)] + (
                   ["--score"] if args.score else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"point {n} failed (rc {out.returncode})")
        point = json.loads(out.stdout.strip().splitlines()[-1])
        point.update(loadavg_before=load_before, loadavg_after=loadavg())
        print(json.dumps(point), flush=True)
        result["points"].append(point)
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
