"""``rayfal score``: score any Parquet pool with a trained checkpoint, exactly once, resumably.

The unit of work and of commit is an input shard. Ray Data streams every shard through the
scorer (actor pool by default); the driver groups the scored rows by source file, and once a
file's rows are all in, writes ``scores/<key>.parquet`` (``row_id, score, group``) atomically
(temp file + fsync + rename) followed by a ``done/<key>.json`` marker. So:

* every ``row_id`` of the pool is written exactly once — a row seen twice (a retried task after
  an actor died) is dropped, which is safe because a row's score is a pure function of
  (model, seed, row_id) (row-keyed MC-dropout masks);
* a re-run after a crash skips files with a marker and scores only the rest;
* the driver holds only the rows of files still in flight plus the top-K candidates.

Everything that can be checked is checked before Ray is started (``ray_init``): the flags, the
output folder, the strategy, the pool (schemas, and every row's values of the shards still to
score, cached in ``OUT/pool-checks``), the checkpoint (safetensors + JSON that build the model)
and that its inputs fit the pool. Temp files of a run killed mid-write are removed on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rayfal.acquisition import CandidateReducer, make_strategy
from rayfal.atomic import atomic_write_text
from rayfal.config import ScoringConfig
from rayfal.data import schema as S
from rayfal.data.pool import Pool
from rayfal.scoring.per_row import (
    PoolScorer,
    actor_pool_size,
    map_batches_args,
    score_batch_task,
)

PATH_COLUMN = "path"
POOL_CHECKS = "pool-checks"
_TEMP_FILE = re.compile(r"\..+\.tmp-(\d+)")


def file_key(path: str) -> str:
    """A stable output name for an input shard."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    return f"{Path(path).stem}-{digest}"


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class ScoreRunResult:
    files_total: int
    files_scored: int
    rows_scored: int
    seconds: float
    out_dir: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds else float("nan")


