"""The strategy protocol and the streaming, order-independent selection machinery.

A strategy turns a batch of unlabelled rows into one score per row (larger = query first) and
then picks ``budget`` row_ids from a small candidate table. Scoring runs batch by batch (in Ray
Data actors for big pools); the driver keeps, per group, only the best ``budget`` rows seen so
far (:class:`CandidateReducer`), so memory is O(groups x budget) whatever the pool size. Rows are
ranked by the total order (score desc, tie-break key desc, row_id asc) where the tie-break key
is a hash of (seed, round, row_id): the result never depends on shard order or batch sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rayfal.registry import Registry

STRATEGIES: Registry = Registry("strategy")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def row_uniform(row_ids: np.ndarray, *salt: int) -> np.ndarray:
    """A uniform [0, 1) number per row, a pure function of ``(salt..., row_id)``.

    Used for uniform sampling and tie-breaking: the same row gets the same number in every
    shard, batch and process, so random selection is reproducible and order-independent.
    """
    h = np.asarray(row_ids).astype(np.int64).view(np.uint64)
    for s in salt:
        h = _splitmix64(h ^ _splitmix64(np.full_like(h, np.uint64(s & 0xFFFFFFFFFFFFFFFF))))
    h = _splitmix64(h)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


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
    """Base class: subclasses set ``name``/``needs_probs`` and implement :meth:`score`.

    The default :meth:`select` takes the global top-``budget`` rows.
    """

    name: ClassVar[str] = ""
    needs_probs: ClassVar[bool] = False

    def __init__(self, *, seed: int, round: int = 0, **params: Any) -> None:
        if params:
            raise TypeError(f"strategy '{self.name}' takes no parameters {sorted(params)}")
        self.seed = int(seed)
        self.round = int(round)

    def tiebreak(self, row_ids: np.ndarray) -> np.ndarray:
        return row_uniform(row_ids, self.seed, self.round, 0x7431)

    def score(self, batch: ScoreBatch) -> np.ndarray:
        raise NotImplementedError

    def select(self, cand: Candidates, budget: int) -> np.ndarray:
        return cand.row_id[cand.order()[:budget]]


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
    prepare = getattr(strategy, "prepare_global", None)
    if prepare is not None:  # two-pass strategies: pass 1 = global statistics (JIN's Eq. 4)
        strategy = prepare(ScoreBatch(row_id[idx], group[idx],
                                      None if probs is None else probs[idx]))
    reducer = CandidateReducer(strategy, budget)
    for start in range(0, len(idx), batch_size):
        sl = idx[start : start + batch_size]
        batch = ScoreBatch(row_id[sl], group[sl], None if probs is None else probs[sl])
        reducer.add(batch.row_id, batch.group, strategy.score(batch))
    return strategy.select(reducer.result(), budget)
