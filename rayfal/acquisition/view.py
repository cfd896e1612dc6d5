"""What a whole-pool strategy sees: :class:`PoolView`, plus :class:`WholePoolStrategy`.

Per-row strategies (random, entropy, BALD, ...) score each unlabelled row independently, so the
campaign streams them through Ray Data and keeps a bounded candidate table. Coreset (k-center on
embeddings), BADGE (k-means++ on gradient embeddings), FairAL (refits against a fairness set)
and PANDA (a Transformer over the pool, one forward pass) instead look at all candidates
together. They are strategies of ``kind = "whole_pool"`` (:mod:`rayfal.acquisition.base`)::

    select_pool(view: PoolView, budget: int) -> row_ids (int64, unique, unlabelled)

:class:`PoolView` is the strategy's whole world, built by the campaign layer from values (no
Ray, no campaign objects inside):

* ``unlabelled``: row_ids/groups of the unlabelled pool rows (O(N) ints); features, embeddings
  and class probabilities are produced in bounded chunks (``chunk_rows``) by
  :meth:`PoolView.iter_unlabelled` / :meth:`PoolView.gather` from the Parquet pool and the
  round's trained model (``model.embed`` = the trunk of a :class:`TwoStageModel`; for the
  linear model the features themselves);
* ``labelled``: the labelled rows' row_ids, features, labels, groups;
* ``fairness``: a labelled fairness/validation set (``requires`` has ``fairness``);
* ``meta``: the pre-existing labelled data D (``meta``), or ``None``;
* ``policy``: a meta-trained policy (``policy``: PANDA), trained by the campaign layer;
* ``oracle(row_ids) -> labels`` (``oracle``: FairAL's sequential mode), ``budget``, ``seed``,
  ``round``, ``n_rounds`` and ``work_dir`` (a directory the strategy may keep state in, owned
  by the campaign: e.g. PANDA's one-shot ranking).

Subsampling: strategies take ``subsample`` (rows of the unlabelled pool considered; a seeded
uniform sample by :func:`~rayfal.acquisition.base.row_uniform`, identical in every round of a
campaign, so it is reproducible and independent of file order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from rayfal.acquisition.base import STRATEGIES, Strategy, row_uniform
from rayfal.data import schema as S

log = logging.getLogger("rayfal")

__all__ = ["LabelledSet", "PoolView", "WholePoolStrategy", "check_selection", "is_whole_pool",
           "subsample_ids"]


def is_whole_pool(name: str) -> bool:
    """Whether the registered strategy ``name`` is of kind ``whole_pool``."""
    return STRATEGIES.get(name).kind == "whole_pool"


def subsample_size(subsample: int | None, budget: int) -> int | None:
    """Candidates considered: ``subsample`` rows but at least ``budget`` (``None`` = all)."""
    return None if subsample is None else max(subsample, budget)


def subsample_ids(row_ids: np.ndarray, size: int | None, seed: int, salt: int = 0x5AB5) -> np.ndarray:
    """The ``size`` rows with the largest ``row_uniform(row_id; seed, salt)`` (all if ``None``
    or ``size >= N``), sorted by row_id. A pure function of (seed, salt, row set)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if size is None or size >= len(row_ids):
        return np.sort(row_ids)
    key = row_uniform(row_ids, seed, salt)
    return np.sort(row_ids[np.lexsort((row_ids, -key))[:size]])


@dataclass
class LabelledSet:
    row_id: np.ndarray
    x: np.ndarray  # model inputs [n, ...] float32
    y: np.ndarray
    group: np.ndarray


