"""Conformance and known-answer tests of the acquisition strategies (no Ray).

Every registered strategy goes through :func:`rayfal.acquisition.select_in_memory` on small
hand-made pools with non-contiguous int64 row_ids, 2-3 groups and MC probabilities [N, C, T].
"""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition import (
    STRATEGIES,
    CandidateReducer,
    ScoreBatch,
    make_strategy,
    row_uniform,
    select_in_memory,
)
from rayfal.acquisition import base as rayfal_base
from rayfal.acquisition.balanced_oracle import balanced_allocation
from rayfal.acquisition.base import REQUIREMENTS, StrategyParams, StrategyParamsError

# per-row and two-pass strategies; whole-pool ones (coreset, badge, fairal, panda, in_memory)
# select through select_pool(view, budget): their conformance tests are in
# tests/test_whole_pool.py (same properties: budget unique unlabelled rows, seed-deterministic,
# budget above the pool) plus a refusal of per-row scoring
ALL = [n for n in STRATEGIES.names() if STRATEGIES.get(n).kind != "whole_pool"]
WHOLE_POOL = [n for n in STRATEGIES.names() if n not in ALL]


def test_whole_pool_strategies_are_covered_elsewhere() -> None:
    assert set(WHOLE_POOL) == {"coreset", "badge", "fairal", "panda", "in_memory", "batchbald"}
    for name in WHOLE_POOL:
        assert STRATEGIES.get(name).select_pool is not rayfal_base.Strategy.select_pool


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_declares_its_protocol(name: str) -> None:
    """One protocol: kind, requires, Params and a one-line summary, declared by the class."""
    cls = STRATEGIES.get(name)
    assert cls.kind in ("per_row", "two_pass", "whole_pool")
    assert set(cls.requires) <= REQUIREMENTS
    assert cls.summary and "\n" not in cls.summary
    assert issubclass(cls.Params, StrategyParams)
    assert cls.needs_probs == ("probs" in cls.requires)
    with pytest.raises(StrategyParamsError, match=f"^strategy '{name}': .*"
                       "(unknown parameter 'no_such_key'|no_such_key=1: unknown parameter)"):
        make_strategy(name, seed=0, no_such_key=1, **({"base": "random"} if name == "in_memory"
                                                        else {}))


def _make_pool(seed: int, n: int = 60, groups: int = 3, classes: int = 3, samples: int = 5,
               ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random pool: unique, non-contiguous int64 row_ids (some huge, some negative)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**6, size=n, replace=False).astype(np.int64) * 7919 + 13
    ids[:3] = [-(2**40) - 1, 2**62 + 5, -17]  # extremes of the int64 range still work
    assert len(np.unique(ids)) == n
    group = rng.integers(0, groups, size=n).astype(np.int64)
    group[:groups] = np.arange(groups)  # every group present
    if ties:  # only n // 3 distinct probability tensors: scores tie in blocks of 3
        base = rng.dirichlet(np.ones(classes), size=(n // 3, samples)).transpose(0, 2, 1)
        probs = np.concatenate([base, base, base])[rng.permutation(n)]
    else:
        probs = rng.dirichlet(np.ones(classes), size=(n, samples)).transpose(0, 2, 1)
    return ids, group, probs


def _select(name: str, ids, group, budget, probs=None, labelled=None, *, seed: int = 0,
            round: int = 0, batch_size: int = 1024) -> np.ndarray:
    strategy = make_strategy(name, seed=seed, round=round)
    if strategy.kind == "two_pass" and probs is not None:
        probs = probs[:, :, :3]  # JIN's contract: [N, C, 3] = (p_S, p_R, p_R on attacked x)
    return select_in_memory(strategy, ids, group, budget, probs=probs, labelled=labelled,
                            batch_size=batch_size)


def _groups_of(out: np.ndarray, ids: np.ndarray, group: np.ndarray) -> np.ndarray:
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], out)
    assert np.array_equal(ids[order][pos], out)
    return group[order][pos]


# ---------------------------------------------------------------------------- conformance


def test_registry_lists_the_expected_strategies() -> None:
    assert set(ALL) >= {"random", "balanced_oracle", "bald", "entropy", "margin"}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", [1, 10, 25])