class _FileBuffers:
    """Per-input-file buffers that flush a file's scores once all its rows have arrived."""

    def __init__(self, expected: dict[str, int], out_dir: Path, meta: dict) -> None:
        self.expected = expected
        self.out_dir = out_dir
        self.meta = meta
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.seen: dict[str, set[int]] = {}
        self.duplicates = 0
        self.flushed: list[str] = []

    def add(self, path: str, row_id: np.ndarray, score: np.ndarray, group: np.ndarray) -> None:
        if path not in self.expected:
            raise RuntimeError(f"scored rows from an unexpected file {path}")
        seen = self.seen.setdefault(path, set())
        fresh = np.fromiter((int(r) not in seen for r in row_id), bool, len(row_id))
        self.duplicates += int((~fresh).sum())
        if not fresh.any():
            return
        seen.update(row_id[fresh].tolist())
        self.parts.setdefault(path, []).append((row_id[fresh], score[fresh], group[fresh]))
        if len(seen) == self.expected[path]:
            self._flush(path)

    def _flush(self, path: str) -> None:
        row_id, score, group = (np.concatenate(a) for a in zip(*self.parts.pop(path), strict=True))
        order = np.argsort(row_id, kind="stable")
        table = pa.table({S.ROW_ID: row_id[order], "score": score[order], S.GROUP: group[order]})
        key = file_key(path)
        _atomic_write_table(table, self.out_dir / "scores" / f"{key}.parquet")
        atomic_write_text(self.out_dir / "done" / f"{key}.json",
                          json.dumps({"file": os.path.abspath(path), "rows": int(len(row_id)),
                                      **self.meta}))
        self.seen[path] = set()
        self.flushed.append(path)

    def incomplete(self) -> dict[str, int]:
        return {p: len(s) for p, s in self.seen.items() if s and p not in self.flushed}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` files that a killed run left in ``out``, ``out/scores`` and
    ``out/done``: those of this process (an earlier call) or of a pid that no longer exists
    on this host."""
    removed = []
    for d in (out, out / "scores", out / "done"):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _TEMP_FILE.fullmatch(p.name)
            if not m or not p.is_file() or p.is_symlink():
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or not _pid_alive(pid):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def check_score_args(out_dir: str | Path, *, strategy: str, mc_samples: int, top_k: int
                     ) -> None:
    """The flags of ``rayfal score`` (``ValueError`` naming the flag), before any data is read."""
    from rayfal.acquisition.base import STRATEGIES

    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"--mc {mc_samples}: the number of MC-dropout samples must be >= 1")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"--top-k {top_k}: must be >= 0 (0: no topk.parquet)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; the output must be a directory (it holds "
                         "scores/, done/ and topk.parquet)")
    per_row = [n for n in STRATEGIES.names() if STRATEGIES.get(n).kind == "per_row"]
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r}: unknown; allowed: {', '.join(per_row)}")
    if strategy not in per_row:
        raise ValueError(f"--strategy {strategy!r}: is {STRATEGIES.get(strategy).kind}, "
                         f"rayfal score needs a per-row strategy: {', '.join(per_row)}")


def completed_files(out_dir: Path, files: list[str], meta: dict) -> set[str]:
    """Input files whose scores are committed (marker + part file, same model and strategy)."""
    done = set()
    for f in files:
        key = file_key(f)
        marker, part = out_dir / "done" / f"{key}.json", out_dir / "scores" / f"{key}.parquet"
        if marker.is_file() and part.is_file():
            try:
                info = json.loads(marker.read_text())
            except (ValueError, OSError):
                info = None
            if not isinstance(info, dict):  # a damaged marker: score the shard again
                marker.unlink(missing_ok=True)
                continue
            if any(info.get(k) != v for k, v in meta.items()):
                raise ValueError(
                    f"{out_dir} holds scores of another run ({marker}); use a new --out"
                )
            done.add(f)
    return done


def score_to_parquet(
    pool_glob: str,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    *,
    strategy: str = "bald",
    mc_samples: int = 20,
    top_k: int = 0,
    seed: int = 0,
    cfg: ScoringConfig | None = None,
    progress: bool = True,
    ray_init: Callable[[], None] | None = None,
) -> ScoreRunResult:
    """Score every row of the pool and write per-shard Parquet + (optionally) the top-K.

    Every input is checked first (module docstring); ``ray_init`` (e.g. ``init_ray(address)``)
    is called only after that, right before Ray is needed."""
    from rayfal.data.validate import validate_pool
    from rayfal.models.checkpoint import model_from_checkpoint, read_checkpoint

    check_score_args(out_dir, strategy=strategy, mc_samples=mc_samples, top_k=top_k)
    cfg = cfg or ScoringConfig(compute="actors")
    cfg.mc_samples = mc_samples
    pool = Pool(pool_glob)
    ckpt = Path(checkpoint_dir)
    ckpt_meta, weights = read_checkpoint(ckpt)
    spec = ckpt_meta["spec"]
    if tuple(spec["input_shape"]) != tuple(pool.input_shape):
        raise ValueError(
            f"checkpoint {ckpt} expects inputs {spec['input_shape']}, pool has {pool.input_shape}"
        )
    model_from_checkpoint(ckpt_meta, weights, ckpt)  # the weights fit the architecture
    strat = make_strategy(strategy, seed=seed)
    out = Path(out_dir)
    meta = {"checkpoint": hashlib.sha1(weights).hexdigest(), "strategy": strategy,
            "mc_samples": mc_samples, "seed": seed}
    remove_stale_temp_files(out)
    done = completed_files(out, pool.files, meta)
    todo = [f for f in pool.files if f not in done]
    validate_pool(pool, cache_dir=out / POOL_CHECKS, files=todo)  # NaN rows: named, not scored
    (out / "scores").mkdir(parents=True, exist_ok=True)
    (out / "done").mkdir(parents=True, exist_ok=True)
    expected = {f: pq.ParquetFile(f).metadata.num_rows for f in todo}
    buffers = _FileBuffers(expected, out, meta)
    t0 = time.perf_counter()
    rows_todo = sum(expected.values())
    if todo and ray_init is not None:
        ray_init()
    if todo:
        import ray

        plan = actor_pool_size(cfg, ray.cluster_resources())
        columns = [S.ROW_ID, S.GROUP] + ([pool.feature_column] if strat.needs_probs else [])
        ctx = ray.data.DataContext.get_current()
        ctx.wait_for_min_actors_s = cfg.actor_start_timeout_s
        if not cfg.actor_locality:  # deprecated knob in Ray 2.60: touch it only when asked
            ctx.execution_options.actor_locality_enabled = False
        ds = ray.data.read_parquet(todo, columns=columns, include_paths=True)
        kwargs = dict(
            strategy=strategy, strategy_params={}, seed=seed, round=0,
            labelled_ref=ray.put(np.zeros(0, np.int64)),
            model_ref=ray.put((spec, weights)) if strat.needs_probs else None,
            feature_column=pool.feature_column, input_shape=pool.input_shape,
            mc_samples=mc_samples, threads=max(1, int(plan.cpus)), use_gpu=plan.gpus > 0,
            passthrough=(PATH_COLUMN,),
        )
        common = map_batches_args(cfg, plan)
        if cfg.compute == "tasks":
            scored = ds.map_batches(score_batch_task, fn_kwargs=kwargs,
                                    compute=ray.data.TaskPoolStrategy(size=plan.size), **common)
        else:
            scored = ds.map_batches(
                PoolScorer, fn_constructor_kwargs=kwargs,
                compute=ray.data.ActorPoolStrategy(size=plan.size),
                max_restarts=-1, max_task_retries=-1, **common,
            )
        with tqdm(total=rows_todo, unit="row", unit_scale=True, desc="score",
                  disable=not progress, smoothing=0.1) as bar:
            for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
                paths = batch[PATH_COLUMN]
                for p in np.unique(paths):
                    m = paths == p
                    buffers.add(str(p), batch[S.ROW_ID][m], batch["score"][m], batch[S.GROUP][m])
                bar.update(len(paths))
        missing = buffers.incomplete()
        unflushed = [f for f in todo if f not in buffers.flushed]
        if unflushed:
            raise RuntimeError(
                f"scoring ended with {len(unflushed)} shard(s) incomplete, e.g. {unflushed[:3]} "
                f"(rows seen per file: {dict(list(missing.items())[:3])}); re-run to resume"
            )
    seconds = time.perf_counter() - t0
    if top_k:
        write_top_k(out, pool.files, strat, top_k)
    return ScoreRunResult(len(pool.files), len(todo), rows_todo, seconds, out)


def write_top_k(out: Path, files: list[str], strategy, k: int) -> Path:
    """Stream the committed score files into the top-K selection (``topk.parquet``)."""
    reducer = CandidateReducer(strategy, k)
    for f in files:
        t = pq.read_table(out / "scores" / f"{file_key(f)}.parquet")
        reducer.add(t.column(S.ROW_ID).to_numpy(), t.column(S.GROUP).to_numpy(),
                    t.column("score").to_numpy())
    cand = reducer.result()
    order = cand.order()[:k]
    table = pa.table({S.ROW_ID: cand.row_id[order], "score": cand.score[order],
                      S.GROUP: cand.group[order], "rank": np.arange(len(order))})
    path = out / "topk.parquet"
    _atomic_write_table(table, path)
    return path
