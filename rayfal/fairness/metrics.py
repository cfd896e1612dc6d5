"""Group-fairness metrics on 1-D label / prediction / group arrays (pure numpy).

Conventions (shared by every function here):

* ``groups`` may hold ints or strings (any mutually comparable hashable values); dict results
  are keyed by the group values as given (numpy scalars become the matching Python scalar),
  in sorted order.
* Accuracy metrics accept any labels (compared with ``==``). Rate-based metrics (selection
  rate, TPR, FPR) require binary ``{0, 1}`` values (bools and ``0.0``/``1.0`` are accepted).
* With a single group every disparity is ``0.0`` (there is nothing to compare).
* A group with no positives (``y_true == 1``) is skipped for the TPR, and one with no negatives
  is skipped for the FPR (its rate is undefined). If no group (or only one) has a defined rate,
  that gap is ``0.0``. This is where rayfal *intentionally differs from fairlearn*: fairlearn's
  ``true_positive_rate`` / ``false_positive_rate`` return ``0.0`` for such a group (sklearn's
  ``zero_division``), so its gaps count the undefined rate as 0. When every group has both
  positives and negatives the two agree (``tests/test_metrics.py`` checks both cases).
* fairlearn counterparts (checked to 1e-12 in ``tests/test_metrics.py``):
  :func:`accuracy_by_group` = ``MetricFrame(accuracy_score).by_group``,
  :func:`worst_group_accuracy` = ``.group_min()``, :func:`accuracy_gap` = ``.difference()``;
  :func:`demographic_parity_difference`, :func:`equal_opportunity_difference` and
  :func:`equalized_odds_difference` = fairlearn's functions of the same name (default
  ``method="between_groups"``); :func:`panda_demographic_parity` /
  :func:`panda_equalized_odds` = the same fairlearn functions with ``method="to_overall"``.
* Invalid inputs raise ``ValueError``: arrays not 1-D, empty, of different lengths, containing
  NaN/None, or non-binary where binary is required.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accuracy_by_group",
    "accuracy_gap",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "error_rate_balance",
    "fairness_report",
    "panda_demographic_parity",
    "panda_equalized_odds",
    "predictive_parity",
    "worst_group_accuracy",
]


# --------------------------------------------------------------------------- validation


def _has_nan(arr: np.ndarray) -> bool:
    if arr.dtype.kind in "fc":
        return bool(np.isnan(arr).any())
    if arr.dtype.kind == "O":
        return any(v is None or (isinstance(v, float | np.floating) and np.isnan(v)) for v in arr)
    return False


def _validate(**arrays: ArrayLike) -> dict[str, np.ndarray]:
    """Convert to numpy; check 1-D, non-empty, no NaN and equal lengths (names in messages)."""
    out: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name} is empty")
        if _has_nan(arr):
            raise ValueError(f"{name} contains NaN/None values")
        out[name] = arr
    lengths = {name: arr.shape[0] for name, arr in out.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name} has length {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {desc}")
    return out


def _non_binary_values(arr: np.ndarray) -> list:
    """The distinct values of ``arr`` that are not 0 or 1 (empty list if binary)."""
    if arr.dtype.kind == "b":
        return []
    if arr.dtype.kind not in "iuf":  # strings / objects: keep first-seen order, no sorting
        return [_py(v) for v in dict.fromkeys(arr.tolist()) if v not in (0, 1)]
    return [_py(v) for v in np.unique(arr) if v not in (0, 1)]


def _binary(name: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` as float64 0/1, or ``ValueError`` naming the offending values."""
    bad = _non_binary_values(arr)
    if bad:
        raise ValueError(f"{name} must be binary {{0, 1}}; found non-binary values {bad}")
    return arr.astype(np.float64)


def _py(v: object) -> Hashable:
    return v.item() if isinstance(v, np.generic) else v  # type: ignore[return-value]


def _group_index(groups: np.ndarray) -> tuple[list[Hashable], np.ndarray]:
    """Sorted distinct group values (as Python scalars) and each row's index into them."""
    try:
        keys, inverse = np.unique(groups, return_inverse=True)
    except TypeError as err:
        raise ValueError(f"groups must be mutually comparable values: {err}") from err
    return [_py(k) for k in keys], inverse.reshape(-1)


