"""Known-answer tests of JIN's per-round diagnostics (rayfal.acquisition.jin_diagnostics):
Spearman's rho with ties, the Jaccard overlap of two picks, the share of a pick in z*, and the
clean accuracy of M_S / M_R. Hand-made arrays, answers worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rayfal.acquisition.jin_diagnostics import (
    average_ranks,
    chance_jaccard,
    clean_accuracy,
    pick_overlap,
    share_in_group,
    spearman,
)


def test_average_ranks_share_the_mean_rank_on_ties() -> None:
    np.testing.assert_array_equal(average_ranks([10, 20, 20, 5]), [2.0, 3.5, 3.5, 1.0])
    np.testing.assert_array_equal(average_ranks([7, 7, 7]), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(average_ranks([3.0, -1.0, 2.0]), [3.0, 1.0, 2.0])


def test_spearman_known_answers() -> None:
    # ranks a = 1..5, b = [1, 2, 3.5, 5, 3.5]; centred: [-2,-1,0,1,2] and [-2,-1,.5,2,.5]
    # sum of products 8, sums of squares 10 and 9.5: rho = 8 / sqrt(95)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95),
                                                                       abs=1e-12)
    # the rank correlation, not the linear one: any increasing transform gives 1
    x = np.array([0.3, -2.0, 1.5, 0.0, 4.0])
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    # Pearson of these is far from 1; Spearman is exactly 1 (guards against Pearson)
    a, b = [1, 2, 3, 4], [1, 2, 3, 1000]
    assert np.corrcoef(a, b)[0, 1] < 0.8 and spearman(a, b) == pytest.approx(1.0)
    # symmetric
    assert spearman([5, 6, 7, 8, 7], [1, 2, 3, 4, 5]) == pytest.approx(8 / math.sqrt(95))


def test_spearman_degenerate_inputs() -> None:
    assert math.isnan(spearman([1.0], [2.0]))
    assert math.isnan(spearman([], []))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # a constant side carries no ranking
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, np.nan], [1, 2])


def test_pick_overlap_is_jaccard() -> None:
    assert pick_overlap([1, 2, 3, 4], [3, 4, 5]) == pytest.approx(2 / 5)
    assert pick_overlap([9, 8], [8, 9]) == 1.0
    assert pick_overlap([1, 2], [3, 4]) == 0.0
    assert pick_overlap(np.array([], np.int64), [1]) == 0.0
    assert math.isnan(pick_overlap([], []))


def test_chance_jaccard() -> None:
    # 50 of 1000 twice: expected intersection 2.5, Jaccard 2.5 / 97.5
    assert chance_jaccard(1000, 50, 50) == pytest.approx(2.5 / 97.5)
    assert chance_jaccard(10, 10, 10) == 1.0  # both take every row
    assert chance_jaccard(8, 2, 4) == pytest.approx(1 / 5)  # k = 1: 1 / (2 + 4 - 1)
    assert math.isnan(chance_jaccard(0, 0, 0))
    with pytest.raises(ValueError):
        chance_jaccard(5, 6, 1)
    # a simulation agrees with the closed form to within its own error at these sizes
    rng = np.random.default_rng(0)
    sims = [pick_overlap(rng.choice(400, 40, replace=False), rng.choice(400, 40, replace=False))
            for _ in range(4000)]
    assert np.mean(sims) == pytest.approx(chance_jaccard(400, 40, 40), rel=0.05)


def test_share_in_group() -> None:
    assert share_in_group([0, 1, 1, 1], 1) == 0.75
    assert share_in_group([2, 2], 0) == 0.0
    assert math.isnan(share_in_group([], 0))


def test_clean_accuracy_overall_and_per_group() -> None:
    y = [0, 1, 2, 3, 0, 1]
    pred = [0, 1, 2, 3, 1, 0]
    group = [0, 0, 0, 1, 1, 1]
    # group 0: 3/3 right; group 1: only the 3 right; overall 4/6
    assert clean_accuracy(y, pred, group, "ms_std_") == pytest.approx(
        {"ms_std_accuracy": 4 / 6, "ms_std_acc_group_0": 1.0, "ms_std_acc_group_1": 1 / 3})
    with pytest.raises(ValueError, match="equal"):
        clean_accuracy([0, 1], [0], [0, 0], "")
