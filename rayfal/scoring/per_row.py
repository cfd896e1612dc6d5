"""Per-row pool scoring with Ray Data (strategies of kind ``per_row``): a streaming read of the Parquet shards, scored by an
actor pool (``map_batches`` with :class:`PoolScorer`), reduced on the driver to a bounded
candidate table (:class:`rayfal.acquisition.CandidateReducer`).

On small machines an actor pool that takes every CPU starves the read tasks and the pipeline
hangs (Ray issue #44687), so :func:`actor_pool_size` always leaves one whole CPU for reads.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from rayfal.acquisition import CandidateReducer, Candidates, ScoreBatch, make_strategy
from rayfal.config import ConfigError, ScoringConfig
from rayfal.data import schema as S
from rayfal.data.pool import Pool


@dataclass
class ActorPlan:
    size: int
    cpus: float
    gpus: float


def actor_pool_size(cfg: ScoringConfig, cluster: dict[str, float]) -> ActorPlan:
    """Actor count and per-actor resources from the job and the cluster's resources.

    ``auto`` gives one CPU per actor and as many actors as leave one whole CPU free for the
    read tasks (at least one actor). An explicit plan that leaves no CPU for reads is refused,
    because Ray Data would hang without an error.
    """
    total_cpu = float(cluster.get("CPU", 1.0))
    total_gpu = float(cluster.get("GPU", 0.0))
    cpus = 1.0 if cfg.cpus_per_actor == "auto" else float(cfg.cpus_per_actor)
    if total_cpu < 2:
        cpus = min(cpus, 0.5)
    if cfg.actors == "auto":
        size = max(1, math.floor((total_cpu - 1.0) / cpus)) if cpus > 0 else 1
        if cfg.gpus_per_actor > 0:
            size = max(1, min(size, math.floor(total_gpu / cfg.gpus_per_actor)))
    else:
        size = int(cfg.actors)
    if size < 1:
        raise ConfigError("scoring.actors must be >= 1")
    if total_cpu - size * cpus < min(1.0, total_cpu / 2):
        raise ConfigError(
            f"scoring: {size} actors x {cpus} CPU leave less than one CPU of the cluster's "
            f"{total_cpu:g} for Ray Data's read tasks; the pipeline would hang. Lower "
            "scoring.actors or scoring.cpus_per_actor (or use 'auto')."
        )
    if cfg.gpus_per_actor > total_gpu + 1e-9:
        raise ConfigError(
            f"scoring.gpus_per_actor={cfg.gpus_per_actor} but the cluster has {total_gpu:g} GPUs"
        )
    return ActorPlan(size=size, cpus=cpus, gpus=float(cfg.gpus_per_actor))


class GpuMissingError(RuntimeError):
    """A scoring actor/task was asked for a GPU but sees no usable CUDA device."""


def scoring_device(use_gpu: bool) -> torch.device:
    """The device of a scoring actor/task: ``cuda`` when it was given a GPU, else ``cpu``.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPU(s) it assigned, so ``cuda`` (index 0 of the
    visible ones) is that GPU. A scorer asked for a GPU (``scoring.gpus_per_actor > 0``) that
    finds none (no CUDA build of torch, a driver problem, an empty ``CUDA_VISIBLE_DEVICES``)
    raises :class:`GpuMissingError` instead of silently scoring on the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GpuMissingError(
            f"scoring.gpus_per_actor > 0 but this scoring worker on {socket.gethostname()} "
            f"sees no CUDA device (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!s}); refusing to fall back "
            "to the CPU. Install a CUDA build of torch on the GPU nodes, or set "
            "scoring.gpus_per_actor: 0 to score on CPUs.")
    return torch.device("cuda")