def _rates(values: np.ndarray, inverse: np.ndarray, n_groups: int, mask: np.ndarray) -> np.ndarray:
    """Per-group mean of ``values`` over rows in ``mask``; NaN for groups with no such rows."""
    counts = np.bincount(inverse[mask], minlength=n_groups)
    sums = np.bincount(inverse[mask], weights=values[mask], minlength=n_groups)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _gap(rates: np.ndarray) -> float:
    """``max - min`` over the defined (non-NaN) rates; 0.0 if fewer than two are defined."""
    defined = rates[~np.isnan(rates)]
    if defined.size < 2:
        return 0.0
    return float(defined.max() - defined.min())


def _binary_inputs(
    y_true: ArrayLike | None, y_pred: ArrayLike, groups: ArrayLike
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, int]:
    """Validate; return (binary y_true or None, binary y_pred, group index, number of groups)."""
    arrays = {"y_pred": y_pred, "groups": groups}
    if y_true is not None:
        arrays = {"y_true": y_true, **arrays}
    v = _validate(**arrays)
    yt = _binary("y_true", v["y_true"]) if y_true is not None else None
    yp = _binary("y_pred", v["y_pred"])
    keys, inverse = _group_index(v["groups"])
    return yt, yp, inverse, len(keys)


# --------------------------------------------------------------------------- accuracy


def accuracy_by_group(
    y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike
) -> dict[Hashable, float]:
    """Per-group accuracy ``A_a = P(y_hat = y | g = a)`` (any labels, compared with ``==``)."""
    v = _validate(y_true=y_true, y_pred=y_pred, groups=groups)
    keys, inverse = _group_index(v["groups"])
    correct = (v["y_true"] == v["y_pred"]).astype(np.float64)
    acc = _rates(correct, inverse, len(keys), np.ones_like(correct, dtype=bool))
    return {k: float(a) for k, a in zip(keys, acc, strict=True)}