def test_returns_budget_unique_unlabelled_pool_rows(name: str, budget: int) -> None:
    ids, group, probs = _make_pool(1)
    rng = np.random.default_rng(2)
    labelled = np.concatenate([rng.choice(ids, 15, replace=False), [123456789, -5]])
    out = _select(name, ids, group, budget, probs, labelled, seed=3)
    assert out.dtype == np.int64
    assert len(out) == budget
    assert len(np.unique(out)) == budget
    assert np.isin(out, ids).all()
    assert not np.isin(out, labelled).any()


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name: str) -> None:
    ids, group, probs = _make_pool(4, ties=True)
    a = _select(name, ids, group, 12, probs, ids[:5], seed=7, round=2)
    b = _select(name, ids, group, 12, probs, ids[:5], seed=7, round=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", [n for n in ALL if not STRATEGIES.get(n).needs_probs])
def test_random_like_strategies_depend_on_seed_and_round(name: str) -> None:
    ids, group, _ = _make_pool(5)
    base = set(_select(name, ids, group, 10, seed=0, round=0).tolist())
    assert set(_select(name, ids, group, 10, seed=1, round=0).tolist()) != base
    assert set(_select(name, ids, group, 10, seed=0, round=1).tolist()) != base
    # seed and round are not interchangeable (no symmetric mixing of the salts)
    assert set(_select(name, ids, group, 10, seed=1, round=2).tolist()) != set(
        _select(name, ids, group, 10, seed=2, round=1).tolist()
    )


@pytest.mark.parametrize("name", [n for n in ALL if STRATEGIES.get(n).needs_probs])
def test_score_strategies_ignore_seed_without_ties(name: str) -> None:
    ids, group, probs = _make_pool(6)  # continuous random probs: no tied scores
    a = _select(name, ids, group, 10, probs, seed=0)
    b = _select(name, ids, group, 10, probs, seed=99, round=4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_budget_above_unlabelled_returns_all_unlabelled(name: str) -> None:
    ids, group, probs = _make_pool(7)
    labelled = ids[::3]
    unlabelled = np.setdiff1d(ids, labelled)
    out = _select(name, ids, group, len(ids) + 50, probs, labelled)
    assert len(out) == len(unlabelled)
    assert sorted(out.tolist()) == sorted(unlabelled.tolist())


@pytest.mark.parametrize("name", ALL)
def test_everything_labelled_or_zero_budget_gives_empty(name: str) -> None:
    ids, group, probs = _make_pool(8, n=12)
    assert len(_select(name, ids, group, 5, probs, labelled=ids)) == 0
    assert len(_select(name, ids, group, 0, probs)) == 0


@pytest.mark.parametrize("name", ALL)
def test_independent_of_batch_size(name: str) -> None:
    ids, group, probs = _make_pool(9, n=90, ties=True)
    labelled = ids[5:20]
    ref = _select(name, ids, group, 17, probs, labelled, seed=3, batch_size=1000)
    for bs in (1, 7, 16):
        out = _select(name, ids, group, 17, probs, labelled, seed=3, batch_size=bs)
        np.testing.assert_array_equal(out, ref, err_msg=f"batch_size={bs}")


@pytest.mark.parametrize("name", ALL)
def test_independent_of_row_order(name: str) -> None:
    ids, group, probs = _make_pool(10, n=90, ties=True)
    labelled = ids[30:40]
    ref = _select(name, ids, group, 17, probs, labelled, seed=5, batch_size=7)
    for s in range(3):
        perm = np.random.default_rng(100 + s).permutation(len(ids))
        out = _select(name, ids[perm], group[perm], 17, probs[perm], labelled[::-1], seed=5,
                      batch_size=7)
        np.testing.assert_array_equal(out, ref, err_msg=f"permutation {s}")


@pytest.mark.parametrize("name", [n for n in ALL if STRATEGIES.get(n).needs_probs])
def test_probs_strategies_require_probs(name: str) -> None:
    ids, group, _ = _make_pool(11, n=10)
    with pytest.raises(ValueError, match=name):
        _select(name, ids, group, 3, probs=None)


def test_make_strategy_rejects_unknown_names_and_params() -> None:
    with pytest.raises(KeyError, match="known: .*bald"):
        make_strategy("no_such_strategy", seed=0)
    with pytest.raises(StrategyParamsError, match="unknown parameter .temperature. .allowed: none."):
        make_strategy("random", seed=0, temperature=2.0)


# ---------------------------------------------------------------------------- known answers


def _peaked(n: int, classes: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Rows whose T samples are all identical (zero BALD) and confident (top class >= 0.8)."""
    rest = rng.dirichlet(np.ones(classes - 1), size=n) * rng.uniform(0.02, 0.2, size=(n, 1))
    p = np.zeros((n, classes))
    top = rng.integers(0, classes, size=n)
    for i in range(n):
        p[i, top[i]] = 1.0 - rest[i].sum()
        p[i, np.arange(classes) != top[i]] = rest[i]
    return np.repeat(p[:, :, None], samples, axis=2)


def test_bald_picks_only_disagreeing_rows() -> None:
    rng = np.random.default_rng(12)
    n, k, c, t = 50, 6, 3, 4
    ids = np.arange(n, dtype=np.int64) * 11 + 1000
    group = np.arange(n, dtype=np.int64) % 2
    probs = _peaked(n, c, t, rng)
    # the most uniform rows have identical samples: high entropy, zero BALD
    probs[:10] = 1.0 / c
    disagree = rng.choice(np.arange(10, n), size=k, replace=False)
    # disagreeing rows: samples alternate between two confident classes, with growing strength
    for j, row in enumerate(disagree):
        a = 0.55 + 0.07 * j  # row disagree[j] gets a larger BALD the larger j is
        s1 = np.array([a, 1 - a - 0.01, 0.01])
        s2 = np.array([1 - a - 0.01, a, 0.01])
        probs[row] = np.stack([s1, s2, s1, s2], axis=1)
    for budget in range(1, k + 1):
        out = _select("bald", ids, group, budget, probs, seed=budget)
        assert set(out.tolist()) == set(ids[disagree[k - budget:]].tolist()), budget
    # and it never picks a zero-BALD row while disagreeing rows are left
    out = _select("bald", ids, group, k, probs, labelled=ids[disagree[:2]])
    assert len(out) == k
    assert set(ids[disagree[2:]].tolist()) <= set(out.tolist())


def test_entropy_picks_the_most_uniform_mean() -> None:
    rng = np.random.default_rng(13)
    n, c, t = 40, 3, 3
    ids = np.arange(n, dtype=np.int64)[::-1] * 3 + 5
    group = (np.arange(n) % 3).astype(np.int64)
    probs = _peaked(n, c, t, rng)
    probs[[4, 17]] = 1.0 / c  # uniform samples
    probs[29] = np.eye(c)  # confident samples that disagree: the *mean* is uniform
    probs[33] = np.array([0.5, 0.25, 0.25])[:, None]  # next-highest entropy
    out = _select("entropy", ids, group, 3, probs)
    assert set(out.tolist()) == set(ids[[4, 17, 29]].tolist())
    out = _select("entropy", ids, group, 4, probs)
    assert set(out.tolist()) == set(ids[[4, 17, 29, 33]].tolist())


def test_margin_picks_the_smallest_gap_of_the_mean() -> None:
    n, c, t = 8, 3, 2
    ids = np.array([90, 10, 70, 30, 50, 20, 80, 40], dtype=np.int64)
    group = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=np.int64)
    gaps = np.array([0.6, 0.3, 0.05, 0.5, 0.2, 0.0, 0.4, 0.1])
    probs = np.zeros((n, c, t))
    for i, g in enumerate(gaps):
        top = (1 - 0.1 + g) / 2  # [top, top - g, 0.1]
        probs[i, :, 0] = [top - g, top, 0.1]
        probs[i, :, 1] = [top - g, top, 0.1]
    # row 1: high-entropy mean [0.5, 0.25, 0.25] with a large gap (margin must not pick it)
    probs[1] = np.array([0.5, 0.25, 0.25])[:, None]
    # row 5: gap 0 only on average: samples [0.9, 0, 0.1] and [0, 0.9, 0.1]
    probs[5] = np.array([[0.9, 0.0], [0.0, 0.9], [0.1, 0.1]])
    expected_order = [5, 2, 7, 4]  # gaps 0, 0.05, 0.1, 0.2
    for budget in range(1, 5):
        out = _select("margin", ids, group, budget, probs)
        assert set(out.tolist()) == set(ids[expected_order[:budget]].tolist()), budget
    assert 1 not in _select("margin", ids, group, 4, probs).tolist()
    assert ids[1] in _select("entropy", ids, group, 1, probs).tolist()


def test_balanced_oracle_equal_counts_per_group() -> None:
    rng = np.random.default_rng(14)
    ids = rng.choice(10**7, size=300, replace=False).astype(np.int64)
    group = np.repeat(np.array([2, 5, 9], dtype=np.int64), [150, 100, 50])
    for seed in range(3):
        out = _select("balanced_oracle", ids, group, 30, seed=seed)
        sel_groups = _groups_of(out, ids, group)
        assert np.bincount(sel_groups, minlength=10)[[2, 5, 9]].tolist() == [10, 10, 10]
    # an indivisible budget puts the extra rows in the lowest group ids
    out = _select("balanced_oracle", ids, group, 31)
    sel_groups = _groups_of(out, ids, group)
    assert np.bincount(sel_groups, minlength=10)[[2, 5, 9]].tolist() == [11, 10, 10]


def test_balanced_oracle_redistributes_a_small_groups_share() -> None:
    ids = np.arange(103, dtype=np.int64) * 5 + 1
    group = np.array([0] * 3 + [1] * 100, dtype=np.int64)
    out = _select("balanced_oracle", ids, group, 20, seed=1)
    assert len(out) == 20
    sel = group[(out - 1) // 5]
    assert (sel == 0).sum() == 3 and (sel == 1).sum() == 17
    # the same when the small group is small because most of it is already labelled
    group = np.array([0] * 10 + [1] * 93, dtype=np.int64)
    out = _select("balanced_oracle", ids, group, 20, labelled=ids[:7], seed=1)
    sel = group[(out - 1) // 5]
    assert (sel == 0).sum() == 3 and (sel == 1).sum() == 17
    assert not np.isin(out, ids[:7]).any()


@pytest.mark.parametrize(
    ("available", "budget", "expected"),
    [
        ({0: 3, 1: 100}, 20, {0: 3, 1: 17}),
        ({0: 10, 1: 10, 2: 10}, 12, {0: 4, 1: 4, 2: 4}),
        ({0: 10, 1: 10, 2: 10}, 10, {0: 4, 1: 3, 2: 3}),
        ({0: 1, 1: 2, 2: 100}, 30, {0: 1, 1: 2, 2: 27}),
        ({0: 4, 1: 6, 2: 100, 3: 100}, 40, {0: 4, 1: 6, 2: 15, 3: 15}),
        ({0: 5, 1: 7}, 100, {0: 5, 1: 7}),
        ({0: 0, 1: 9}, 4, {0: 0, 1: 4}),
        ({0: 3, 1: 3}, 0, {0: 0, 1: 0}),
        ({}, 5, {}),
    ],
)
def test_balanced_allocation(available: dict, budget: int, expected: dict) -> None:
    alloc = balanced_allocation(dict(available), budget)
    assert alloc == expected
    assert sum(alloc.values()) == min(budget, sum(available.values()))
    assert all(alloc[g] <= available[g] for g in available)


def test_random_is_roughly_uniform_across_groups() -> None:
    n, budget = 30_000, 3_000
    rng = np.random.default_rng(15)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    group = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int64)
    frac = np.bincount(group, minlength=3) / n
    for seed in (0, 1):
        out = _select("random", ids, group, budget, seed=seed, batch_size=4096)
        sel = _groups_of(out, ids, group)
        counts = np.bincount(sel, minlength=3)
        expected = budget * frac
        sd = np.sqrt(budget * frac * (1 - frac))
        assert np.all(np.abs(counts - expected) < 5 * sd), (counts, expected)
        # not biased towards small or large row_ids either
        below = np.mean(out < np.median(ids))
        assert abs(below - 0.5) < 0.05


# ---------------------------------------------------------------------------- row_uniform


def test_row_uniform_range_determinism_and_salt() -> None:
    ids = np.concatenate([
        np.arange(-1000, 1000, dtype=np.int64),
        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 2**32, 2**53 + 1]),
    ])
    u = row_uniform(ids, 3, 1)
    assert u.dtype == np.float64 and u.shape == ids.shape
    assert np.all((u >= 0.0) & (u < 1.0))
    np.testing.assert_array_equal(u, row_uniform(ids.copy(), 3, 1))
    # a pure function of (salt, row_id): order, batching and list input do not matter
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(row_uniform(ids[perm], 3, 1), u[perm])
    np.testing.assert_array_equal(row_uniform(ids[:7], 3, 1), u[:7])
    np.testing.assert_array_equal(row_uniform(list(ids[:7]), 3, 1), u[:7])
    # salt-dependent, including salt order and number of salts
    for other in [row_uniform(ids, 3, 2), row_uniform(ids, 1, 3), row_uniform(ids, 3),
                  row_uniform(ids)]:
        assert np.mean(other == u) < 0.01
    # roughly uniform: mean, and every decile populated evenly
    big = row_uniform(np.arange(200_000, dtype=np.int64) * 2, 42)
    assert abs(big.mean() - 0.5) < 0.005
    hist = np.histogram(big, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - 20_000) < 600)
    # consecutive ids are uncorrelated
    assert abs(np.corrcoef(big[:-1], big[1:])[0, 1]) < 0.01


# ---------------------------------------------------------------------------- CandidateReducer


def _brute_topk(ids, group, score, tie, k) -> dict[int, list[int]]:
    out = {}
    for g in np.unique(group):
        m = group == g
        order = np.lexsort((ids[m], -tie[m], -score[m]))
        out[int(g)] = ids[m][order][:k].tolist()
    return out


@pytest.mark.parametrize(("k", "batch", "n"), [(5, 13, 400), (1, 1000, 400), (50, 7, 400),
                                              (300, 25_000, 160_000)])
def test_candidate_reducer_keeps_per_group_topk_exactly(k: int, batch: int, n: int) -> None:
    rng = np.random.default_rng(k)
    ids = rng.permutation(n * 3)[:n].astype(np.int64) - n  # unique, some negative
    group = rng.choice([0, 4, 7], size=n, p=[0.7, 0.25, 0.05]).astype(np.int64)
    score = np.round(rng.random(n), 1)  # many ties: the tie-break decides
    strategy = make_strategy("bald", seed=k, round=1)
    red = CandidateReducer(strategy, k)
    for s in range(0, n, batch):
        red.add(ids[s:s + batch], group[s:s + batch], score[s:s + batch])
    cand = red.result()
    assert red.rows_seen == n
    assert cand.group_counts == {g: int((group == g).sum()) for g in (0, 4, 7)}
    expected = _brute_topk(ids, group, score, strategy.tiebreak(ids), k)
    got = {int(g): cand.row_id[cand.group == g] for g in np.unique(cand.group)}
    assert set(got) == set(expected)
    for g, want in expected.items():
        m = cand.group == g
        order = np.lexsort((cand.row_id[m], -cand.tiebreak[m], -cand.score[m]))
        assert cand.row_id[m][order].tolist() == want, g
    # the stored scores and tie-breaks belong to their rows
    lookup = dict(zip(ids.tolist(), score.tolist(), strict=True))
    assert [lookup[i] for i in cand.row_id.tolist()] == cand.score.tolist()
    np.testing.assert_array_equal(cand.tiebreak, strategy.tiebreak(cand.row_id))
    # the default select takes the global top-k of the candidates
    top = strategy.select(cand, k)
    order = np.lexsort((ids, -strategy.tiebreak(ids), -score))
    np.testing.assert_array_equal(top, ids[order][:k])


def test_candidate_reducer_rejects_non_finite_scores_naming_rows() -> None:
    red = CandidateReducer(make_strategy("entropy", seed=0), 3)
    with pytest.raises(ValueError, match=r"entropy.*\[20, 40\]"):
        red.add(np.array([10, 20, 30, 40]), np.array([0, 0, 1, 1]),
                np.array([0.1, np.nan, 0.3, -np.inf]))
    with pytest.raises(ValueError, match="lengths"):
        red.add(np.array([1, 2]), np.array([0]), np.array([0.1, 0.2]))
    red.add(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    cand = red.result()
    assert len(cand.row_id) == 0 and cand.group_counts == {} and red.rows_seen == 0


def test_select_in_memory_propagates_non_finite_scores() -> None:
    class Broken(type(make_strategy("random", seed=0))):
        name = "broken"

        def score(self, batch: ScoreBatch) -> np.ndarray:
            s = np.ones(len(batch.row_id))
            s[batch.row_id == 77] = np.nan
            return s

    with pytest.raises(ValueError, match=r"broken.*\[77\]"):
        select_in_memory(Broken(seed=0), np.array([5, 77, 9]), np.array([0, 1, 0]), 2)