class PoolScorer:
    """Ray Data callable class: drops labelled rows, runs the model, returns strategy scores."""

    def __init__(
        self,
        *,
        strategy: str,
        strategy_params: dict,
        seed: int,
        round: int,
        labelled_ref,
        model_ref,
        feature_column: str,
        input_shape: tuple[int, ...],
        mc_samples: int,
        threads: int,
        use_gpu: bool,
        passthrough: tuple[str, ...] = (),
        image_on_error: str = "fail",
    ) -> None:
        import ray

        self.device = scoring_device(use_gpu)  # first: fail before any work without the GPU
        torch.set_num_threads(max(1, threads))
        self.strategy = make_strategy(strategy, seed=seed, round=round, **strategy_params)
        self.labelled = np.sort(np.asarray(ray.get(labelled_ref), dtype=np.int64))
        self.feature_column = feature_column
        self.input_shape = tuple(input_shape)
        self.mc_samples = mc_samples
        self.seed, self.round = seed, round
        self.passthrough = tuple(passthrough)
        self.image_on_error = image_on_error  # image files: fail or skip (rayfal.data.images)
        self.node = np.int64(int(ray.get_runtime_context().get_node_id()[:15], 16))
        self.model = None
        if self.strategy.needs_probs:
            from safetensors.torch import load as load_safetensors

            from rayfal.models.checkpoint import model_from_spec

            spec, weights = ray.get(model_ref)
            self.model = model_from_spec(spec)
            self.model.load_state_dict(load_safetensors(weights))
            self.model.to(self.device).eval()

    def _unlabelled_mask(self, row_id: np.ndarray) -> np.ndarray:
        if len(self.labelled) == 0:
            return np.ones(len(row_id), bool)
        pos = np.minimum(np.searchsorted(self.labelled, row_id), len(self.labelled) - 1)
        return self.labelled[pos] != row_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rayfal.models.predict import mc_probs

        row_id = np.asarray(batch[S.ROW_ID], dtype=np.int64)
        keep = self._unlabelled_mask(row_id)
        row_id = row_id[keep]
        group = np.asarray(batch[S.GROUP], dtype=np.int64)[keep]
        probs = None
        if self.model is not None and len(row_id):
            feats = batch[self.feature_column][keep]
            if self.feature_column == S.URI:  # image files, read and decoded here
                from rayfal.data.images import decode_uris

                dec = decode_uris(feats, self.input_shape, row_ids=row_id,
                                  on_error=self.image_on_error)
                row_id, group = row_id[dec.ok], group[dec.ok]
                keep[np.flatnonzero(keep)[~dec.ok]] = False  # skipped rows: not scored
                x = torch.from_numpy(dec.x)
            else:
                x = torch.from_numpy(S.to_model_input(feats, self.input_shape))
            probs = mc_probs(self.model, x, mc_samples=self.mc_samples,
                             generator_seed=self.seed * 100_003 + self.round, row_keys=row_id)
        score = (
            self.strategy.score(ScoreBatch(row_id, group, probs))
            if len(row_id)
            else np.zeros(0, np.float64)
        )
        out = {S.ROW_ID: row_id, S.GROUP: group, "score": score,
               "node": np.full(len(row_id), self.node, np.int64)}
        for col in self.passthrough:
            out[col] = np.asarray(batch[col])[keep]
        return out


_SCORER_CACHE: dict[tuple, PoolScorer] = {}


