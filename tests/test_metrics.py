"""Unit tests for rayfal.fairness.metrics: hand-computed expected values, and agreement with
fairlearn's own functions on seeded random arrays (the intended differences tested as relations)."""

from __future__ import annotations

import fairlearn.metrics as fm  # a dependency: a missing fairlearn fails, never skips
import numpy as np
import pytest

from rayfal.fairness.metrics import (
    accuracy_by_group,
    accuracy_gap,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    error_rate_balance,
    fairness_report,
    panda_demographic_parity,
    panda_equalized_odds,
    predictive_parity,
    worst_group_accuracy,
)

# Three groups of four.
#   group 0: acc 3/4, selection 1/4, TPR 1/2, FPR 0
#   group 1: acc 3/4, selection 3/4, TPR 1,   FPR 1/2
#   group 2: acc 1/2, selection 1/4, TPR 0,   FPR 1/3
G3 = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
Y3 = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0])
P3 = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1])

# Two string groups where the FPR gap dominates.
#   "a": TPR 1,   FPR 1/3
#   "b": TPR 1/2, FPR 1
GS = np.array(["a"] * 5 + ["b"] * 5)
YS = np.array([1, 1, 0, 0, 0, 1, 1, 0, 0, 0])
PS = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1])


def test_accuracy_by_group_three_groups() -> None:
    assert accuracy_by_group(Y3, P3, groups=G3) == {0: 0.75, 1: 0.75, 2: 0.5}


def test_worst_group_accuracy_and_accuracy_gap() -> None:
    assert worst_group_accuracy(Y3, P3, groups=G3) == 0.5
    assert accuracy_gap(Y3, P3, groups=G3) == pytest.approx(0.25)


def test_predictive_parity_is_a_deprecated_alias_of_accuracy_gap() -> None:
    with pytest.warns(DeprecationWarning, match="accuracy_gap"):
        assert predictive_parity(Y3, P3, groups=G3) == accuracy_gap(Y3, P3, groups=G3)


def test_accuracy_metrics_accept_multiclass_labels() -> None:
    y = [0, 1, 2, 2, 1, 0]
    p = [0, 1, 1, 2, 0, 0]
    g = [0, 0, 0, 1, 1, 1]
    assert accuracy_by_group(y, p, groups=g) == pytest.approx({0: 2 / 3, 1: 2 / 3})
    assert accuracy_gap(y, p, groups=g) == pytest.approx(0.0)


def test_demographic_parity_difference() -> None:
    assert demographic_parity_difference(P3, groups=G3) == pytest.approx(0.5)


def test_equal_opportunity_and_equalized_odds() -> None:
    assert equal_opportunity_difference(Y3, P3, groups=G3) == pytest.approx(1.0)
    assert equalized_odds_difference(Y3, P3, groups=G3) == pytest.approx(1.0)


def test_equalized_odds_fpr_dominates_with_string_groups() -> None:
    assert equal_opportunity_difference(YS, PS, groups=GS) == pytest.approx(0.5)
    assert equalized_odds_difference(YS, PS, groups=GS) == pytest.approx(2 / 3)
    assert error_rate_balance(YS, PS, groups=GS) == pytest.approx(2 / 3)
    assert accuracy_by_group(YS, PS, groups=GS) == pytest.approx({"a": 0.8, "b": 0.2})
    # selection rates 3/5 and 4/5
    assert demographic_parity_difference(PS, groups=GS) == pytest.approx(0.2)


def test_string_group_keys_are_plain_str() -> None:
    keys = list(accuracy_by_group(YS, PS, groups=list(GS)))
    assert keys == ["a", "b"]
    assert all(type(k) is str for k in keys)


def test_panda_demographic_parity() -> None:
    # overall selection rate 5/12; group deviations 1/6, 1/3, 1/6
    assert panda_demographic_parity(P3, groups=G3) == pytest.approx(1 / 3)


def test_panda_equalized_odds() -> None:
    # y=1: overall TPR 3/5; group deviations 0.1, 0.4, 0.6
    # y=0: overall FPR 2/7; group deviations 2/7, 3/14, 1/21
    assert panda_equalized_odds(Y3, P3, groups=G3) == pytest.approx(0.6)
    # string case: overall TPR 3/4 (devs 1/4, 1/4); overall FPR 4/6 (devs 1/3, 1/3)
    assert panda_equalized_odds(YS, PS, groups=GS) == pytest.approx(1 / 3)


