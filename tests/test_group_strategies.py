"""Tests of the worst-group strategies (G-RAND, G-ENT) and of JIN's pure maths (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition import (
    STRATEGIES,
    make_strategy,
    row_uniform,
    select_in_memory,
    worst_group_from_metrics,
)
from rayfal.acquisition import scores as S
from rayfal.acquisition.base import StrategyParamsError
from rayfal.acquisition.jin import (
    RunningMoments,
    inconsistency_rob,
    inconsistency_std,
    jin_scores,
    kl_divergence,
    z_normalize,
)

GROUP_STRATEGIES = ["group_random", "group_entropy"]


def _pool(seed: int, n: int = 60, groups: int = 3, classes: int = 3, samples: int = 4,
          ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique non-contiguous int64 ids (some negative/huge), every group present, MC probs."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**6, size=n, replace=False).astype(np.int64) * 7919 + 13
    ids[:3] = [-(2**40) - 1, 2**62 + 5, -17]
    group = rng.integers(0, groups, size=n).astype(np.int64)
    group[:groups] = np.arange(groups)
    if ties:
        base = rng.dirichlet(np.ones(classes), size=(n // 3, samples)).transpose(0, 2, 1)
        probs = np.concatenate([base, base, base])[rng.permutation(n)]
    else:
        probs = rng.dirichlet(np.ones(classes), size=(n, samples)).transpose(0, 2, 1)
    return ids, group, probs


def _select(name, ids, group, budget, probs=None, labelled=None, *, seed=0, round=0,
            batch_size=1024, worst=1) -> np.ndarray:
    strategy = make_strategy(name, seed=seed, round=round, worst_group=worst)
    return select_in_memory(strategy, ids, group, budget, probs=probs, labelled=labelled,
                            batch_size=batch_size)


def _group_of(out, ids, group) -> np.ndarray:
    lookup = dict(zip(ids.tolist(), group.tolist(), strict=True))
    return np.array([lookup[i] for i in out.tolist()], dtype=np.int64)


# ---------------------------------------------------------------------------- conformance


def test_registered() -> None:
    assert set(GROUP_STRATEGIES) <= set(STRATEGIES.names())
    assert STRATEGIES.get("group_entropy").needs_probs
    assert not STRATEGIES.get("group_random").needs_probs


@pytest.mark.parametrize("name", GROUP_STRATEGIES)
@pytest.mark.parametrize("budget", [1, 10, 25])
@pytest.mark.parametrize("worst", [0, 2, None])
def test_returns_budget_unique_unlabelled_rows(name: str, budget: int, worst) -> None:
    ids, group, probs = _pool(1)
    labelled = np.concatenate([np.random.default_rng(2).choice(ids, 15, replace=False), [-5]])
    out = _select(name, ids, group, budget, probs, labelled, seed=3, worst=worst)
    assert out.dtype == np.int64 and len(out) == budget == len(np.unique(out))
    assert np.isin(out, ids).all() and not np.isin(out, labelled).any()


@pytest.mark.parametrize("name", GROUP_STRATEGIES)
def test_deterministic_and_independent_of_batching_and_order(name: str) -> None:
    ids, group, probs = _pool(4, n=90, ties=True)
    labelled = ids[5:20]
    ref = _select(name, ids, group, 17, probs, labelled, seed=3, round=2, batch_size=1000)
    np.testing.assert_array_equal(
        ref, _select(name, ids, group, 17, probs, labelled, seed=3, round=2))
    for bs in (1, 7):
        np.testing.assert_array_equal(
            _select(name, ids, group, 17, probs, labelled, seed=3, round=2, batch_size=bs), ref)
    perm = np.random.default_rng(5).permutation(len(ids))
    out = _select(name, ids[perm], group[perm], 17, probs[perm], labelled[::-1], seed=3,
                  round=2, batch_size=7)
    np.testing.assert_array_equal(out, ref)


def test_group_random_depends_on_seed_and_round() -> None:
    ids, group, _ = _pool(5, n=200)
    base = set(_select("group_random", ids, group, 10).tolist())
    assert set(_select("group_random", ids, group, 10, seed=1).tolist()) != base
    assert set(_select("group_random", ids, group, 10, round=1).tolist()) != base
    # its keys differ from the plain random strategy's (an independent stream)
    plain = select_in_memory(make_strategy("random", seed=0), ids, group, 10)
    assert set(_select("group_random", ids, group, 10, worst=None).tolist()) != set(plain.tolist())


@pytest.mark.parametrize("name", GROUP_STRATEGIES)
def test_budget_above_unlabelled_and_empty_cases(name: str) -> None:
    ids, group, probs = _pool(7)
    labelled = ids[::3]
    out = _select(name, ids, group, len(ids) + 50, probs, labelled)
    assert sorted(out.tolist()) == sorted(np.setdiff1d(ids, labelled).tolist())
    assert len(_select(name, ids, group, 5, probs, labelled=ids)) == 0
    assert len(_select(name, ids, group, 0, probs)) == 0


def test_group_entropy_requires_probs_and_params_are_checked() -> None:
    ids, group, _ = _pool(8, n=10)
    with pytest.raises(ValueError, match="group_entropy"):
        _select("group_entropy", ids, group, 3)
    with pytest.raises(StrategyParamsError, match="unknown parameter 'temperature'"):
        make_strategy("group_random", seed=0, worst_group=1, temperature=1.0)
    for bad in (1.5, "1", True):
        with pytest.raises(TypeError, match="worst_group"):
            make_strategy("group_random", seed=0, worst_group=bad)
    assert make_strategy("group_random", seed=0, worst_group=np.int64(2)).worst_group == 2


# ---------------------------------------------------------------------------- worst group z*


@pytest.mark.parametrize("name", GROUP_STRATEGIES)
@pytest.mark.parametrize("worst", [0, 1, 2])
def test_picks_only_worst_group_rows_when_it_has_enough(name: str, worst: int) -> None:
    ids, group, probs = _pool(9, n=150)
    labelled = ids[:10]
    avail = int(np.sum((group == worst) & ~np.isin(ids, labelled)))
    for budget in (1, 12, avail):
        out = _select(name, ids, group, budget, probs, labelled, worst=worst)
        assert len(out) == budget
        assert (_group_of(out, ids, group) == worst).all(), (budget, worst)


def test_group_entropy_is_entropy_ranking_within_the_worst_group() -> None:
    ids, group, probs = _pool(10, n=120)
    ent = S.entropy(probs)
    for worst in (0, 2):
        m = group == worst
        want = ids[m][np.argsort(-ent[m])[:9]]
        out = _select("group_entropy", ids, group, 9, probs, worst=worst)
        assert set(out.tolist()) == set(want.tolist())
    # the unrestricted top-9 is not confined to one group, so the restriction matters
    top = ids[np.argsort(-ent)[:9]]
    assert len(np.unique(_group_of(top, ids, group))) > 1


def test_group_random_is_the_uniform_key_order_within_the_worst_group() -> None:
    ids, group, _ = _pool(11, n=120)
    strategy = make_strategy("group_random", seed=4, round=1, worst_group=1)
    key = strategy.score(type("B", (), {"row_id": ids})())
    m = group == 1
    want = ids[m][np.argsort(-key[m])[:7]]
    out = select_in_memory(strategy, ids, group, 7)
    assert set(out.tolist()) == set(want.tolist())
    assert not np.array_equal(key, row_uniform(ids, 4, 1, 0x5EED))  # not the `random` keys


@pytest.mark.parametrize("name", GROUP_STRATEGIES)
def test_fills_from_other_groups_when_the_worst_group_runs_out(name: str) -> None:
    ids, group, probs = _pool(12, n=100)
    worst = 2
    labelled = ids[(group == worst)][:-3]  # only 3 unlabelled rows left in z*
    out = _select(name, ids, group, 10, probs, labelled, worst=worst)
    groups = _group_of(out, ids, group)
    assert len(out) == 10 and (groups == worst).sum() == 3
    assert set(ids[(group == worst) & ~np.isin(ids, labelled)].tolist()) <= set(out.tolist())
    # the fill is the best of the rest under the same score (the unrestricted order)
    rest_ids, rest_group = ids[group != worst], group[group != worst]
    rest_probs = probs[group != worst]
    fill = _select(name, rest_ids, rest_group, 7, rest_probs, worst=None)
    assert set(out[groups != worst].tolist()) == set(fill.tolist())
    # a worst group absent from the pool: plain fill
    out = _select(name, ids, group, 5, probs, worst=7)
    np.testing.assert_array_equal(out, _select(name, ids, group, 5, probs, worst=None))


def test_worst_group_from_metrics() -> None:
    metrics = {"accuracy": 0.8, "acc_group_0": 0.9, "acc_group_1": 0.62, "acc_group_3": 0.7,
               "acc_group_2": float("nan"), "bald_group_1": 0.0, "worst_group_accuracy": 0.1}
    assert worst_group_from_metrics(metrics) == 1
    assert worst_group_from_metrics({"acc_group_4": 0.5, "acc_group_2": 0.5}) == 2  # tie
    assert worst_group_from_metrics({"rob_acc_group_0": 0.2, "rob_acc_group_1": 0.1,
                                     "acc_group_0": 0.0}, prefix="rob_acc_group_") == 1
    with pytest.raises(ValueError, match="acc_group_"):
        worst_group_from_metrics({"accuracy": 0.5})


# ---------------------------------------------------------------------------- JIN maths


def _dist(rng, n, c=4, sharp=1.0) -> np.ndarray:
    return rng.dirichlet(np.full(c, sharp), size=n)


def test_inconsistencies_are_the_kl_of_eq2_and_eq3() -> None:
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.75, 0.0], [0.2, 0.3, 0.5], [0.5, 0.25, 0.25]])
    want = np.array([0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), 0.0, np.log(2)])
    np.testing.assert_allclose(inconsistency_std(p, q), want, atol=1e-12)  # KL(p_S || p_R)
    np.testing.assert_allclose(inconsistency_rob(p, q), want, atol=1e-12)  # KL(p_R || p_R(A))
    assert not np.allclose(inconsistency_std(q, p), want)  # argument order matters
    # MC samples are averaged first; zero mass in q where p has mass stays finite
    mc = np.stack([p, p], axis=2)
    np.testing.assert_allclose(kl_divergence(mc, q), want, atol=1e-12)
    big = kl_divergence([[0.5, 0.5]], [[1.0, 0.0]])
    assert np.isfinite(big).all() and big[0] > 10
    with pytest.raises(ValueError, match="shapes"):
        kl_divergence(p, q[:, :2])


def test_running_moments_merge_like_the_whole() -> None:
    rng = np.random.default_rng(0)
    v = rng.gamma(2.0, 3.0, size=1000) + 1e6  # large offset: needs a stable algorithm
    whole = RunningMoments.of(v)
    assert whole.count == 1000
    assert whole.mean == pytest.approx(v.mean(), rel=1e-14)
    assert whole.std == pytest.approx(v.std(), rel=1e-9)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=6, replace=False))
    parts = [RunningMoments.of(s) for s in np.split(v, cuts)]
    merged = RunningMoments()
    for p in parts[::-1]:  # any order
        merged = merged + p
    assert merged.count == 1000
    assert merged.mean == pytest.approx(whole.mean, rel=1e-14)
    assert merged.variance == pytest.approx(whole.variance, rel=1e-9)
    streamed = RunningMoments()
    for s in np.split(v, cuts):
        streamed.update(s)
    assert streamed.std == pytest.approx(whole.std, rel=1e-9)
    assert RunningMoments.from_dict(merged.to_dict()) == merged
    assert (RunningMoments() + RunningMoments()).count == 0
    with pytest.raises(ValueError, match="finite"):
        RunningMoments.of([1.0, np.nan])


def test_jin_normalisation_is_global_across_shards() -> None:
    rng = np.random.default_rng(1)
    n = 300
    p_s, p_r = _dist(rng, n, sharp=0.5), _dist(rng, n, sharp=2.0)
    p_adv = 0.7 * p_r + 0.3 * _dist(rng, n)
    i_std, i_rob = inconsistency_std(p_s, p_r), inconsistency_rob(p_r, p_adv)
    # shards of very different composition (sorted by I_std: per-shard stats would differ)
    order = np.argsort(i_std)
    shard_idx = np.split(order, [40, 200])

    one = jin_scores(i_std, i_rob, RunningMoments.of(i_std), RunningMoments.of(i_rob))
    # pass 1: per-shard moments, merged; pass 2: per-shard scores with the global moments
    m_std, m_rob = RunningMoments(), RunningMoments()
    for idx in shard_idx:
        m_std = m_std + RunningMoments.of(i_std[idx])
        m_rob = m_rob + RunningMoments.of(i_rob[idx])
    three = np.empty(n)
    for idx in shard_idx:
        three[idx] = jin_scores(i_std[idx], i_rob[idx], m_std, m_rob)
    np.testing.assert_allclose(three, one, rtol=1e-10, atol=1e-12)
    # Eq. 4: each term has mean 0 and std 1 over the scored rows, and they are summed
    z_std, z_rob = z_normalize(i_std, m_std), z_normalize(i_rob, m_rob)
    assert abs(z_std.mean()) < 1e-12 and z_std.std() == pytest.approx(1.0)
    np.testing.assert_allclose(one, z_std + z_rob, rtol=1e-12)
    # the same top-B whatever the split; per-shard normalisation would change it
    top = set(np.argsort(-one)[:30].tolist())
    assert set(np.argsort(-three)[:30].tolist()) == top
    local = np.empty(n)
    for idx in shard_idx:
        local[idx] = jin_scores(i_std[idx], i_rob[idx], RunningMoments.of(i_std[idx]),
                                RunningMoments.of(i_rob[idx]))
    assert set(np.argsort(-local)[:30].tolist()) != top


def test_jin_scores_edge_cases() -> None:
    m = RunningMoments.of([2.0, 2.0, 2.0])
    np.testing.assert_array_equal(z_normalize([2.0, 2.0], m), [0.0, 0.0])  # std 0: no info
    with pytest.raises(ValueError, match="empty"):
        z_normalize([1.0], RunningMoments())
    with pytest.raises(ValueError, match="shapes"):
        jin_scores([1.0, 2.0], [1.0], m, m)