@dataclass
class PoolView:
    """What a pool-level strategy sees in one round (module docstring)."""

    pool: Any  # rayfal.data.pool.Pool
    labelled: LabelledSet
    model: torch.nn.Module | None
    budget: int
    seed: int
    round: int = 0
    n_rounds: int = 1
    fairness: LabelledSet | None = None
    meta: LabelledSet | None = None
    oracle: Callable[[np.ndarray], np.ndarray] | None = None
    policy: Any = None
    work_dir: Path | None = None
    chunk_rows: int = 8192
    mc_samples: int = 1
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = self.pool.row_ids()
        keep = ~np.isin(ids, self.labelled.row_id)
        self.unlabelled_ids = ids[keep]
        self.unlabelled_groups = self.pool.groups()[keep]

    # -------------------------------------------------------------- row access (bounded)
    def iter_unlabelled(self, row_ids: np.ndarray | None = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(row_id, group, x)`` chunks of at most ``chunk_rows`` unlabelled rows (or of the
        given ``row_ids``), streamed from the Parquet files; ``x`` are model inputs."""
        wanted = self.unlabelled_ids if row_ids is None else np.asarray(row_ids, np.int64)
        ds = pads.dataset(self.pool.files, schema=self.pool.schema, format="parquet")
        cols = [S.ROW_ID, S.GROUP, self.pool.feature_column]
        scanner = ds.scanner(columns=cols, filter=pc.field(S.ROW_ID).isin(wanted),
                             batch_size=self.chunk_rows)
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            rid = batch.column(S.ROW_ID).to_numpy().astype(np.int64)
            grp = batch.column(S.GROUP).to_numpy().astype(np.int64)
            x = S.to_model_input(S.column_to_numpy(batch.column(self.pool.feature_column)),
                                 self.pool.input_shape)
            yield rid, grp, x

    def gather(self, row_ids: np.ndarray, what: tuple[str, ...] = ("x",)) -> dict[str, np.ndarray]:
        """``row_id`` (sorted) plus the requested arrays for these rows: ``x`` (inputs),
        ``emb`` (model embeddings ``[n, D]``), ``probs`` (MC-mean class probabilities
        ``[n, C]``), ``mc`` (the MC samples ``[n, C, T]``), ``group``. Computed chunk by chunk;
        the result holds ``n`` rows."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("row_id", "group", *what)}
        for rid, grp, x in self.iter_unlabelled(row_ids):
            parts["row_id"].append(rid)
            parts["group"].append(grp)
            if "x" in what:
                parts["x"].append(x)
            if "emb" in what or "probs" in what or "mc" in what:
                emb, mc = self.model_outputs(x, rid)
                if "emb" in what:
                    parts["emb"].append(emb)
                if "probs" in what:
                    parts["probs"].append(mc.mean(axis=2))
                if "mc" in what:
                    parts["mc"].append(mc)
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
        order = np.argsort(out["row_id"], kind="stable")
        return {k: v[order] for k, v in out.items()}

    @torch.no_grad()
    def model_outputs(self, x: np.ndarray, row_ids: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (the model's trunk) ``[n, D]`` and MC class probabilities ``[n, C, T]`` of
        inputs ``x`` (MC-dropout masks keyed by ``row_ids``: independent of the chunking)."""
        from rayfal.models.predict import mc_probs

        if self.model is None:
            raise ValueError("this strategy needs the round's trained model")
        xt = torch.from_numpy(np.ascontiguousarray(x))
        self.model.eval()
        emb = self.model.embed(xt).reshape(len(x), -1).double().numpy()
        probs = mc_probs(self.model, xt, mc_samples=self.mc_samples,
                         generator_seed=self.seed, row_keys=row_ids)
        return emb, probs

    def labelled_embeddings(self) -> np.ndarray:
        return self.embed(self.labelled.x)

    @torch.no_grad()
    def embed(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise ValueError("this strategy needs the round's trained model")
        self.model.eval()
        out = []
        for s in range(0, len(x), self.chunk_rows):
            xt = torch.from_numpy(np.ascontiguousarray(x[s : s + self.chunk_rows]))
            out.append(self.model.embed(xt).reshape(len(xt), -1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


class WholePoolStrategy(Strategy):
    """Base class of whole-pool strategies: ``kind = "whole_pool"``, the round's model by
    default (``requires``); subclasses implement :meth:`select_pool`."""

    kind = "whole_pool"
    requires: ClassVar[frozenset[str]] = frozenset({"model"})

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        """The ``budget`` row_ids to query; every registered whole-pool strategy overrides it."""
        raise NotImplementedError(f"{type(self).__name__} must implement select_pool")

    def fairness_rows(self) -> int | None:
        """Rows of the fairness set the campaign samples for ``view.fairness`` (None = all)."""
        return None

    def meta_rows(self) -> int | None:
        """Rows of the meta split the campaign samples for ``view.meta`` (None = all)."""
        return None

    def candidates(self, view: PoolView, size: int | None) -> np.ndarray:
        """The (sub)sampled unlabelled row_ids this strategy considers this round."""
        return subsample_ids(view.unlabelled_ids, size, self.seed, 0x5AB5 + self.round)


def check_selection(strategy: Strategy, view: PoolView, picked: np.ndarray, budget: int
                    ) -> np.ndarray:
    """``picked`` as int64 after checking it holds at most ``budget`` unique unlabelled rows."""
    picked = np.asarray(picked, dtype=np.int64)
    if len(np.unique(picked)) != len(picked) or np.isin(picked, view.labelled.row_id).any():
        raise RuntimeError(f"whole-pool strategy '{strategy.name}' selected repeated/labelled rows")
    want = min(budget, len(view.unlabelled_ids))
    if len(picked) > want:
        raise RuntimeError(f"strategy '{strategy.name}' returned {len(picked)} > {want} rows")
    return picked


