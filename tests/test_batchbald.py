"""BatchBALD (Kirsch et al. 2019): the joint entropy, the greedy selection and the estimator
against brute force on tiny cases; the ``batchbald`` whole-pool strategy through a stub view.

The brute-force references here are written independently of
:mod:`rayfal.acquisition.batchbald` (``itertools.product`` over label configurations, plain
loops over MC samples).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rayfal.acquisition import (
    StrategyParamsError,
    make_strategy,
    select_in_memory,
    strategy_class,
)
from rayfal.acquisition import batchbald as bb
from rayfal.acquisition.scores import bald, entropy
from rayfal.acquisition.view import WholePoolStrategy

# ------------------------------------------------------------------ brute-force references


def brute_joint_entropy(probs: np.ndarray) -> float:
    """``H(y_1..y_b)``, ``p(y) = (1/T) sum_t prod_i p_i(y_i | w_t)``, one configuration at a
    time."""
    b, c, t = probs.shape
    h = 0.0
    for ys in itertools.product(range(c), repeat=b):
        p = sum(math.prod(probs[i, y, s] for i, y in enumerate(ys)) for s in range(t)) / t
        if p > 0:
            h -= p * math.log(p)
    return h


def brute_cond_entropy(p_ct: np.ndarray) -> float:
    """``E_w H(y|w) = (1/T) sum_t H[p(.|w_t)]`` for one row ``[C, T]``."""
    c, t = p_ct.shape
    return -sum(p_ct[k, s] * math.log(p_ct[k, s]) for k in range(c) for s in range(t)
                if p_ct[k, s] > 0) / t


def brute_batchbald(probs: np.ndarray, batch: list[int]) -> float:
    """``a(B) = H(y_B) - sum_{i in B} E_w H(y_i|w)`` (Kirsch et al. 2019, Eq. 8)."""
    return brute_joint_entropy(probs[batch]) - sum(brute_cond_entropy(probs[i]) for i in batch)


def brute_greedy(probs: np.ndarray, budget: int) -> tuple[list[int], list[float]]:
    batch: list[int] = []
    vals: list[float] = []
    for _ in range(budget):
        rest = [i for i in range(len(probs)) if i not in batch]
        scores = [brute_batchbald(probs, [*batch, i]) for i in rest]
        best = max(range(len(rest)), key=lambda j: (scores[j], -rest[j]))
        batch.append(rest[best])
        vals.append(scores[best])
    return batch, vals


def random_mc(rng: np.random.Generator, n: int, c: int, t: int, conc: float = 0.7) -> np.ndarray:
    """``[n, C, T]`` class probabilities (Dirichlet per row and sample)."""
    return rng.dirichlet(np.full(c, conc), size=(n, t)).transpose(0, 2, 1)


# ------------------------------------------------------------------ joint entropy


def test_joint_entropy_exact_hand_made_values() -> None:
    # two rows whose labels are the same deterministic function of w: perfectly correlated
    a = np.array([[1.0, 0.0], [0.0, 1.0]])  # [C=2, T=2]: class t under w_t
    assert bb.joint_entropy_exact(np.stack([a, a])) == pytest.approx(math.log(2))
    # T=4, labels t % 2 and t // 2: independent fair coins -> log 4
    x = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], float)
    y = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], float)
    assert bb.joint_entropy_exact(np.stack([x, y])) == pytest.approx(math.log(4))
    # a single row: entropy of its MC mean
    p = np.array([[0.2, 0.6, 0.9], [0.8, 0.4, 0.1]])
    m = p.mean(axis=1)
    assert bb.joint_entropy_exact(p[None]) == pytest.approx(-(m * np.log(m)).sum())
    assert bb.joint_entropy_exact(np.zeros((0, 2, 3))) == 0.0


@pytest.mark.parametrize(("b", "c", "t", "seed"), [(1, 3, 5, 0), (2, 2, 3, 1), (3, 3, 2, 2),
                                                   (4, 2, 6, 3), (3, 4, 4, 4)])
def test_joint_entropy_exact_equals_brute_force(b, c, t, seed) -> None:
    probs = random_mc(np.random.default_rng(seed), b, c, t)
    probs[0, 0, 0] = 0.0  # a zero probability (0 log 0 = 0) ...
    probs[0, :, 0] /= probs[0, :, 0].sum()  # ... in a still-normalised sample
    assert bb.joint_entropy_exact(probs) == pytest.approx(brute_joint_entropy(probs), abs=1e-12)


def test_joint_entropy_of_one_row_is_the_entropy_of_the_mean() -> None:
    probs = random_mc(np.random.default_rng(5), 7, 4, 6)
    got = [bb.joint_entropy_exact(probs[i : i + 1]) for i in range(7)]
    np.testing.assert_allclose(got, entropy(probs), atol=1e-12)


def test_joint_entropy_exact_refuses_too_many_configurations() -> None:
    probs = random_mc(np.random.default_rng(0), 5, 3, 2)  # 3**5 = 243
    assert bb.joint_entropy_exact(probs, max_configs=243) > 0
    with pytest.raises(ValueError, match=r"3\*\*5 configurations exceed max_configs=242"):
        bb.joint_entropy_exact(probs, max_configs=242)


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match=r"\[N, C, T\]"):
        bb.batchbald_select(np.ones((3, 2)), 1)
    with pytest.raises(ValueError, match="finite"):
        bb.batchbald_select(np.full((3, 2, 2), np.nan), 1)
    with pytest.raises(ValueError, match="non-negative"):
        bb.joint_entropy_exact(-np.ones((1, 2, 2)))


# ------------------------------------------------------------------ greedy selection


@pytest.mark.parametrize("exact_max_configs", [10_000, 1])
def test_batch_of_one_is_bald(exact_max_configs) -> None:
    """``a({x}) = I(y; w)``: BatchBALD's first pick and score are BALD's (the sampled
    estimator is exact for k = 1)."""
    probs = random_mc(np.random.default_rng(7), 40, 3, 8)
    idx, score = bb.batchbald_select(probs, 1, exact_max_configs=exact_max_configs,
                                     num_samples=3, return_scores=True)
    b = bald(probs)
    assert idx.tolist() == [int(np.argmax(b))]
    assert score[0] == pytest.approx(b.max(), abs=1e-12)
    per_row = [bb.joint_entropy_exact(probs[i : i + 1]) for i in range(40)]
    np.testing.assert_allclose(np.array(per_row) - bb.conditional_entropy(probs), b, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_greedy_batch_equals_brute_force_greedy(seed) -> None:
    probs = random_mc(np.random.default_rng(100 + seed), 6, 2, 4)
    idx, scores = bb.batchbald_select(probs, 3, return_scores=True)
    ref, ref_scores = brute_greedy(probs, 3)
    assert idx.tolist() == ref
    np.testing.assert_allclose(scores, ref_scores, atol=1e-12)


def test_greedy_batch_equals_brute_force_with_three_classes() -> None:
    probs = random_mc(np.random.default_rng(11), 7, 3, 5)
    idx, scores = bb.batchbald_select(probs, 4, return_scores=True)
    ref, ref_scores = brute_greedy(probs, 4)
    assert idx.tolist() == ref
    np.testing.assert_allclose(scores, ref_scores, atol=1e-12)


def test_sampled_estimator_approaches_the_exact_joint_entropy() -> None:
    """exact_max_configs=1 forces the sampled estimate (E2) from step 1: with many samples its
    batch scores are close to the exact a(B_k) of the same batch, and not identical to them
    (so the sampled path really ran)."""
    probs = random_mc(np.random.default_rng(21), 8, 3, 6)
    idx, scores = bb.batchbald_select(probs, 4, exact_max_configs=1, num_samples=20_000,
                                      seed=4, return_scores=True)
    exact = [brute_batchbald(probs, idx[: k + 1].tolist()) for k in range(4)]
    np.testing.assert_allclose(scores, exact, atol=0.02)
    assert np.abs(scores[1:] - exact[1:]).max() > 1e-9
    few = bb.batchbald_select(probs, 4, exact_max_configs=1, num_samples=20, seed=4,
                              return_scores=True)[1]
    assert np.abs(few[1:] - np.array(exact[1:])).max() > np.abs(scores - exact).max()
    # the joint entropy estimator on its own
    batch = random_mc(np.random.default_rng(22), 4, 3, 5)
    est = bb.joint_entropy_sampled(batch, 40_000, seed=1)
    assert est == pytest.approx(brute_joint_entropy(batch), abs=0.02)
    assert bb.joint_entropy_sampled(batch[:1], 1, seed=1) == pytest.approx(
        brute_joint_entropy(batch[:1]), abs=1e-12)


def test_sampled_scores_of_the_chosen_batch_have_no_winners_curse() -> None:
    """Valued with the configurations that picked them, greedy picks are overrated and the
    error adds up over the steps (here about +0.09 nats after 8 sampled steps); the reported
    a(B_k) uses independent configurations, so averaged over seeds it matches the exact value
    of the batch actually chosen."""
    probs = random_mc(np.random.default_rng(61), 40, 3, 4, conc=0.5)
    err = []
    for seed in range(60):
        idx, scores = bb.batchbald_select(probs, 8, exact_max_configs=1, num_samples=300,
                                          seed=seed, return_scores=True)
        # joint_entropy_exact is checked against brute force above (and is 100x faster)
        exact = bb.joint_entropy_exact(probs[idx]) - sum(brute_cond_entropy(probs[i]) for i in idx)
        err.append(scores[-1] - exact)
    assert abs(np.mean(err)) < 0.03


def test_switch_from_exact_to_sampled_mid_batch() -> None:
    """C**k crosses exact_max_configs at k = 3: the first two steps are exact, the rest
    sampled from configurations drawn at the switch; all close to the exact scores."""
    probs = random_mc(np.random.default_rng(31), 9, 3, 6)
    idx, scores = bb.batchbald_select(probs, 5, exact_max_configs=9, num_samples=20_000,
                                      seed=2, return_scores=True)
    exact = [brute_batchbald(probs, idx[: k + 1].tolist()) for k in range(5)]
    np.testing.assert_allclose(scores[:2], exact[:2], atol=1e-12)
    np.testing.assert_allclose(scores, exact, atol=0.03)
    assert idx[:2].tolist() == brute_greedy(probs, 2)[0]


def test_duplicates_are_not_both_picked() -> None:
    """Two identical, most informative rows: top-k BALD takes both, BatchBALD takes one and
    then the distinct, less BALD-informative row whose label says something new about w."""
    a = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], float)  # label = t % 2: BALD = log 2
    b = np.array([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]])  # label ~ t // 2: BALD ~ 0.37
    dull = np.full((2, 4), 0.5)  # BALD 0
    probs = np.stack([dull, a, a.copy(), b, dull])
    assert np.argsort(-bald(probs), kind="stable")[:2].tolist() == [1, 2]
    for cfg in (10_000, 1):  # exact and sampled joint entropy
        picked = bb.batchbald_select(probs, 2, exact_max_configs=cfg, num_samples=2000)
        assert picked.tolist() == [1, 3], cfg


def test_ties_go_to_the_lowest_index_and_budget_is_clipped() -> None:
    probs = np.tile(np.array([[0.3, 0.7], [0.7, 0.3]])[None], (5, 1, 1))
    np.testing.assert_array_equal(bb.batchbald_select(probs, 3), [0, 1, 2])
    assert bb.batchbald_select(probs, 0).tolist() == []
    np.testing.assert_array_equal(bb.batchbald_select(probs, 99), np.arange(5))
    with pytest.raises(ValueError, match="num_samples"):
        bb.batchbald_select(probs, 2, num_samples=0)


def test_selection_is_seed_deterministic_and_chunk_independent(monkeypatch) -> None:
    probs = random_mc(np.random.default_rng(41), 60, 4, 5)
    kw = dict(exact_max_configs=16, num_samples=300)
    a = bb.batchbald_select(probs, 8, seed=3, return_scores=True, **kw)
    b = bb.batchbald_select(probs, 8, seed=3, return_scores=True, **kw)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = bb.batchbald_select(probs, 8, seed=4, return_scores=True, **kw)
    assert not np.array_equal(a[1][2:], c[1][2:])  # sampled steps depend on the seed
    monkeypatch.setattr(bb, "_CHUNK_ELEMS", 50)
    d = bb.batchbald_select(probs, 8, seed=3, return_scores=True, **kw)
    np.testing.assert_array_equal(a[0], d[0])
    np.testing.assert_allclose(a[1], d[1], atol=1e-12)
    assert len(np.unique(a[0])) == 8


# ------------------------------------------------------------------ the strategy


class StubView:
    """What ``BatchBaldStrategy.select_pool`` reads of a PoolView: ``unlabelled_ids`` and
    ``gather(row_ids, ("mc",))`` (rows sorted by row_id)."""

    def __init__(self, ids: np.ndarray, mc: np.ndarray) -> None:
        self.unlabelled_ids = np.asarray(ids, np.int64)
        self.unlabelled_groups = np.zeros(len(ids), np.int64)
        self._mc = dict(zip(self.unlabelled_ids.tolist(), mc, strict=True))
        self.asked: list[np.ndarray] = []

    def gather(self, row_ids, what=("x",)):
        assert tuple(what) == ("mc",)
        rid = np.sort(np.asarray(row_ids, np.int64))
        self.asked.append(rid)
        return {"row_id": rid, "group": np.zeros(len(rid), np.int64),
                "mc": np.stack([self._mc[r] for r in rid.tolist()])}


@pytest.fixture
def stub():
    rng = np.random.default_rng(51)
    ids = rng.choice(10**6, 40, replace=False).astype(np.int64) * 7 - 3_000_000
    mc = random_mc(rng, 40, 3, 6).astype(np.float32)
    return ids, mc


def test_strategy_protocol_and_params() -> None:
    cls = strategy_class("batchbald")
    assert issubclass(cls, WholePoolStrategy) and cls.kind == "whole_pool"
    assert cls.requires == {"model"} and cls.summary and "\n" not in cls.summary
    p = make_strategy("batchbald", seed=0).params
    assert (p.candidates, p.subsample, p.num_samples, p.exact_max_configs) == (200, 5000, 1000,
                                                                                10_000)
    assert make_strategy("batchbald", seed=0, subsample=None).params.subsample is None
    with pytest.raises(StrategyParamsError, match=r"strategy 'batchbald'.*unknown parameter "
                       r"'num_sample'"):
        make_strategy("batchbald", seed=0, num_sample=10)
    for key in ("candidates", "subsample", "num_samples", "exact_max_configs"):
        with pytest.raises(StrategyParamsError, match=rf"strategy 'batchbald': params\.{key}=0"):
            make_strategy("batchbald", seed=0, **{key: 0})
    with pytest.raises(StrategyParamsError, match=r"params\.candidates=2.5"):
        make_strategy("batchbald", seed=0, candidates=2.5)


def test_budget_one_is_balds_top_row(stub) -> None:
    ids, mc = stub
    ref = select_in_memory(make_strategy("bald", seed=0), ids, np.zeros(len(ids), np.int64), 1,
                           probs=mc)
    for params in ({}, {"candidates": 1}, {"exact_max_configs": 1, "num_samples": 5}):
        out = make_strategy("batchbald", seed=0, **params).select_pool(StubView(ids, mc), 1)
        assert out.dtype == np.int64 and out.tolist() == ref.tolist(), params


def test_strategy_equals_batchbald_on_the_bald_prefiltered_rows(stub) -> None:
    ids, mc = stub
    strat = make_strategy("batchbald", seed=2, round=1, candidates=12, num_samples=50,
                          exact_max_configs=30)
    out = strat.select_pool(StubView(ids, mc), 5)
    order = np.argsort(ids)
    sid, smc = ids[order], mc[order]
    b = bald(smc)
    top = np.argsort(-b, kind="stable")[:12]  # no BALD ties in this pool
    assert len(np.unique(b)) == len(b)
    assert np.isin(out, sid[top]).all() and len(np.unique(out)) == 5
    ref = bb.batchbald_select(smc[top], 5, num_samples=50, exact_max_configs=30,
                              seed=[2, 1, 0xBA7C4])
    np.testing.assert_array_equal(out, sid[top][ref])


def test_strategy_is_seed_deterministic_and_uses_the_subsample(stub) -> None:
    ids, mc = stub
    kw = dict(candidates=15, subsample=20, num_samples=64, exact_max_configs=3)
    runs = [make_strategy("batchbald", seed=5, **kw).select_pool(StubView(ids, mc), 6)
            for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    view = StubView(ids, mc)
    strat = make_strategy("batchbald", seed=5, **kw)
    out = strat.select_pool(view, 6)
    cand = strat.candidates(view, 20)
    assert len(cand) == 20 and np.isin(out, cand).all()
    np.testing.assert_array_equal(view.asked[0], np.sort(cand))  # only the subsample is scored


@pytest.mark.parametrize("budget", [12, 40, 100])
def test_budget_above_candidates_returns_min_budget_unlabelled(stub, budget) -> None:
    ids, mc = stub
    out = make_strategy("batchbald", seed=1, candidates=5, subsample=3, num_samples=32,
                        exact_max_configs=100).select_pool(StubView(ids, mc), budget)
    assert len(out) == min(budget, len(ids)) == len(np.unique(out))
    assert np.isin(out, ids).all()
    assert make_strategy("batchbald", seed=1).select_pool(StubView(ids, mc), 0).tolist() == []
