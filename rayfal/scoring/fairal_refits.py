"""FairAL's per-candidate refits as a Ray Data job (the pool-scoring workload of a whole-pool
strategy whose heavy part is per candidate).

The labelled set, the fairness set and the current head are put in the object store once per
call and read once by every actor (:class:`RefitActor`); the candidates stream through the
actor pool in the chunks :func:`~rayfal.acquisition.fairal.fairal_fast` would use (one Arrow
block per chunk, ``batch_size=None``), so every candidate's ``F_k(x)`` is computed by exactly
the tensor program the in-process path runs on it and the result is identical bit for bit.
The driver keeps only the candidate table (ids, features for ``p(k|x)``) and the ``[N, K]``
result; it combines them with :func:`~rayfal.acquisition.fairal.scores.combine_scores` as the
in-process path does.

:func:`use_ray_refits` and :func:`ray_refit_scorer` are what the campaign layer uses to hand
this job to :class:`~rayfal.acquisition.fairal.FairALStrategy` (as a value: the strategy never
imports Ray): Ray compute when the job's ``scoring.compute`` is ``actors`` or ``tasks``, or
``auto`` with at least ``scoring.actor_min_rows`` pool rows; the actor pool sized by
:func:`~rayfal.scoring.per_row.actor_pool_size` (one whole CPU left free, as for pool scoring).
The refit actors compute on the CPU (float64, the in-process path's numbers bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from numpy.typing import ArrayLike

from rayfal.acquisition.fairal.refit import LogisticHead, RefitConfig
from rayfal.acquisition.fairal.scores import (
    FairALScores,
    _chunk_size,
    _finish,
    _per_label_chunk,
    _prepare,
)
from rayfal.config import ScoringConfig

CAND, CHUNK, CHUNK_LEN, X = "cand", "chunk", "chunk_len", "x"


class RefitActor:
    """Ray Data callable class: ``F_k(x)`` of whole chunks of candidates."""

    def __init__(self, *, shared_ref, refit: RefitConfig, measure: str, dtype: str,
                 threads: int) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        head, x_l, y_l, x_f, g_f, y_f = ray.get(shared_ref)
        self.dtype = getattr(torch, dtype)
        d = head.weight.shape[0]
        self.inp = _prepare(head, x_l, y_l, np.zeros((0, d)), x_f, g_f, y_f, measure,
                            self.dtype)
        self.refit = refit

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cand, chunk = batch[CAND], batch[CHUNK]
        x = batch[X]
        x = np.stack(x) if x.dtype == object else np.asarray(x)
        out = np.zeros((len(cand), self.inp.head.n_labels))
        for c in np.unique(chunk):
            rows = np.flatnonzero(chunk == c)
            if len(rows) != int(batch[CHUNK_LEN][rows[0]]):  # a chunk must arrive whole
                raise RuntimeError(f"FairAL refit chunk {c} split across batches "
                                   f"({len(rows)} of {batch[CHUNK_LEN][rows[0]]} rows)")
            xc = torch.as_tensor(x[rows], dtype=self.dtype)
            out[rows] = _per_label_chunk(self.inp, xc, self.refit)
        return {CAND: cand, "per_label": out}


def fairal_fast_ray(
    head: LogisticHead,
    x_labelled: ArrayLike,
    y_labelled: ArrayLike,
    x_cand: ArrayLike,
    x_fair: ArrayLike,
    groups_fair: ArrayLike,
    *,
    y_fair: ArrayLike | None = None,
    measure: str = "dp",
    refit: RefitConfig = RefitConfig(),  # noqa: B008 (frozen dataclass)
    alpha: float = 0.5,
    dtype: torch.dtype = torch.float64,
    chunk_size: int | None = None,
    max_elements: int = 1 << 22,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
) -> FairALScores:
    """:func:`~rayfal.acquisition.fairal.fairal_fast` with the refits on a Ray Data actor pool
    of ``actors`` x ``cpus_per_actor`` (a running Ray is used; the caller starts it). Same
    arguments, same result."""
    import ray
    import ray.data

    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure,
                   dtype)
    n, k = inp.x_c.shape[0], inp.head.n_labels
    size = _chunk_size(inp, refit, chunk_size, max_elements)
    per_label = np.zeros((n, k))
    if n:
        x_c = inp.x_c.numpy()
        blocks = []
        for c, start in enumerate(range(0, n, size)):
            xs = x_c[start : start + size]
            m = len(xs)
            blocks.append(pa.table({
                CAND: np.arange(start, start + m, dtype=np.int64),
                CHUNK: np.full(m, c, np.int64),
                CHUNK_LEN: np.full(m, m, np.int64),
                X: pa.FixedSizeListArray.from_arrays(pa.array(xs.reshape(-1)), xs.shape[1]),
            }))
        shared = (inp.head, inp.x_l.numpy(), inp.y_l.numpy(), np.asarray(x_fair),
                  np.asarray(groups_fair), None if y_fair is None else np.asarray(y_fair))
        shared_ref = ray.put(shared)
        ds = ray.data.from_arrow(blocks).map_batches(
            RefitActor, batch_size=None, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
            fn_constructor_kwargs=dict(shared_ref=shared_ref, refit=refit, measure=measure,
                                       dtype=str(dtype).removeprefix("torch."),
                                       threads=max(1, math.floor(cpus_per_actor))))
        seen = np.zeros(n, bool)
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            per_label[b[CAND]] = b["per_label"]
            seen[b[CAND]] = True
        if not seen.all():
            raise RuntimeError(f"FairAL refits: {int((~seen).sum())} candidates came back "
                               "without a result")
        del shared_ref
    return _finish(inp, per_label, alpha)


def use_ray_refits(cfg: ScoringConfig, pool_rows: int) -> bool:
    """Whether FairAL's refits go to Ray: ``scoring.compute`` ``actors``/``tasks``, or ``auto``
    with at least ``actor_min_rows`` pool rows (the threshold per-row scoring uses)."""
    return cfg.compute != "auto" or pool_rows >= cfg.actor_min_rows


def ray_refit_scorer(cfg: ScoringConfig, cluster: dict[str, float]
                     ) -> tuple[Callable[..., FairALScores], dict[str, Any]]:
    """:func:`fairal_fast_ray` bound to the actor pool the job's ``scoring`` section and the
    cluster's resources (``ray.cluster_resources()``) give, and a record of it."""
    from rayfal.scoring.per_row import actor_pool_size

    plan = actor_pool_size(cfg, cluster)
    fn = partial(fairal_fast_ray, actors=plan.size, cpus_per_actor=plan.cpus)
    return fn, {"refits": "ray_data", "refit_actors": plan.size,
                "refit_cpus_per_actor": plan.cpus}
