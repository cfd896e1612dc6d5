"""Benchmark: BALD scoring (T MC-dropout samples) of the glyph CNN over a large pool on local Ray.

Steps (one process):

1. generate (once, cached under ``--data-dir``) a glyph pool of ``--rows`` rows;
2. build a seeded ``SmallCNN`` (the ``jobs/quickstart.yaml`` architecture by default);
3. start a local Ray and run :func:`rayfal.scoring.per_row.score_pool` with
   ``strategy="bald"`` and ``compute="actors"`` over the whole pool, sampling the RSS of the
   driver (``/proc/self/status``) and of the Ray worker processes (``/proc/<pid>/status``)
   in a background thread;
4. after ``ray.shutdown()``, time the in-process kernel (``mc_probs`` + ``bald``) with one
   torch thread (the CPU share of one scoring actor) on ``--kernel-rows`` pool rows, so the
   overhead of the Ray pipeline is visible;
5. print a Markdown table and write JSON to ``--out``.

Example::

    .venv/bin/python benchmarks/bench_bald_scoring.py --rows 1000000 --mc 20 \\
        --batch-size 512 --data-dir /tmp/rayfal-bench --width 16 --hidden 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "bald_scoring.json"
ACTOR_MARKERS = ("MapWorker",)  # process titles of the Ray Data actor pool's workers


# ----------------------------------------------------------------------------- machine facts


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def loadavg() -> list[float]:
    fields = _read("/proc/loadavg").split()
    return [float(x) for x in fields[:3]] if len(fields) >= 3 else []


def machine_info() -> dict[str, Any]:
    import pyarrow
    import ray
    import torch

    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
         if line.startswith("model name")),
        platform.processor() or "?",
    )
    mem_kb = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
         if line.startswith("MemTotal:")),
        0,
    )
    return {
        "nproc": os.cpu_count(),
        "sched_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------- memory sampling


def _status_kb(pid: int | str) -> dict[str, int]:
    """``VmRSS``/``RssAnon``/``RssFile``/``RssShmem``/``VmHWM`` of a process in KiB."""
    out: dict[str, int] = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0])
    return out


def _cmdline(pid: str) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


class RssSampler(threading.Thread):
    """Samples the driver's VmRSS and every ``ray::`` worker process's RSS every ``interval``."""

    def __init__(self, interval: float = 1.0, driver_interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.driver_interval = driver_interval
        self._stop_event = threading.Event()
        self.driver_peak_kb = 0
        self.driver_samples = 0
        self.actor_pids: set[int] = set()
        self.actor_peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        self.actor_total_peak_kb = 0  # sum over simultaneously alive actor processes
        self.other_workers_peak_kb = 0  # read-task / idle ray:: workers (max single process)
        self.cpu_s: dict[int, tuple[str, float]] = {}  # pid -> (kind, last user+sys seconds)
        self.titles: dict[str, int] = {}  # process title -> peak VmRSS KiB

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @staticmethod
    def _descendants(root: int) -> list[int]:
        """PIDs of every process below ``root`` (Ray's raylet and workers descend from the
        driver that started them; other Ray clusters on the machine are left out)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = _read(f"/proc/{entry}/stat")
            if not stat:
                continue
            # the command name may hold spaces; the ppid is the 2nd field after it
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [root]
        while todo:
            for c in children.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

    def _sample_workers(self) -> None:
        actor_total = 0
        for pid in self._descendants(os.getpid()):
            cmd = _cmdline(str(pid))
            kind = ("actor" if any(m in cmd for m in ACTOR_MARKERS)
                    else "ray_worker" if cmd.startswith("ray::") else "ray_system")
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self.cpu_s[pid] = (kind, cpu)
            if not cmd.startswith("ray::"):
                continue
            st = _status_kb(pid)
            rss = st.get("VmRSS", 0)
            title = cmd.split(" ")[0][:80]
            self.titles[title] = max(self.titles.get(title, 0), rss)
            if any(m in cmd for m in ACTOR_MARKERS):
                self.actor_pids.add(pid)
                actor_total += rss
                for k in self.actor_peak:
                    self.actor_peak[k] = max(self.actor_peak[k], st.get(k, 0))
            else:
                self.other_workers_peak_kb = max(self.other_workers_peak_kb, rss)
        self.actor_total_peak_kb = max(self.actor_total_peak_kb, actor_total)

    def cpu_by_kind(self, since: dict[int, tuple[str, float]] | None = None) -> dict[str, float]:
        """CPU seconds (user + system) used by the Ray processes, by kind, since ``since``."""
        out = {"actor": 0.0, "ray_worker": 0.0, "ray_system": 0.0}
        for pid, (kind, cpu) in self.cpu_s.items():
            base = (since or {}).get(pid, (kind, 0.0))[1]
            out[kind] += cpu - base
        return {k: round(v, 1) for k, v in out.items()}

    def run(self) -> None:
        next_workers = 0.0
        while not self._stop_event.is_set():
            rss = _status_kb("self").get("VmRSS", 0)
            self.driver_peak_kb = max(self.driver_peak_kb, rss)
            self.driver_samples += 1
            now = time.monotonic()
            if now >= next_workers:
                self._sample_workers()
                next_workers = now + self.interval
            self._stop_event.wait(self.driver_interval)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (from ``/proc/<pid>/stat``)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def maxrss_mib() -> float:
    """Peak RSS of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- steps


def make_pool(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Generate the pool once; the first run's timing is kept in a sidecar JSON file."""
    from rayfal.data.sources.glyphs import MANIFEST, generate_glyphs

    name = f"glyphs-sensitive_attribute-{args.rows}-seed{args.seed}"
    out_dir = Path(args.data_dir) / name
    sidecar = Path(args.data_dir) / f"{name}.generation.json"
    cached = (out_dir / MANIFEST).is_file()
    t0 = time.perf_counter()
    generate_glyphs(
        out_dir,
        scenario="sensitive_attribute",
        n_pool=args.rows,
        n_test=100,
        seed=args.seed,
        num_workers=2,
        shard_rows=50_000,
        progress=args.progress,
    )
    if not cached:
        info = {"seconds": round(time.perf_counter() - t0, 1), "num_workers": 2,
                "loadavg_after": loadavg(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        sidecar.write_text(json.dumps(info, indent=2) + "\n")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {"seconds": None}
    return out_dir, {**info, "this_run": "generated" if not cached else "cached"}


def make_model(args: argparse.Namespace, input_shape: tuple[int, ...]):
    import torch
    from safetensors.torch import save as save_safetensors

    from rayfal.models.checkpoint import model_from_spec, model_spec, state_dict_cpu

    spec = model_spec(
        "cnn", input_shape, 2, width=args.width, hidden=args.hidden, dropout=args.dropout
    )
    torch.manual_seed(args.seed)
    model = model_from_spec(spec).eval()
    weights = save_safetensors(state_dict_cpu(model))
    n_params = sum(p.numel() for p in model.parameters())
    return spec, weights, model, n_params


def run_ray_scoring(args: argparse.Namespace, pool, spec: dict, weights: bytes) -> dict[str, Any]:
    import ray
    import ray.data

    from rayfal.config import ScoringConfig
    from rayfal.scoring.per_row import actor_pool_size, score_pool

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    # address="local": always start a fresh local Ray, even when another cluster on the machine
    # is registered as the "current" one (plain ray.init() would try to connect to it).
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        object_store_memory=args.object_store_memory,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    init_s = time.perf_counter() - t0
    cfg = ScoringConfig(compute="actors", mc_samples=args.mc, batch_size=args.batch_size,
                        actors=args.actors, cpus_per_actor=args.cpus_per_actor)
    plan = actor_pool_size(cfg, ray.cluster_resources())
    runs = []
    try:
        for rep in range(args.repeats):
            sampler = RssSampler(interval=args.sample_interval)
            sampler._sample_workers()  # CPU-time baseline of the already running Ray processes
            cpu_base = dict(sampler.cpu_s)
            sampler.start()
            load_before = loadavg()
            driver_cpu0 = time.process_time()
            t0 = time.perf_counter()
            try:
                res = score_pool(
                    pool,
                    strategy="bald",
                    strategy_params={},
                    seed=args.seed,
                    round=rep,
                    budget=50,
                    labelled=np.array([], np.int64),
                    model=(spec, weights),
                    cfg=cfg,
                    progress=args.progress,
                )
            finally:
                wall = time.perf_counter() - t0
                driver_cpu = time.process_time() - driver_cpu0
                sampler.stop()
            cand = res.candidates
            cpu = sampler.cpu_by_kind(cpu_base)
            cpu["driver"] = round(driver_cpu, 1)
            runs.append({
                "repeat": rep,
                "rows_scored": res.rows_scored,
                "wall_s": round(wall, 2),
                "score_pool_seconds": round(res.seconds, 2),
                "rows_per_s": round(res.rows_scored / wall, 1),
                "actors_planned": res.workers,
                "actor_pool": res.actor_pool,
                "actor_processes_seen": len(sampler.actor_pids),
                "cpu_seconds": cpu,
                "actor_rows_per_cpu_s": round(res.rows_scored / cpu["actor"], 1)
                if cpu["actor"] > 0 else None,
                "driver_peak_vmrss_mib": round(sampler.driver_peak_kb / 1024, 1),
                "driver_rss_samples": sampler.driver_samples,
                "driver_ru_maxrss_mib_after": round(maxrss_mib(), 1),
                "actor_peak_vmrss_mib": round(sampler.actor_peak["VmRSS"] / 1024, 1),
                "actor_peak_rss_anon_mib": round(sampler.actor_peak["RssAnon"] / 1024, 1),
                "actor_peak_rss_file_mib": round(sampler.actor_peak["RssFile"] / 1024, 1),
                "actor_peak_rss_shmem_mib": round(sampler.actor_peak["RssShmem"] / 1024, 1),
                "actors_total_peak_vmrss_mib": round(sampler.actor_total_peak_kb / 1024, 1),
                "other_ray_worker_peak_vmrss_mib": round(sampler.other_workers_peak_kb / 1024, 1),
                "ray_process_titles_peak_mib": {
                    k: round(v / 1024, 1) for k, v in sorted(sampler.titles.items())
                },
                "candidates": int(len(cand.row_id)),
                "top_score": float(cand.score.max()) if len(cand.score) else None,
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
            })
            print(f"  repeat {rep}: {res.rows_scored} rows in {wall:.1f} s "
                  f"({res.rows_scored / wall:,.0f} rows/s)", flush=True)
    finally:
        ray.shutdown()
    return {
        "ray_init_s": round(init_s, 2),
        "cluster_cpus": args.num_cpus,
        "plan": {"size": plan.size, "cpus_per_actor": plan.cpus, "gpus_per_actor": plan.gpus},
        "runs": runs,
    }


def run_kernel(args: argparse.Namespace, pool, model) -> dict[str, Any]:
    """In-process reference, one torch thread: ``mc_probs`` + ``bald`` called as the scoring
    actor calls them (row-keyed dropout masks when ``mc_probs`` takes ``row_keys``), plus a
    breakdown (trunk, head, global-RNG dropout, Parquet read and ``to_model_input``)."""
    import inspect

    import pyarrow.parquet as pq
    import torch

    from rayfal.acquisition.scores import bald
    from rayfal.data import schema as S
    from rayfal.models.predict import mc_probs

    torch.set_num_threads(1)
    n = min(args.kernel_rows, pool.num_rows)
    bs, T = args.batch_size, args.mc
    t0 = time.perf_counter()
    tables, got = [], 0
    for f in pool.files:
        t = pq.read_table(f, columns=[S.ROW_ID, S.GROUP, pool.feature_column])
        tables.append(t.slice(0, n - got))
        got += min(len(t), n - got)
        if got >= n:
            break
    feats = np.concatenate([S.column_to_numpy(t.column(pool.feature_column)) for t in tables])
    row_id = np.concatenate([t.column(S.ROW_ID).to_numpy() for t in tables]).astype(np.int64)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = torch.from_numpy(S.to_model_input(feats, pool.input_shape))
    convert_s = time.perf_counter() - t0

    row_keyed = "row_keys" in inspect.signature(mc_probs).parameters
    seed = args.seed * 100_003  # PoolScorer's generator_seed for round 0

    def kernel(keyed: bool) -> tuple[float, float]:
        """Best wall seconds and best CPU seconds over the repeats."""
        best, best_cpu = float("inf"), float("inf")
        for _ in range(args.kernel_repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for lo in range(0, n, bs):
                kw = {"row_keys": row_id[lo : lo + bs]} if keyed else {}
                bald(mc_probs(model, x[lo : lo + bs], mc_samples=T, batch_size=bs,
                              generator_seed=seed, **kw))
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        return best, best_cpu

    # warm-up (first-call allocations, oneDNN primitive creation)
    bald(mc_probs(model, x[:bs], mc_samples=T, batch_size=bs))
    t_keyed, c_keyed = kernel(True) if row_keyed else (None, None)
    t_global, c_global = kernel(False)
    t_main, c_main = (t_keyed, c_keyed) if t_keyed is not None else (t_global, c_global)
    with torch.inference_mode():
        t0 = time.perf_counter()
        zs = [model.embed(x[lo : lo + bs]) for lo in range(0, n, bs)]
        trunk_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for z in zs:
            model.head[1](z.repeat(T, 1))  # first Linear alone, no dropout
        linear_s = time.perf_counter() - t0
    out = {
        "rows": n,
        "torch_threads": torch.get_num_threads(),
        "mc_probs_row_keyed": row_keyed,
        "kernel_s": round(t_main, 3),
        "kernel_rows_per_s": round(n / t_main, 1),
        "kernel_rows_per_cpu_s": round(n / c_main, 1),
        "kernel_global_rng_rows_per_s": round(n / t_global, 1),
        "kernel_global_rng_rows_per_cpu_s": round(n / c_global, 1),
        "kernel_row_keyed_rows_per_s": None if t_keyed is None else round(n / t_keyed, 1),
        "trunk_rows_per_s": round(n / trunk_s, 1),
        "head_first_linear_only_rows_per_s": round(n / linear_s, 1),
        "parquet_read_rows_per_s": round(n / read_s, 1),
        "to_model_input_rows_per_s": round(n / convert_s, 1),
        "with_decode_rows_per_s": round(n / (t_main + read_s + convert_s), 1),
    }
    return out


# ----------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    m, r, k = result["machine"], result["ray"], result["kernel"]
    run = r["runs"][-1]
    rows = [
        ("pool rows", f"{result['args']['rows']:,}"),
        ("MC samples T / batch size", f"{result['args']['mc']} / {result['args']['batch_size']}"),
        ("pool generation (first run, 2 processes)",
         f"{result['generation']['seconds'] or 'n/a'} s "
         f"(this run: {result['generation']['this_run']})"),
        ("rows scored (pool on disk)",
         f"{result['pool_rows']:,} ({result['pool_bytes'] / 2**30:.2f} GiB in "
         f"{result['pool_files']} files)"),
        ("scoring config", f"actors={result['args']['actors']}, "
                           f"cpus_per_actor={result['args']['cpus_per_actor']}"),
        ("ray.init", f"{r['ray_init_s']:.1f} s"),
    ]
    for run in r["runs"]:
        tag = f" (repeat {run['repeat']})" if len(r["runs"]) > 1 else ""
        rows += [
            (f"Ray scoring wall time{tag}", f"{run['wall_s']:.1f} s"),
            (f"Ray scoring rate{tag}", f"{run['rows_per_s']:,.0f} rows/s"),
            (f"actors (planned / processes seen){tag}",
             f"{run['actors_planned']} x {r['plan']['cpus_per_actor']:g} CPU / "
             f"{run['actor_processes_seen']}"),
            (f"driver peak RSS, sampled VmRSS{tag}", f"{run['driver_peak_vmrss_mib']:.0f} MiB"),
            (f"driver ru_maxrss after scoring{tag}",
             f"{run['driver_ru_maxrss_mib_after']:.0f} MiB"),
            (f"actor peak RSS per process (peaks of anon / file / shmem){tag}",
             f"{run['actor_peak_vmrss_mib']:.0f} MiB ({run['actor_peak_rss_anon_mib']:.0f} / "
             f"{run['actor_peak_rss_file_mib']:.0f} / {run['actor_peak_rss_shmem_mib']:.0f})"),
            (f"CPU seconds: actor / other Ray workers / raylet+gcs / driver{tag}",
             " / ".join(f"{run['cpu_seconds'][k]:.0f}"
                        for k in ("actor", "ray_worker", "ray_system", "driver"))),
            (f"actor rows per CPU-second{tag}", f"{run['actor_rows_per_cpu_s'] or 0:,.0f}"),
            (f"load average before / after{tag}",
             f"{run['loadavg_before']} / {run['loadavg_after']}"),
        ]
    last = r["runs"][-1]
    rows += [
        (f"in-process kernel, {k['torch_threads']} thread ({k['rows']:,} rows)",
         f"{k['kernel_rows_per_s']:,.0f} rows/s"),
        ("  row-keyed masks (as the actor) / global-RNG dropout",
         f"{k['kernel_row_keyed_rows_per_s'] or 0:,.0f} / "
         f"{k['kernel_global_rng_rows_per_s']:,.0f} rows/s"),
        ("  trunk only / first head Linear only (T x rows)",
         f"{k['trunk_rows_per_s']:,.0f} / {k['head_first_linear_only_rows_per_s']:,.0f} rows/s"),
        ("  with Parquet read + to_model_input", f"{k['with_decode_rows_per_s']:,.0f} rows/s"),
        ("  per CPU-second (load-independent)", f"{k['kernel_rows_per_cpu_s']:,.0f} rows/cpu-s"),
        ("Ray rate / kernel rate (wall clock)",
         f"{last['rows_per_s'] / k['kernel_rows_per_s']:.2f}"),
        ("actor rows/cpu-s / kernel rows/cpu-s",
         f"{(last['actor_rows_per_cpu_s'] or 0) / k['kernel_rows_per_cpu_s']:.2f}"),
        ("machine", f"{m['nproc']} CPU {m['cpu_model']}, {m['ram_gib']} GiB, "
                    f"Ray {m['ray']}, torch {m['torch']}"),
    ]
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def _int_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _float_or_auto(text: str) -> float | str:
    return text if text == "auto" else float(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="pool rows")
    p.add_argument("--mc", type=int, default=20, help="MC-dropout samples T")
    p.add_argument("--batch-size", type=int, default=512, help="ScoringConfig.batch_size")
    p.add_argument("--data-dir", default="/tmp/rayfal-bench", help="glyph pool cache root")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--hidden", type=int, default=64, help="SmallCNN hidden units")
    p.add_argument("--dropout", type=float, default=0.5, help="SmallCNN dropout")
    p.add_argument("--seed", type=int, default=0, help="data, weights and scoring seed")
    p.add_argument("--num-cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    p.add_argument("--object-store-memory", type=int, default=2_000_000_000)
    p.add_argument("--actors", type=_int_or_auto, default="auto", help="ScoringConfig.actors")
    p.add_argument("--cpus-per-actor", type=_float_or_auto, default="auto",
                   help="ScoringConfig.cpus_per_actor")
    p.add_argument("--max-files", type=int, default=None,
                   help="score only the first N pool shards (50,000 rows each)")
    p.add_argument("--repeats", type=int, default=1, help="score_pool runs (same Ray session)")
    p.add_argument("--kernel-rows", type=int, default=20_000, help="rows for the kernel rate")
    p.add_argument("--kernel-repeats", type=int, default=3, help="kernel timing repeats (best)")
    p.add_argument("--sample-interval", type=float, default=1.0,
                   help="seconds between samples of the Ray worker processes' RSS")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--generate-only", action="store_true", help="only generate the pool")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from rayfal.data.pool import Pool

    load_start = loadavg()
    print(f"load average at start: {load_start}", flush=True)
    pool_dir, gen = make_pool(args)
    print(f"pool: {pool_dir} ({gen['this_run']}; first generation took {gen['seconds']} s)",
          flush=True)
    if args.generate_only:
        return {"generation": gen}
    pool = Pool(pool_dir / "pool")
    if args.max_files:
        pool = Pool(pool.files[: args.max_files])
    pool_bytes = sum(os.path.getsize(f) for f in pool.files)
    spec, weights, model, n_params = make_model(args, pool.input_shape)

    ray_res = run_ray_scoring(args, pool, spec, weights)
    kernel = run_kernel(args, pool, model)
    result = {
        "benchmark": "bald_scoring",
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "args": vars(args),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "pool_dir": str(pool_dir),
        "pool_files": len(pool.files),
        "pool_rows": pool.num_rows,
        "pool_bytes": pool_bytes,
        "generation": gen,
        "model": {"spec": spec, "parameters": n_params, "weights_bytes": len(weights)},
        "ray": ray_res,
        "kernel": kernel,
        "ray_over_kernel": round(ray_res["runs"][-1]["rows_per_s"] / kernel["kernel_rows_per_s"],
                                 3),
        "actor_cpu_over_kernel_cpu": round(
            (ray_res["runs"][-1]["actor_rows_per_cpu_s"] or 0) / kernel["kernel_rows_per_cpu_s"], 3
        ),
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
