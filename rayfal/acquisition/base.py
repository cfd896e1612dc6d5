"""The one strategy protocol and the streaming, order-independent selection machinery.

Every strategy declares what it is and what it needs, as class attributes (never discovered by
``getattr`` at run time):

* ``kind`` — how the campaign layer runs it:

  - ``"per_row"``: :meth:`Strategy.score` gives one score per row of a batch; the pool is
    streamed (Ray Data for big pools), a bounded :class:`CandidateReducer` keeps the best rows
    per group, and :meth:`Strategy.select` picks ``budget`` of them;
  - ``"two_pass"``: as per-row, but the scores need statistics over every scored row first
    (JIN's global z-normalisation, Eq. 4): pass 1 gathers them, pass 2 scores;
  - ``"whole_pool"``: :meth:`Strategy.select_pool` sees the whole (sub)pool at once through a
    :class:`~rayfal.acquisition.view.PoolView` (coreset, BADGE, FairAL, PANDA).

* ``requires`` — what the campaign layer must compute and pass in (:data:`REQUIREMENTS`):
  ``probs`` (MC-dropout probabilities in :class:`ScoreBatch`), ``worst_group`` (the round's
  ``z*``, keyword argument), ``model`` (the round's trained model, in the view),
  ``standard_model`` (a standard-trained ``M_S`` beside the campaign's model: JIN), ``meta``
  (pre-existing labelled data), ``fairness`` (a labelled fairness set), ``oracle`` (asking for
  labels during selection), ``policy`` (a meta-trained PANDA policy).
* ``Params`` — a pydantic model of the strategy's job-file parameters (``extra="forbid"``), so
  a job file is checked before any data or Ray exists; the instance holds them as
  ``self.params``.

A per-row strategy turns a batch of unlabelled rows into one score per row (larger = query
first) and then picks ``budget`` row_ids from a small candidate table. Scoring runs batch by batch (in Ray
Data actors for big pools); the driver keeps, per group, only the best ``budget`` rows seen so
far (:class:`CandidateReducer`), so memory is O(groups x budget) whatever the pool size. Rows are
ranked by the total order (score desc, tie-break key desc, row_id asc) where the tie-break key
is a hash of (seed, round, row_id): the result never depends on shard order or batch sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rayfal.hashing import row_uniform
from rayfal.registry import Registry

STRATEGIES: Registry = Registry("strategy")

StrategyKind = Literal["per_row", "two_pass", "whole_pool"]

#: what a strategy may declare in ``requires`` (the campaign layer supplies each)
REQUIREMENTS = frozenset({"probs", "worst_group", "model", "standard_model", "meta", "fairness",
                          "oracle", "policy"})


class StrategyParams(BaseModel):
    """Base of every strategy's ``Params``: unknown keys are errors; no parameters by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

@dataclass
class ScoreBatch:
    """Inputs of :meth:`Strategy.score` for one batch of unlabelled rows.

    ``probs`` holds MC-dropout class probabilities ``[n, C, T]`` when the strategy asks for
    them (``needs_probs``), else ``None``.
    """

    row_id: np.ndarray
    group: np.ndarray
    probs: np.ndarray | None = None


@dataclass
class Candidates:
    """What :meth:`Strategy.select` sees: the best rows per group, plus pool composition."""

    row_id: np.ndarray
    group: np.ndarray
    score: np.ndarray
    tiebreak: np.ndarray
    group_counts: Mapping[int, int]

    def order(self) -> np.ndarray:
        """Indices sorted by (score desc, tie-break desc, row_id asc)."""
        return np.lexsort((self.row_id, -self.tiebreak, -self.score))


class Strategy:
    """Base class (module docstring): subclasses set ``name``, ``summary``, ``kind``,
    ``requires`` and ``Params`` and implement :meth:`score` (per-row, two-pass) or
    :meth:`select_pool` (whole-pool).

    The default :meth:`select` takes the global top-``budget`` rows. ``needs_probs`` is derived
    from ``requires`` (the scorers read it).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kind: ClassVar[StrategyKind] = "per_row"
    requires: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    needs_probs: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.requires) - REQUIREMENTS
        if unknown:
            raise TypeError(f"{cls.__name__}.requires has unknown entries {sorted(unknown)}")
        if cls.kind not in ("per_row", "two_pass", "whole_pool"):
            raise TypeError(f"{cls.__name__}.kind must be per_row|two_pass|whole_pool")
        cls.needs_probs = "probs" in cls.requires

    def __init__(self, *, seed: int, round: int = 0, **params: Any) -> None:
        self.params = validate_params(type(self), params)
        self.seed = int(seed)
        self.round = int(round)

    def tiebreak(self, row_ids: np.ndarray) -> np.ndarray:
        return row_uniform(row_ids, self.seed, self.round, 0x7431)

    def score(self, batch: ScoreBatch) -> np.ndarray:
        """Per-row and two-pass strategies: one score per row of ``batch``."""
        raise TypeError(f"strategy '{self.name}' is {self.kind}: it has no per-row score")

    def select(self, cand: Candidates, budget: int) -> np.ndarray:
        """Per-row and two-pass strategies: ``budget`` row_ids from the candidate table."""
        return cand.row_id[cand.order()[:budget]]

    def select_pool(self, view: Any, budget: int) -> np.ndarray:
        """Whole-pool strategies: ``budget`` unlabelled row_ids from a
        :class:`~rayfal.acquisition.view.PoolView`."""
        raise TypeError(f"strategy '{self.name}' is {self.kind}: it has no select_pool")


class StrategyParamsError(ValueError):
    """A strategy's parameters are invalid; the message names the strategy and the keys."""


