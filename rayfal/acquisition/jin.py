"""JIN — Fair Robust Active Learning by Joint INconsistency (Wu et al. 2023): the pure maths.

For the unlabelled rows ``X`` of the worst group ``z*`` (Algorithm 1, line 6):

* Eq. 2, standard inconsistency: ``I_std(x) = KL(p(x, M_S) ‖ p(x, M_R))`` between a standard
  model ``M_S`` and the robust model ``M_R`` on the benign input;
* Eq. 3, robust inconsistency: ``I_rob(x) = KL(p(x, M_R) ‖ p(A(x, eps), M_R))`` between the
  robust model's predictions on the benign and the attacked input;
* Eq. 4: ``I(x) = N(I_std(x)) + N(I_rob(x))`` with ``N`` the z-normalisation to mean 0 and
  standard deviation 1 *over the scored rows* — i.e. global statistics over every shard of the
  pool, never per shard or per batch. Then the top-``B`` rows are queried (line 8).

Scoring at scale is therefore two passes: (1) compute ``I_std``/``I_rob`` per shard and fold
them into mergeable :class:`RunningMoments` (Chan et al.'s parallel algorithm), merge them over
shards; (2) :func:`jin_scores` with the merged moments. The scores do not depend on the shard
split (up to floating-point rounding of the merged moments).

Conventions: KL uses the natural log, ``0·log 0 = 0``, and floors the second argument at
``KL_FLOOR`` (so a class that the first distribution gives mass and the second gives none costs a
large finite amount rather than ``inf``); tiny negative values from rounding are clipped to 0.
MC samples ``[N, C, T]`` are averaged to the predictive distribution first. ``N(·)`` uses the
population standard deviation (ddof = 0); if it is 0 (all scored rows share one value) the term
is 0 for every row (it carries no ranking information).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from rayfal.acquisition.base import STRATEGIES, ScoreBatch, StrategyParams
from rayfal.acquisition.scores import mean_probs
from rayfal.acquisition.worst_group import WorstGroupStrategy

__all__ = [
    "KL_FLOOR",
    "JinStrategy",
    "JinStdStrategy",
    "JinRobStrategy",
    "RunningMoments",
    "jin_terms",
    "inconsistency_rob",
    "inconsistency_std",
    "jin_scores",
    "kl_divergence",
    "z_normalize",
]

KL_FLOOR = 1e-12


def kl_divergence(p: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Row-wise ``KL(p ‖ q) = Σ_c p_c (log p_c - log q_c)`` for ``[N, C]`` (or MC ``[N, C, T]``,
    averaged over ``T``) probabilities; returns ``[N]`` float64 >= 0."""
    p, q = mean_probs(p), mean_probs(q)
    if p.shape != q.shape:
        raise ValueError(f"KL needs equal shapes, got {p.shape} and {q.shape}")
    safe_p = np.where(p > 0, p, 1.0)
    terms = np.where(p > 0, p * (np.log(safe_p) - np.log(np.maximum(q, KL_FLOOR))), 0.0)
    return np.maximum(terms.sum(axis=1), 0.0)


def inconsistency_std(p_s: ArrayLike, p_r: ArrayLike) -> np.ndarray:
    """JIN's standard inconsistency (Eq. 2): ``KL(p(x, M_S) ‖ p(x, M_R))`` per row."""
    return kl_divergence(p_s, p_r)


def inconsistency_rob(p_r: ArrayLike, p_r_adv: ArrayLike) -> np.ndarray:
    """JIN's robust inconsistency (Eq. 3): ``KL(p(x, M_R) ‖ p(A(x, eps), M_R))`` per row."""
    return kl_divergence(p_r, p_r_adv)


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations (``M2``) of a stream of values; mergeable.

    ``combine`` is Chan, Golub & LeVeque's pairwise update, so shards can be summarised
    independently (in any order or grouping) and merged.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: ArrayLike) -> RunningMoments:
        v = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise ValueError("RunningMoments: values must be finite (found NaN or inf)")
        if len(v) == 0:
            return cls()
        mean = float(v.mean())
        return cls(len(v), mean, float(np.sum((v - mean) ** 2)))

    def combine(self, other: RunningMoments) -> RunningMoments:
        """The moments of the union of both streams (neither input is modified)."""
        if other.count == 0:
            return RunningMoments(self.count, self.mean, self.m2)
        if self.count == 0:
            return RunningMoments(other.count, other.mean, other.m2)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return RunningMoments(n, mean, m2)

    __add__ = combine

    def update(self, values: ArrayLike) -> RunningMoments:
        """Fold ``values`` in (in place); returns ``self``."""
        merged = self.combine(RunningMoments.of(values))
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2
        return self

    @property
    def variance(self) -> float:
        """Population variance (ddof = 0); NaN when empty."""
        return self.m2 / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.variance, 0.0))) if self.count else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {"count": int(self.count), "mean": float(self.mean), "m2": float(self.m2)}

    @classmethod
    def from_dict(cls, d: dict) -> RunningMoments:
        return cls(int(d["count"]), float(d["mean"]), float(d["m2"]))