def score_batch_task(batch: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
    """Task-pool variant of :class:`PoolScorer`: the scorer (model, labelled ids) is built once
    per Ray worker process and reused by every batch of the same round, so small pools do not
    pay an actor start-up (~7 s on 2 cores) per round."""
    key = (kwargs["seed"], kwargs["round"], kwargs["strategy"], kwargs["labelled_ref"].hex(),
           kwargs["model_ref"].hex() if kwargs["model_ref"] is not None else None)
    scorer = _SCORER_CACHE.get(key)
    if scorer is None:
        _SCORER_CACHE.clear()
        scorer = _SCORER_CACHE[key] = PoolScorer(**kwargs)
    return scorer(batch)


def use_actor_pool(cfg: ScoringConfig, pool_rows: int) -> bool:
    """``compute: actors`` / ``tasks``, or ``auto``: actors from ``actor_min_rows`` pool rows."""
    if cfg.compute == "auto":
        return pool_rows >= cfg.actor_min_rows
    return cfg.compute == "actors"


def map_batches_args(cfg: ScoringConfig, plan: ActorPlan) -> dict:
    """Resource and batching keywords of the scoring ``map_batches`` (Ray 2.60 named API).

    Ray Data schedules its actors and tasks with ``SPREAD`` by default; any other
    ``scheduling_strategy`` can only go through the deprecated ``ray_remote_args``.
    """
    args = dict(num_cpus=plan.cpus, num_gpus=plan.gpus or None, batch_size=cfg.batch_size,
                batch_format="numpy", resources=dict(cfg.actor_resources) or None)
    if cfg.scheduling_strategy != "SPREAD":
        args["scheduling_strategy"] = cfg.scheduling_strategy
    return args


@dataclass
class ScoringResult:
    candidates: Candidates
    rows_scored: int
    seconds: float
    workers: int
    actor_pool: bool
    nodes: int = 1


def score_pool(
    pool: Pool,
    *,
    strategy: str,
    strategy_params: dict,
    seed: int,
    round: int,
    budget: int,
    labelled: np.ndarray,
    model: tuple[dict, bytes] | None,
    cfg: ScoringConfig,
    use_gpu: bool = False,
    progress: bool = True,
) -> ScoringResult:
    """Score every unlabelled pool row through Ray Data and keep the per-group top ``budget``."""
    import ray

    strat = make_strategy(strategy, seed=seed, round=round, **strategy_params)
    if strat.needs_probs and model is None:
        raise ValueError(f"strategy '{strategy}' needs a trained model")
    if strat.kind != "per_row":
        raise ValueError(f"strategy '{strategy}' is {strat.kind}, not per_row: score it with "
                         "rayfal.scoring.two_pass (two_pass) or select_pool (whole_pool)")
    plan = actor_pool_size(cfg, ray.cluster_resources())
    columns = [S.ROW_ID, S.GROUP] + ([pool.feature_column] if strat.needs_probs else [])
    labelled_ref = ray.put(np.asarray(labelled, dtype=np.int64))
    model_ref = ray.put(model) if model is not None else None
    t0 = time.perf_counter()
    ctx = ray.data.DataContext.get_current()
    ctx.wait_for_min_actors_s = cfg.actor_start_timeout_s
    if not cfg.actor_locality:  # deprecated knob in Ray 2.60: touch it only when asked
        ctx.execution_options.actor_locality_enabled = False
    ds = ray.data.read_parquet(pool.files, columns=columns)
    scorer_kwargs = dict(
        strategy=strategy,
        strategy_params=strategy_params,
        seed=seed,
        round=round,
        labelled_ref=labelled_ref,
        model_ref=model_ref,
        feature_column=pool.feature_column,
        input_shape=pool.input_shape,
        mc_samples=cfg.mc_samples,
        threads=max(1, int(plan.cpus)),
        use_gpu=plan.gpus > 0,
        image_on_error=getattr(pool, "on_error", "fail"),
    )
    common = map_batches_args(cfg, plan)
    actors = use_actor_pool(cfg, pool.num_rows)
    if actors:
        scored = ds.map_batches(PoolScorer, fn_constructor_kwargs=scorer_kwargs,
                                compute=ray.data.ActorPoolStrategy(size=plan.size), **common)
    else:
        scored = ds.map_batches(score_batch_task, fn_kwargs=scorer_kwargs,
                                compute=ray.data.TaskPoolStrategy(size=plan.size), **common)
    reducer = CandidateReducer(strat, budget)
    nodes: set[int] = set()
    total = pool.num_rows - len(labelled)
    with tqdm(
        total=total, desc=f"  score {strategy}", unit="row", leave=False, disable=not progress
    ) as bar:
        for out in scored.iter_batches(batch_size=None, batch_format="numpy"):
            reducer.add(out[S.ROW_ID], out[S.GROUP], out["score"])
            nodes.update(np.unique(out["node"]).tolist())
            bar.update(len(out[S.ROW_ID]))
    skipped = total - reducer.rows_seen if getattr(pool, "on_error", "fail") == "skip" else 0
    if skipped > 0 and pool.feature_column == S.URI and strat.needs_probs:
        import logging

        logging.getLogger("rayfal").warning(
            "scoring: %d unlabelled row(s) not scored: unreadable image files, skipped "
            "(dataset.on_error: skip); the scoring workers' warnings name each row_id and "
            "path", skipped)
    elif reducer.rows_seen != total:
        raise RuntimeError(
            f"scoring saw {reducer.rows_seen} unlabelled rows but the pool has {total}: "
            "a shard was lost or duplicated"
        )
    return ScoringResult(
        reducer.result(), reducer.rows_seen, time.perf_counter() - t0, plan.size, actors,
        len(nodes),
    )
