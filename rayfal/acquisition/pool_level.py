"""Pool-level strategies: selections that need the whole (sub)pool at once.

Per-row strategies (random, entropy, BALD, ...) score each unlabelled row independently, so the
driver streams them through Ray Data and keeps a bounded candidate table. Coreset (k-center on
embeddings), BADGE (k-means++ on gradient embeddings), FairAL (refits against a fairness set)
and PANDA (a Transformer over the pool, one forward pass) instead look at all candidates
together. They implement :class:`PoolStrategy`::

    select_pool(view: PoolView, budget: int) -> row_ids (int64, unique, unlabelled)

and are registered in the same ``STRATEGIES`` registry with ``pool_level = True``; the driver
calls :func:`select_round` for them instead of ``score_pool`` + ``select``.

:class:`PoolView` is the strategy's whole world (no Ray inside):

* ``unlabelled``: row_ids/groups of the unlabelled pool rows (O(N) ints); features, embeddings
  and class probabilities are produced in bounded chunks (``chunk_rows``) by
  :meth:`PoolView.iter_unlabelled` / :meth:`PoolView.gather` from the Parquet pool and the
  round's trained model (``model.embed`` = the trunk of a :class:`TwoStageModel`; for the
  linear model the features themselves);
* ``labelled``: the labelled rows' row_ids, features, labels, groups;
* ``fairness``: a labelled fairness/validation set (FairAL): a seeded sample of the data
  source's ``meta`` split when it has one (Adult: PANDA's D), else the labelled set;
* ``meta``: the pre-existing labelled data D (PANDA meta-training), or ``None``;
* ``oracle(row_ids) -> labels`` (FairAL's sequential mode), ``budget``, ``seed``, ``round``,
  ``n_rounds``, ``work_dir`` (the campaign directory) and ``shared_dir`` (the run directory,
  for state shared by campaigns such as a meta-trained policy).

Subsampling: every strategy takes ``subsample`` (rows of the unlabelled pool considered; a
seeded uniform sample by :func:`~rayfal.acquisition.base.row_uniform`, identical in every
round of a campaign, so it is reproducible and independent of file order).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from rayfal.acquisition.base import STRATEGIES, ScoreBatch, Strategy, row_uniform
from rayfal.data import schema as S

log = logging.getLogger("rayfal")

__all__ = [
    "LabelledSet", "PoolSelection", "PoolStrategy", "PoolView", "is_pool_level", "select_round",
    "subsample_ids",
]


def is_pool_level(name: str) -> bool:
    """Whether the registered strategy ``name`` needs the whole pool (:class:`PoolStrategy`)."""
    return bool(getattr(STRATEGIES.get(name), "pool_level", False))


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
    work_dir: Path | None = None
    shared_dir: Path | None = None
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


class PoolStrategy(Strategy):
    """Base class of pool-level strategies (registered in ``STRATEGIES``, ``pool_level``)."""

    pool_level: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True

    def score(self, batch: ScoreBatch) -> np.ndarray:
        raise TypeError(f"strategy '{self.name}' is pool-level: use select_pool(view, budget)")

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        """The ``budget`` row_ids to query; every registered pool-level strategy overrides it."""
        raise NotImplementedError(f"{type(self).__name__} must implement select_pool")

    def candidates(self, view: PoolView, size: int | None) -> np.ndarray:
        """The (sub)sampled unlabelled row_ids this strategy considers this round."""
        return subsample_ids(view.unlabelled_ids, size, self.seed, 0x5AB5 + self.round)


def _finish(strategy: PoolStrategy, view: PoolView, picked: np.ndarray, budget: int) -> np.ndarray:
    picked = np.asarray(picked, dtype=np.int64)
    if len(np.unique(picked)) != len(picked) or np.isin(picked, view.labelled.row_id).any():
        raise RuntimeError(f"pool-level strategy '{strategy.name}' selected repeated/labelled rows")
    want = min(budget, len(view.unlabelled_ids))
    if len(picked) > want:
        raise RuntimeError(f"strategy '{strategy.name}' returned {len(picked)} > {want} rows")
    return picked


# ----------------------------------------------------------------------------- the driver hook


def _sample_split(split: Any, size: int | None, seed: int, salt: int) -> LabelledSet:
    ids = subsample_ids(split.row_ids(), size, seed, salt)
    rows = split.take(ids, [split.feature_column, S.LABEL, S.GROUP])
    return LabelledSet(ids, S.to_model_input(rows[split.feature_column], split.input_shape),
                       rows[S.LABEL].astype(np.int64), rows[S.GROUP].astype(np.int64))


@dataclass
class PoolSelection:
    """What the driver gets back: ``candidates`` holds exactly the selected rows, ranked (so the
    strategy's ordinary ``select`` returns them in order), plus timing."""

    candidates: Any  # rayfal.acquisition.base.Candidates
    seconds: float
    nodes: int = 1


def select_round(campaign: Any, strategy: PoolStrategy, r: int, labelled_ids: np.ndarray,
                 data: dict[str, np.ndarray], round_dir: Path) -> PoolSelection:
    """Driver hook (``Campaign.round``): build the :class:`PoolView` for the round's model and
    labelled set, run ``strategy.select_pool`` and wrap the result as candidates."""
    from rayfal.acquisition.base import Candidates
    from rayfal.driver import schedule
    from rayfal.models.checkpoint import load_checkpoint

    ctx, cfg = campaign.ctx, campaign.ctx.cfg
    t0 = time.perf_counter()
    model, _ = load_checkpoint(round_dir)
    labelled = LabelledSet(np.asarray(labelled_ids, np.int64),
                           S.to_model_input(data["x"], ctx.pool.input_shape),
                           np.asarray(data["y"], np.int64), np.asarray(data["group"], np.int64))
    meta = fairness = None
    meta_split = _open_meta(cfg, ctx.run_dir)
    if meta_split is not None:
        if getattr(strategy, "needs_meta", False):
            meta = _sample_split(meta_split, getattr(strategy, "meta_size", None), 0, 0x3E7A)
        if getattr(strategy, "needs_fairness", False):
            fairness = _sample_split(meta_split, getattr(strategy, "fair_size", None),
                                     campaign.seed, 0xFA1)
    view = PoolView(
        pool=ctx.pool, labelled=labelled, model=model, budget=cfg.al.query_size,
        seed=campaign.seed, round=r, n_rounds=max(1, schedule(cfg, ctx.pool.num_rows)),
        fairness=fairness, meta=meta, oracle=campaign._oracle, work_dir=campaign.dir,
        shared_dir=ctx.run_dir, mc_samples=cfg.scoring.mc_samples,
    )
    selected = _finish(strategy, view, strategy.select_pool(view, cfg.al.query_size),
                       cfg.al.query_size)
    if view.info:
        (round_dir / "selection_info.json").write_text(json.dumps(view.info, default=float))
    groups = campaign._groups(selected) if len(selected) else np.zeros(0, np.int64)
    n = len(selected)
    cand = Candidates(selected, np.asarray(groups, np.int64),
                      np.arange(n, 0, -1, dtype=np.float64), np.zeros(n),
                      dict(sorted(ctx.pool.group_counts(exclude=labelled_ids).items())))
    # PANDA's meta-training (before round 0) is not selection time: reported separately
    seconds = time.perf_counter() - t0 - float(view.info.get("meta_train_seconds", 0.0))
    return PoolSelection(cand, seconds)


def _open_meta(cfg: Any, run_dir: Path) -> Any:
    if cfg.dataset.name != "adult":
        return None
    from rayfal.data.sources.adult import open_split

    return open_split(cfg.dataset, run_dir, "meta")