def z_normalize(values: ArrayLike, moments: RunningMoments) -> np.ndarray:
    """``N(v) = (v - mean) / std`` with the given (global) moments; 0 where std == 0."""
    if moments.count == 0:
        raise ValueError("cannot z-normalise with empty moments (no scored rows)")
    v = np.asarray(values, dtype=np.float64)
    std = moments.std
    if std == 0.0:
        return np.zeros_like(v)
    return (v - moments.mean) / std


def jin_scores(
    i_std: ArrayLike,
    i_rob: ArrayLike,
    moments_std: RunningMoments,
    moments_rob: RunningMoments,
) -> np.ndarray:
    """JIN's joint inconsistency (Eq. 4): ``N(I_std) + N(I_rob)`` with *global* moments.

    ``moments_*`` must summarise the same two quantities over all scored rows (every shard);
    normalising with per-shard moments would make scores incomparable across shards.
    """
    i_std = np.asarray(i_std, dtype=np.float64)
    i_rob = np.asarray(i_rob, dtype=np.float64)
    if i_std.shape != i_rob.shape:
        raise ValueError(f"I_std and I_rob shapes differ: {i_std.shape} vs {i_rob.shape}")
    return z_normalize(i_std, moments_std) + z_normalize(i_rob, moments_rob)


# ----------------------------------------------------------------------------- the strategies

#: the score of an unlabelled row outside ``z*`` (never scored, Algorithm 1 line 6): such rows
#: rank below every row of ``z*`` and, among themselves, by the uniform tie-break key only.
OUTSIDE_SCORE = -1e30


