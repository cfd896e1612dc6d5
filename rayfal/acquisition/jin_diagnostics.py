"""Per-round diagnostics of JIN (FRAL, Wu et al. 2023): the pure maths behind the record fields
that test the paper's claims (no Ray, no campaign state; the campaign layer calls these).

* :func:`spearman` — Spearman's rank correlation (average ranks for ties), used for the
  correlation of the robust inconsistency ``I_rob`` (Eq. 3) with the robust model's confidence
  ``max_c p(x, M_R)`` over the scored rows: strongly negative means that JIN's robust term
  mostly re-ranks by (low) confidence, i.e. behaves like uncertainty sampling inside ``z*``.
* :func:`pick_overlap` — the Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of two picks, e.g. JIN's
  query and the query G-RAND would make from the same state (same labelled set, ``z*``, seed
  and round; G-RAND's own seeded uniform keys); :func:`chance_jaccard` is its level for two
  independent uniform picks from the same rows.
* :func:`share_in_group` — the share of a pick that lies in group ``z*`` (1 for G-RAND
  whenever ``z*`` has at least ``B`` unlabelled rows).
* :func:`clean_accuracy` — accuracy overall and per group from predictions (for the premise
  of Eq. 2: the standard model ``M_S`` is more accurate on clean inputs than ``M_R``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["average_ranks", "chance_jaccard", "clean_accuracy", "pick_overlap",
           "share_in_group", "spearman"]


def average_ranks(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n of ``values`` (1-D), ties sharing the mean of their ranks (float64)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), np.float64)
    ranks[order] = np.arange(1, len(v) + 1, dtype=np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rho of two equal-length 1-D arrays: the Pearson correlation of their average
    ranks. NaN with fewer than 2 pairs, or when either side is constant (no ranking); raises on
    unequal lengths or non-finite values."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal lengths, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("spearman: values must be finite")
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt(np.sum(ra * ra) * np.sum(rb * rb)))
    if den == 0.0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / den, -1.0, 1.0))


def pick_overlap(a: ArrayLike, b: ArrayLike) -> float:
    """Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of two sets of row ids (NaN when both empty)."""
    sa = set(np.asarray(a, dtype=np.int64).ravel().tolist())
    sb = set(np.asarray(b, dtype=np.int64).ravel().tolist())
    union = sa | sb
    return float(len(sa & sb) / len(union)) if union else float("nan")


def chance_jaccard(n: int, a: int, b: int) -> float:
    """The chance level of :func:`pick_overlap` for two independent uniform picks of ``a`` and
    ``b`` rows out of the same ``n``: the Jaccard overlap at the expected intersection
    ``k = a·b/n``, ``k / (a + b - k)`` (NaN when ``n`` or ``a + b`` is 0)."""
    if n <= 0 or a + b <= 0:
        return float("nan")
    if not (0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"chance_jaccard: picks of {a} and {b} rows out of {n}")
    k = a * b / n
    return float(k / (a + b - k))


def share_in_group(groups: ArrayLike, z: int) -> float:
    """The share of the picked rows (their groups, ``groups``) that lie in group ``z``
    (NaN for an empty pick)."""
    g = np.asarray(groups, dtype=np.int64).ravel()
    return float(np.mean(g == int(z))) if len(g) else float("nan")


def clean_accuracy(y: ArrayLike, pred: ArrayLike, group: ArrayLike, prefix: str
                   ) -> dict[str, float]:
    """``{prefix}accuracy`` over all rows and ``{prefix}acc_group_<g>`` per group, from class
    predictions ``pred`` of labels ``y``."""
    y, pred, group = (np.asarray(v).ravel() for v in (y, pred, group))
    if not (len(y) == len(pred) == len(group)) or len(y) == 0:
        raise ValueError(f"clean_accuracy: need equal, non-zero lengths, got {len(y)}, "
                         f"{len(pred)}, {len(group)}")
    out = {f"{prefix}accuracy": float(np.mean(pred == y))}
    for g in np.unique(group).tolist():
        m = group == g
        out[f"{prefix}acc_group_{int(g)}"] = float(np.mean(pred[m] == y[m]))
    return out