def test_error_rate_balance_equals_equalized_odds() -> None:
    assert error_rate_balance(Y3, P3, groups=G3) == equalized_odds_difference(Y3, P3, groups=G3)


def test_group_without_positives_is_skipped_for_tpr() -> None:
    g = [0, 0, 1, 1, 2, 2]
    y = [1, 0, 1, 0, 0, 0]  # group 2 has no positives
    p = [1, 0, 1, 0, 1, 0]  # TPR: g0 1, g1 1 (g2 undefined); FPR: g0 0, g1 0, g2 1/2
    assert equal_opportunity_difference(y, p, groups=g) == 0.0
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(0.5)
    # PANDA EO: overall TPR 1 (devs 0, 0); overall FPR 1/4 (devs 1/4, 1/4, 1/4)
    assert panda_equalized_odds(y, p, groups=g) == pytest.approx(0.25)


def test_no_group_has_positives_gives_zero_gap() -> None:
    y = [0, 0, 0, 0]
    p = [1, 0, 0, 0]
    g = [0, 0, 1, 1]
    assert equal_opportunity_difference(y, p, groups=g) == 0.0
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(0.5)


def test_single_group_disparities_are_zero() -> None:
    y = [1, 0, 1, 1, 0]
    p = [1, 1, 0, 1, 0]
    g = ["only"] * 5
    assert accuracy_by_group(y, p, groups=g) == {"only": 0.6}
    assert worst_group_accuracy(y, p, groups=g) == pytest.approx(0.6)
    assert accuracy_gap(y, p, groups=g) == 0.0
    assert demographic_parity_difference(p, groups=g) == 0.0
    assert equal_opportunity_difference(y, p, groups=g) == 0.0
    assert equalized_odds_difference(y, p, groups=g) == 0.0
    assert panda_demographic_parity(p, groups=g) == 0.0
    assert panda_equalized_odds(y, p, groups=g) == 0.0


def test_bool_and_float_binary_inputs_accepted() -> None:
    y = Y3.astype(bool)
    p = P3.astype(np.float64)
    assert equalized_odds_difference(y, p, groups=G3) == pytest.approx(1.0)


def test_equalized_odds_cross_check_random_loop() -> None:
    rng = np.random.default_rng(123)
    n = 500
    g = rng.integers(0, 4, size=n)
    y = rng.integers(0, 2, size=n)
    p = (rng.random(n) < 0.3 + 0.1 * g).astype(int)

    tprs, fprs, sels = [], [], []
    for a in range(4):
        tp = fn = fp = tn = 0
        for gi, yi, pi in zip(g, y, p, strict=True):
            if gi != a:
                continue
            if yi == 1 and pi == 1:
                tp += 1
            elif yi == 1:
                fn += 1
            elif pi == 1:
                fp += 1
            else:
                tn += 1
        tprs.append(tp / (tp + fn))
        fprs.append(fp / (fp + tn))
        sels.append((tp + fp) / (tp + fn + fp + tn))
    expected = max(max(tprs) - min(tprs), max(fprs) - min(fprs))
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(expected)
    assert error_rate_balance(y, p, groups=g) == pytest.approx(expected)
    assert equal_opportunity_difference(y, p, groups=g) == pytest.approx(max(tprs) - min(tprs))
    assert demographic_parity_difference(p, groups=g) == pytest.approx(max(sels) - min(sels))
    overall = p.mean()
    assert panda_demographic_parity(p, groups=g) == pytest.approx(
        max(abs(s - overall) for s in sels)
    )


def test_fairness_report_binary() -> None:
    report = fairness_report(Y3, P3, groups=G3)
    assert report == pytest.approx(
        {
            "accuracy": 8 / 12,
            "worst_group_accuracy": 0.5,
            "predictive_parity": 0.25,
            "demographic_parity_difference": 0.5,
            "equalized_odds_difference": 1.0,
            "acc_group_0": 0.75,
            "acc_group_1": 0.75,
            "acc_group_2": 0.5,
        }
    )


