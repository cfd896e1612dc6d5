"""Pareto fronts and best-trial selection (plain numpy, no Ray, no Optuna).

Why not Optuna's ``study.best_trials`` / ``study.best_trial``: :mod:`rayfal.tune.results`
selects on its trials table (a DataFrame whose metrics come from the campaigns' round records,
usable without a study), and it differs from Optuna on purpose in two places:

* values closer than ``atol`` are ties (an accuracy gap ``max - min`` of equal fractions
  differs in the last bits depending on the groups it came from); Optuna compares exactly;
* with a constraint that no trial meets, :func:`best_index` returns the least violating trial
  (flagged in the results) where ``study.best_trial`` raises ``ValueError``.

Otherwise they agree: ``tests/test_tune_space.py`` checks the front and the best trial against
Optuna's on hand-made studies (ties, duplicates, pruned, failed and infeasible trials), with
Optuna's feasibility rule (every constraint value ``<= 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_min(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Flip 'max' columns so every column is minimised."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(modes):
        raise ValueError(f"points must be [N, {len(modes)}], got shape {pts.shape}")
    bad = [m for m in modes if m not in ("max", "min")]
    if bad:
        raise ValueError(f"modes must be 'max' or 'min', got {bad}")
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return pts * sign


def dominates(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    """``a`` dominates ``b`` (both already in minimisation form): no worse everywhere, better
    somewhere by more than ``atol`` (differences within ``atol`` are ties)."""
    return bool(np.all(a <= b + atol) and np.any(a < b - atol))


def non_dominated(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str],
                  atol: float = 1e-9) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` under ``modes``.

    Values closer than ``atol`` are ties (metrics such as ``max - min`` of accuracies differ in
    the last bits for equal fractions). Rows with a NaN are never on the front. Duplicated
    points are all kept (none dominates the other). O(N^2), fine for a search's trials.
    """
    pts = _as_min(np.asarray(points, dtype=float), modes)
    finite = np.all(np.isfinite(pts), axis=1)
    keep = []
    for i in np.flatnonzero(finite):
        others = pts[finite]
        dominated = np.any(np.all(others <= pts[i] + atol, axis=1)
                           & np.any(others < pts[i] - atol, axis=1))
        if not dominated:
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def best_index(values: np.ndarray, mode: str, violation: np.ndarray | None = None) -> int | None:
    """The best row of a single objective: the best value among feasible rows
    (``violation <= 0``); if none is feasible, the least violating row. ``None`` if no finite
    value exists. Ties go to the lowest index."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if not finite.any():
        return None
    viol = np.zeros_like(v) if violation is None else np.asarray(violation, dtype=float)
    feasible = finite & (viol <= 0)
    if feasible.any():
        cand = np.flatnonzero(feasible)
        vals = v[cand] if mode == "min" else -v[cand]
        return int(cand[np.argmin(vals)])
    cand = np.flatnonzero(finite)
    return int(cand[np.argmin(viol[cand])])
