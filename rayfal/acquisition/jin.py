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

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from rayfal.acquisition.scores import mean_probs

__all__ = [
    "KL_FLOOR",
    "RunningMoments",
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