def test_fairness_report_multiclass_omits_binary_metrics() -> None:
    y = [0, 1, 2, 2]
    p = [0, 1, 1, 2]
    report = fairness_report(y, p, groups=["x", "x", "y", "y"])
    assert set(report) == {
        "accuracy",
        "worst_group_accuracy",
        "predictive_parity",
        "acc_group_x",
        "acc_group_y",
    }
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["acc_group_y"] == pytest.approx(0.5)


def test_length_mismatch_names_lengths() -> None:
    with pytest.raises(ValueError, match=r"y_true has length 3.*y_pred has length 4"):
        accuracy_by_group([0, 1, 0], [0, 1, 0, 1], groups=[0, 0, 1])
    with pytest.raises(ValueError, match=r"groups has length 2"):
        demographic_parity_difference([0, 1, 0], groups=[0, 1])


@pytest.mark.parametrize(
    ("y", "p", "g"),
    [
        ([0.0, np.nan, 1.0], [0, 1, 1], [0, 0, 1]),
        ([0, 1, 1], [0.0, 1.0, np.nan], [0, 0, 1]),
        ([0, 1, 1], [0, 1, 1], [0.0, np.nan, 1.0]),
        ([0, 1, 1], [0, 1, 1], np.array(["a", None, "b"], dtype=object)),
    ],
)
def test_nan_rejected(y, p, g) -> None:
    with pytest.raises(ValueError, match="NaN"):
        accuracy_by_group(y, p, groups=g)
    with pytest.raises(ValueError, match="NaN"):
        equalized_odds_difference(y, p, groups=g)


def test_empty_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        accuracy_by_group([], [], groups=[])
    with pytest.raises(ValueError, match="empty"):
        demographic_parity_difference([], groups=[])


def test_non_binary_rejected_with_values() -> None:
    with pytest.raises(ValueError, match=r"y_pred must be binary.*\[2\]"):
        demographic_parity_difference([0, 1, 2], groups=[0, 0, 1])
    with pytest.raises(ValueError, match=r"y_true must be binary.*\[-1, 3\]"):
        equalized_odds_difference([-1, 1, 3], [0, 1, 1], groups=[0, 0, 1])
    with pytest.raises(ValueError, match=r"y_pred must be binary.*\['yes'\]"):
        panda_demographic_parity(["yes", "yes"], groups=[0, 1])
    with pytest.raises(ValueError, match=r"y_pred must be binary.*\[0.5\]"):
        panda_equalized_odds([0, 1], [0.5, 1.0], groups=[0, 1])


def test_not_1d_rejected() -> None:
    with pytest.raises(ValueError, match="1-D"):
        accuracy_by_group([[0, 1]], [[0, 1]], groups=[[0, 1]])


# --------------------------------------------------------------------------- fairlearn


def _random_case(seed: int, n: int, groups: list, multiclass: bool = False):
    """Seeded arrays with several (unequal-sized) groups; every group has both labels."""
    rng = np.random.default_rng(seed)
    g = np.asarray(groups)[rng.integers(0, len(groups), size=n)]
    y = rng.integers(0, 3 if multiclass else 2, size=n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3 if multiclass else 2, size=n))
    for key in groups:  # guarantee a positive and a negative in every group
        rows = np.flatnonzero(g == key)
        y[rows[0]], y[rows[1]] = 1, 0
    return y, p, g


FAIRLEARN_CASES = [(0, 200, [0, 1, 2]), (1, 500, [0, 1, 2, 3, 4]), (2, 300, ["x", "y", "z", "w"]),
                   (3, 61, [7, 9])]


@pytest.mark.parametrize(("seed", "n", "groups"), FAIRLEARN_CASES)
def test_accuracy_metrics_match_fairlearn_metricframe(seed, n, groups) -> None:
    from sklearn.metrics import accuracy_score

    for multiclass in (False, True):
        y, p, g = _random_case(seed, n, groups, multiclass)
        mf = fm.MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=g)
        ours = accuracy_by_group(y, p, groups=g)
        theirs = mf.by_group
        assert sorted(ours) == sorted(theirs.index.tolist())
        for key, acc in ours.items():
            assert acc == pytest.approx(theirs[key], abs=1e-12)
        assert worst_group_accuracy(y, p, groups=g) == pytest.approx(mf.group_min(), abs=1e-12)
        assert accuracy_gap(y, p, groups=g) == pytest.approx(mf.difference(), abs=1e-12)
        report = fairness_report(y, p, groups=g)
        assert report["accuracy"] == pytest.approx(mf.overall, abs=1e-12)
        assert report["predictive_parity"] == pytest.approx(mf.difference(), abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "groups"), FAIRLEARN_CASES)