def jin_terms(stacked: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(I_std, I_rob)`` (Eq. 2, 3) from JIN's stacked distributions ``[N, C, 3]``: along the
    last axis ``p(x, M_S)``, ``p(x, M_R)`` and ``p(A(x, eps), M_R)``."""
    arr = np.asarray(stacked, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError("JIN needs probs stacked as [N, C, 3] = (p(x, M_S), p(x, M_R), "
                         f"p(A(x), M_R)), got shape {arr.shape}")
    p_s, p_r, p_adv = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2]
    return inconsistency_std(p_s, p_r), inconsistency_rob(p_r, p_adv)


class JinParams(StrategyParams):
    """JIN's attack for the robust inconsistency (Eq. 3): L-inf PGD of radius ``eps``, step
    ``alpha``, ``steps`` steps; ``attack_loss`` ``kl`` (label-free, KL(p_R(x) ‖ p_R(x'))) or
    ``ce`` (against M_R's predicted label)."""

    eps: float = Field(8 / 255, ge=0)
    alpha: float = Field(2 / 255, gt=0)
    steps: int = Field(5, ge=0)
    attack_loss: Literal["kl", "ce"] = "kl"


@STRATEGIES.register("jin")
class JinStrategy(WorstGroupStrategy):
    """FRAL's JIN (Algorithm 1): ``I = N(I_std) + N(I_rob)`` (Eq. 4) on the unlabelled rows of the
    worst group ``z*`` (parameter ``worst_group``; all rows when ``None``), top-``B`` queried.

    Two passes, as Eq. 4 needs statistics over *all* scored rows: pass 1 computes the raw terms
    and their :class:`RunningMoments` (:meth:`prepare_global` in memory,
    :mod:`rayfal.scoring.two_pass` on Ray Data, merged over shards); pass 2 scores with those
    global moments (parameters ``moments_std``/``moments_rob``, ``{count, mean, m2}`` dicts).
    Scoring without them raises: a per-batch normalisation would be wrong.

    ``score`` takes ``probs`` stacked ``[N, C, 3]`` (see :func:`jin_terms`). Rows outside
    ``z*`` get :data:`OUTSIDE_SCORE`, so they are only used to fill a query when ``z*`` has
    fewer than ``B`` unlabelled rows (uniformly at random, by the tie-break key).
    Attack parameters for the Ray scorer: ``eps``, ``alpha``, ``steps`` and ``attack_loss``
    (``kl``: maximise KL(p_R(x) ‖ p_R(x')), label-free; ``ce``: cross-entropy against the
    robust model's predicted label, as the rows are unlabelled).
    """

    name = "jin"
    summary = "FRAL's JIN: z-normalised standard + robust inconsistency in z* (Eq. 2-4)"
    #: two passes (global z-normalisation); the campaign layer trains a standard model M_S
    #: beside the robust M_R and scores with :mod:`rayfal.scoring.two_pass`
    kind = "two_pass"
    requires = frozenset({"probs", "worst_group", "standard_model"})
    Params = JinParams
    terms: ClassVar[tuple[str, ...]] = ("std", "rob")

    def __init__(self, *, seed: int, round: int = 0, worst_group: int | None = None,
                 moments_std: dict | None = None, moments_rob: dict | None = None,
                 **params: Any) -> None:
        super().__init__(seed=seed, round=round, worst_group=worst_group, **params)
        p = self.params
        self.attack = {"eps": float(p.eps), "alpha": float(p.alpha), "steps": int(p.steps),
                       "loss": p.attack_loss}
        self.moments = {
            "std": None if moments_std is None else RunningMoments.from_dict(moments_std),
            "rob": None if moments_rob is None else RunningMoments.from_dict(moments_rob),
        }

    def in_scope(self, group: np.ndarray) -> np.ndarray:
        """Rows JIN scores: those of ``z*`` (Algorithm 1, line 6), all when ``z*`` is unknown."""
        group = np.asarray(group)
        if self.worst_group is None:
            return np.ones(len(group), bool)
        return group == self.worst_group

    def combine(self, i_std: ArrayLike, i_rob: ArrayLike) -> np.ndarray:
        """Eq. 4 restricted to this strategy's terms, with the global moments."""
        missing = [t for t in self.terms if self.moments[t] is None or self.moments[t].count == 0]
        if missing:
            raise ValueError(f"strategy '{self.name}' needs the global moments of I_{missing[0]} "
                             "over all scored rows (pass 1: prepare_global / rayfal.scoring.two_pass)")
        raw = {"std": np.asarray(i_std, np.float64), "rob": np.asarray(i_rob, np.float64)}
        if "std" in self.terms and "rob" in self.terms:
            return jin_scores(raw["std"], raw["rob"], self.moments["std"], self.moments["rob"])
        (t,) = self.terms
        return z_normalize(raw[t], self.moments[t])

    def with_moments(self, moments_std: RunningMoments, moments_rob: RunningMoments
                     ) -> JinStrategy:
        """A copy of this strategy that scores with the given global moments."""
        new = copy.copy(self)
        new.moments = {"std": moments_std, "rob": moments_rob}
        return new

    def _check(self, batch: ScoreBatch) -> None:
        if batch.probs is None:
            raise ValueError(f"strategy '{self.name}' needs model probabilities "
                             "(stacked [N, C, 3]: M_S, M_R, M_R on attacked inputs)")

    def prepare_global(self, batch: ScoreBatch) -> JinStrategy:
        """Pass 1 over every row to be scored: the moments of the raw terms over the in-scope
        rows (the unlabelled rows of ``z*``); returns the strategy ready for pass 2."""
        self._check(batch)
        keep = self.in_scope(batch.group)
        i_std, i_rob = jin_terms(np.asarray(batch.probs)[keep])
        return self.with_moments(RunningMoments.of(i_std), RunningMoments.of(i_rob))

    def score(self, batch: ScoreBatch) -> np.ndarray:
        self._check(batch)
        keep = self.in_scope(batch.group)
        out = np.full(len(batch.row_id), OUTSIDE_SCORE)
        if keep.any():
            i_std, i_rob = jin_terms(np.asarray(batch.probs)[keep])
            out[keep] = self.combine(i_std, i_rob)
        return out


@STRATEGIES.register("jin_std")
class JinStdStrategy(JinStrategy):
    """JIN's ablation "S" (Table 3): only the standard inconsistency, ``N(I_std)``."""

    name = "jin_std"
    summary = "JIN ablation S (Table 3): the standard inconsistency only"
    terms = ("std",)


@STRATEGIES.register("jin_rob")
class JinRobStrategy(JinStrategy):
    """JIN's ablation "R" (Table 3): only the robust inconsistency, ``N(I_rob)``."""

    name = "jin_rob"
    summary = "JIN ablation R (Table 3): the robust inconsistency only"
    terms = ("rob",)