def validate_params(cls: type[Strategy], params: Mapping[str, Any]) -> StrategyParams:
    """``cls.Params`` validated from ``params``; errors become one :class:`StrategyParamsError`
    line per problem naming ``params.<key>``, the bad value and what is allowed."""
    from pydantic import ValidationError

    try:
        return cls.Params.model_validate(dict(params))
    except ValidationError as exc:
        raise StrategyParamsError(
            f"strategy '{cls.name}': " + "; ".join(_pydantic_line(e, cls) for e in exc.errors())
        ) from None


def _pydantic_line(err: Mapping[str, Any], cls: type[Strategy]) -> str:
    key = ".".join(str(p) for p in err.get("loc", ())) or "params"
    if err.get("type") == "extra_forbidden":
        allowed = ", ".join(sorted(cls.Params.model_fields)) or "none"
        return f"unknown parameter '{key}' (allowed: {allowed})"
    if err.get("type") == "missing":
        return f"params.{key}: required parameter missing"
    return f"params.{key}={err.get('input')!r}: {err.get('msg')}"


class CandidateReducer:
    """Streaming per-group top-``k`` under the strategy's total order (bounded memory)."""

    def __init__(self, strategy: Strategy, k: int) -> None:
        self.strategy = strategy
        self.k = int(k)
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._buffered = 0
        self.group_counts: dict[int, int] = {}
        self.rows_seen = 0

    def add(self, row_id: np.ndarray, group: np.ndarray, score: np.ndarray) -> None:
        row_id = np.asarray(row_id, dtype=np.int64)
        group = np.asarray(group, dtype=np.int64)
        score = np.asarray(score, dtype=np.float64)
        if not (len(row_id) == len(group) == len(score)):
            raise ValueError("row_id, group and score lengths differ")
        if len(row_id) == 0:
            return
        if not np.all(np.isfinite(score)):
            bad = row_id[~np.isfinite(score)][:10].tolist()
            raise ValueError(f"strategy '{self.strategy.name}' gave non-finite scores for rows {bad}")
        self.rows_seen += len(row_id)
        gs, cs = np.unique(group, return_counts=True)
        for g, c in zip(gs.tolist(), cs.tolist(), strict=True):
            self.group_counts[g] = self.group_counts.get(g, 0) + c
        self._parts.append((row_id, group, score, self.strategy.tiebreak(row_id)))
        self._buffered += len(row_id)
        if self._buffered > max(8 * self.k * max(len(self.group_counts), 1), 100_000):
            self._compact()

    def _compact(self) -> None:
        if not self._parts:
            return
        row_id, group, score, tie = (np.concatenate(a) for a in zip(*self._parts, strict=True))
        order = np.lexsort((row_id, -tie, -score, group))
        row_id, group, score, tie = row_id[order], group[order], score[order], tie[order]
        # rank within group: position minus the group's first position
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, len(group)]))
        keep = (np.arange(len(group)) - first) < self.k
        self._parts = [(row_id[keep], group[keep], score[keep], tie[keep])]
        self._buffered = int(keep.sum())

    def result(self) -> Candidates:
        self._compact()
        if self._parts:
            row_id, group, score, tie = self._parts[0]
        else:
            row_id = group = np.zeros(0, np.int64)
            score = tie = np.zeros(0, np.float64)
        return Candidates(row_id, group, score, tie, dict(sorted(self.group_counts.items())))


def make_strategy(name: str, *, seed: int, round: int = 0, **params: Any) -> Strategy:
    """Instantiate a registered strategy by name."""
    return STRATEGIES.get(name)(seed=seed, round=round, **params)


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy class ``name`` (``KeyError`` listing the known names)."""
    return STRATEGIES.get(name)


def select_in_memory(
    strategy: Strategy,
    row_id: np.ndarray,
    group: np.ndarray,
    budget: int,
    *,
    probs: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Reference path without Ray: score in batches, reduce, select (used by tests and tools).

    Rows in ``labelled`` are skipped. Returns at most ``budget`` unique unlabelled row_ids
    (fewer when fewer are unlabelled).
    """
    row_id = np.asarray(row_id, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    keep = np.ones(len(row_id), bool) if labelled is None else ~np.isin(row_id, labelled)
    idx = np.flatnonzero(keep)
    if strategy.kind == "whole_pool":
        raise TypeError(f"strategy '{strategy.name}' is whole_pool: use select_pool(view, budget)")
    if strategy.kind == "two_pass":  # pass 1 = global statistics (JIN's Eq. 4)
        strategy = strategy.prepare_global(ScoreBatch(row_id[idx], group[idx],
                                                      None if probs is None else probs[idx]))
    reducer = CandidateReducer(strategy, budget)
    for start in range(0, len(idx), batch_size):
        sl = idx[start : start + batch_size]
        batch = ScoreBatch(row_id[sl], group[sl], None if probs is None else probs[sl])
        reducer.add(batch.row_id, batch.group, strategy.score(batch))
    return strategy.select(reducer.result(), budget)