def test_rate_gaps_match_fairlearn(seed, n, groups) -> None:

    y, p, g = _random_case(seed, n, groups)
    kw = {"sensitive_features": g}
    sel = fm.MetricFrame(metrics=fm.selection_rate, y_true=y, y_pred=p, **kw)
    assert demographic_parity_difference(p, groups=g) == pytest.approx(
        fm.demographic_parity_difference(y, p, **kw), abs=1e-12)
    assert demographic_parity_difference(p, groups=g) == pytest.approx(sel.difference(),
                                                                       abs=1e-12)
    assert equal_opportunity_difference(y, p, groups=g) == pytest.approx(
        fm.equal_opportunity_difference(y, p, **kw), abs=1e-12)
    eo = fm.equalized_odds_difference(y, p, **kw)
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(eo, abs=1e-12)
    assert error_rate_balance(y, p, groups=g) == pytest.approx(eo, abs=1e-12)
    report = fairness_report(y, p, groups=g)
    assert report["demographic_parity_difference"] == pytest.approx(
        fm.demographic_parity_difference(y, p, **kw), abs=1e-12)
    assert report["equalized_odds_difference"] == pytest.approx(eo, abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "groups"), FAIRLEARN_CASES)
def test_panda_table1_metrics_are_fairlearn_to_overall(seed, n, groups) -> None:
    """PANDA's Table 1 definitions differ from the between-group spreads on purpose: they are
    fairlearn's ``method="to_overall"`` variants, and lie in [spread / 2, spread]."""

    y, p, g = _random_case(seed, n, groups)
    kw = {"sensitive_features": g, "method": "to_overall"}
    dp = panda_demographic_parity(p, groups=g)
    assert dp == pytest.approx(fm.demographic_parity_difference(y, p, **kw), abs=1e-12)
    sel = fm.MetricFrame(metrics=fm.selection_rate, y_true=y, y_pred=p, sensitive_features=g)
    assert dp == pytest.approx(sel.difference(method="to_overall"), abs=1e-12)
    eo = panda_equalized_odds(y, p, groups=g)
    assert eo == pytest.approx(fm.equalized_odds_difference(y, p, **kw), abs=1e-12)
    spread_dp = demographic_parity_difference(p, groups=g)
    spread_eo = equalized_odds_difference(y, p, groups=g)
    assert spread_dp / 2 - 1e-12 <= dp <= spread_dp + 1e-12
    assert spread_eo / 2 - 1e-12 <= eo <= spread_eo + 1e-12


def test_groups_without_positives_differ_from_fairlearn_as_documented() -> None:
    """A group without positives has no TPR: rayfal skips it, fairlearn counts it as 0. On the
    groups where every rate is defined the two agree."""

    y, p, g = _random_case(5, 400, [0, 1, 2, 3])
    y[g == 3] = 0  # group 3: negatives only
    p[g == 3] = (np.arange(int((g == 3).sum())) % 3 == 0).astype(p.dtype)  # some FPR > 0
    tpr = fm.MetricFrame(metrics=fm.true_positive_rate, y_true=y, y_pred=p,
                         sensitive_features=g).by_group
    assert tpr[3] == 0.0  # fairlearn: zero_division -> 0
    defined = g != 3
    ours_eop = equal_opportunity_difference(y, p, groups=g)
    assert ours_eop == pytest.approx(
        fm.equal_opportunity_difference(y[defined], p[defined], sensitive_features=g[defined]),
        abs=1e-12)
    assert ours_eop == pytest.approx(tpr.drop(3).max() - tpr.drop(3).min(), abs=1e-12)
    assert fm.equal_opportunity_difference(y, p, sensitive_features=g) == pytest.approx(
        tpr.max(), abs=1e-12)  # the 0 of group 3 is fairlearn's minimum
    fpr = fm.MetricFrame(metrics=fm.false_positive_rate, y_true=y, y_pred=p,
                         sensitive_features=g).by_group
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(
        max(ours_eop, fpr.max() - fpr.min()), abs=1e-12)