def worst_group_accuracy(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """``min_a A_a``, the accuracy of the worst-off group."""
    return min(accuracy_by_group(y_true, y_pred, groups=groups).values())


def accuracy_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """The accuracy gap ``delta_A = max_a A_a - min_a A_a`` between the best and the worst
    group (Branchaud-Charron et al. 2021, Sec. 2, who call it "predictive parity"); 0.0 for a
    single group. Any labels. fairlearn: ``MetricFrame(metrics=accuracy_score, ...)
    .difference()``."""
    acc = list(accuracy_by_group(y_true, y_pred, groups=groups).values())
    return float(max(acc) - min(acc))


def predictive_parity(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """Deprecated alias of :func:`accuracy_gap` (same value).

    The name follows Branchaud-Charron et al. (2021), but elsewhere "predictive parity" means
    equal *precision* across groups, which this is not. Round records and reports keep the
    column name ``predictive_parity`` (see :func:`fairness_report`); new code should call
    :func:`accuracy_gap`."""
    warnings.warn("rayfal.fairness.metrics.predictive_parity is deprecated; it is the "
                  "accuracy gap, use accuracy_gap", DeprecationWarning, stacklevel=2)
    return accuracy_gap(y_true, y_pred, groups=groups)


# --------------------------------------------------------------------------- rate gaps


def demographic_parity_difference(y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """``max_a P(y_hat=1 | g=a) - min_a P(y_hat=1 | g=a)`` (fairlearn's
    ``demographic_parity_difference``: the spread of selection rates). Binary ``y_pred``.
    Equal to fairlearn's value (which also takes, and ignores, ``y_true``)."""
    _, yp, inverse, n_groups = _binary_inputs(None, y_pred, groups)
    return _gap(_rates(yp, inverse, n_groups, np.ones_like(yp, dtype=bool)))


def equal_opportunity_difference(
    y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike
) -> float:
    """``max_a TPR_a - min_a TPR_a`` with ``TPR_a = P(y_hat=1 | y=1, g=a)`` (Hardt et al. 2016;
    fairlearn's ``equal_opportunity_difference``). Groups without positives are skipped
    (fairlearn counts their TPR as 0; see the module docstring)."""
    yt, yp, inverse, n_groups = _binary_inputs(y_true, y_pred, groups)
    return _gap(_rates(yp, inverse, n_groups, yt == 1))


def equalized_odds_difference(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """``max(max_a TPR_a - min_a TPR_a, max_a FPR_a - min_a FPR_a)`` (fairlearn's
    ``equalized_odds_difference``), ``FPR_a = P(y_hat=1 | y=0, g=a)``. Groups without
    positives (negatives) are skipped for the TPR (FPR); fairlearn counts those rates as 0
    (see the module docstring), otherwise the values are equal."""
    yt, yp, inverse, n_groups = _binary_inputs(y_true, y_pred, groups)
    tpr_gap = _gap(_rates(yp, inverse, n_groups, yt == 1))
    fpr_gap = _gap(_rates(yp, inverse, n_groups, yt == 0))
    return max(tpr_gap, fpr_gap)


def error_rate_balance(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """PANDA (Sharaf et al. 2022) Table 1 error-rate balance
    ``Delta^EB(h) = max_{a, a', y} |E[h(x) | g(x)=a, Y=y] - E[h(x) | g(x)=a', Y=y]|``.

    For ``y = 1`` this is the TPR gap and for ``y = 0`` the FPR gap, so it is identical to
    :func:`equalized_odds_difference` (and returns exactly its value)."""
    return equalized_odds_difference(y_true, y_pred, groups=groups)


# --------------------------------------------------------------------------- PANDA Table 1


def panda_demographic_parity(y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """PANDA (Sharaf et al. 2022) Table 1 demographic parity
    ``Delta^DP(h) = max_a |E[h(x) | g(x)=a] - E[h(x)]|``: the largest deviation of a group's
    selection rate from the overall (pooled over all rows) selection rate. Binary ``y_pred``.

    (The plain-text copy of the paper drops the ``|`` characters, i.e. both the absolute value
    and the conditioning bars; the formula above restores them.)

    This intentionally differs from :func:`demographic_parity_difference` (the spread
    ``max_a - min_a`` between groups): it is fairlearn's
    ``demographic_parity_difference(..., method="to_overall")``, and it is never larger than
    the spread."""
    _, yp, inverse, n_groups = _binary_inputs(None, y_pred, groups)
    group_rates = _rates(yp, inverse, n_groups, np.ones_like(yp, dtype=bool))
    return float(np.max(np.abs(group_rates - yp.mean())))


def panda_equalized_odds(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """PANDA (Sharaf et al. 2022) Table 1 equalized odds
    ``Delta^EO(h) = max_{a, y} |E[h(x) | g(x)=a, Y=y] - E[h(x) | Y=y]|``: the largest deviation
    of a group's TPR (``y=1``) or FPR (``y=0``) from the overall (pooled) TPR or FPR.
    ``(a, y)`` cells without rows are skipped; 0.0 if no cell is defined.

    Unlike :func:`equalized_odds_difference` (spread between groups) this is fairlearn's
    ``equalized_odds_difference(..., method="to_overall")`` (equal whenever every group has
    both positives and negatives)."""
    yt, yp, inverse, n_groups = _binary_inputs(y_true, y_pred, groups)
    worst = 0.0
    for y in (0.0, 1.0):
        mask = yt == y
        if not mask.any():
            continue
        dev = np.abs(_rates(yp, inverse, n_groups, mask) - yp[mask].mean())
        worst = max(worst, float(np.nanmax(dev)))
    return worst


# --------------------------------------------------------------------------- report


def fairness_report(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> dict[str, float]:
    """Overall ``accuracy``, ``worst_group_accuracy``, ``predictive_parity`` (the
    :func:`accuracy_gap`; the key keeps its historical name, which round records, reports and
    ``tune`` objectives use) and one ``acc_group_<g>`` per group; plus ``demographic_parity_difference`` and
    ``equalized_odds_difference`` only when both ``y_true`` and ``y_pred`` are binary {0, 1}."""
    v = _validate(y_true=y_true, y_pred=y_pred, groups=groups)
    yt, yp, g = v["y_true"], v["y_pred"], v["groups"]
    by_group = accuracy_by_group(yt, yp, groups=g)
    report: dict[str, float] = {
        "accuracy": float(np.mean(yt == yp)),
        "worst_group_accuracy": min(by_group.values()),
        "predictive_parity": float(max(by_group.values()) - min(by_group.values())),
    }
    if not _non_binary_values(yt) and not _non_binary_values(yp):
        report["demographic_parity_difference"] = demographic_parity_difference(yp, groups=g)
        report["equalized_odds_difference"] = equalized_odds_difference(yt, yp, groups=g)
    for key, acc in by_group.items():
        report[f"acc_group_{key}"] = acc
    return report
