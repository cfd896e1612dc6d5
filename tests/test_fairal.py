"""Tests of rayfal.acquisition.fairal (Fair Active Learning, Anahideh et al. 2022)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from rayfal.acquisition.fairal import (
    LogisticHead,
    RefitConfig,
    combine_scores,
    fairal_fast,
    fairal_reference,
    fairal_select,
    fairal_sklearn,
    fit_exact,
    fit_logistic_head,
    refit_head,
    resolve_alpha,
    sensitive_columns,
    unfairness,
    unfairness_batched,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- hand-made pool
#
# Features (g, f): g is the group indicator. L makes the head lean on g (group 1 positive,
# group 0 negative), so its predictions on the fairness set (f uniform in [-2, 2] in both
# groups) have a large demographic-parity gap. The fair candidates are the group-0 point that is
# likely positive (A) and the group-1 point that is likely negative (D): their likely labels
# counter the bias. G sits on the head's decision boundary (max entropy) but, like the others,
# does not reduce the expected gap.

A, B_, C, D, E, F, G = range(7)
CAND = np.array([[0, 2.0], [1, 2.0], [0, -2.0], [1, -2.0], [0, 0.0], [1, 0.0], [0, 1.54]])


def _biased_setup():
    xl = np.array([[1, -1], [1, 0], [1, 1], [1, -3.0], [0, -1], [0, 0], [0, 1], [0, 3.0]])
    yl = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    f = np.linspace(-2, 2, 41)
    xf = np.r_[np.c_[np.zeros(41), f], np.c_[np.ones(41), f]]
    gf = np.r_[np.zeros(41, int), np.ones(41, int)]
    head = fit_logistic_head(xl, yl, 2, steps=500, lr=1.0, l2=1e-2)
    return head, xl, yl, xf, gf


CFG = RefitConfig(steps=20, lr=1.0, l2=1e-2)


def test_known_answer_fair_choice_is_obvious() -> None:
    head, xl, yl, xf, gf = _biased_setup()
    before = unfairness(head.predict(torch.tensor(xf)).numpy(), gf)
    assert before > 0.5  # the current head is clearly unfair
    s = fairal_reference(head, xl, yl, CAND, xf, gf, refit=CFG, alpha=0.0)
    # the likely label of A (positive, disadvantaged group) and D (negative, advantaged) helps
    assert s.probs[A, 1] > 0.5 and s.probs[D, 1] < 0.5
    assert s.unfairness_per_label[A, 1] < before and s.unfairness_per_label[D, 0] < before
    others = [B_, C, E, F, G]
    assert max(s.expected_unfairness[[A, D]]) < min(s.expected_unfairness[others]) - 0.01
    assert int(np.argmax(s.entropy)) == G
    # alpha = 0: pure expected fairness; alpha = 1: pure entropy
    fair_pick = fairal_select(head, xl, yl, CAND, xf, gf, 2, alpha=0.0, refit=CFG)
    assert set(fair_pick.tolist()) == {A, D}
    assert fairal_select(head, xl, yl, CAND, xf, gf, 1, alpha=1.0, refit=CFG).tolist() == [G]
    # nested: the 3 most uncertain are G, A, D; of those the 2 fairest are A and D
    nested = fairal_select(head, xl, yl, CAND, xf, gf, 2, mode="nested", nested_k=3, refit=CFG)
    assert set(nested.tolist()) == {A, D}


def test_combined_score_formula() -> None:
    e = np.array([0.1, 0.5, 0.3])
    big_e = np.array([2.0, 4.0, 3.0])
    got = combine_scores(e, big_e, 0.25)
    want = 0.25 * (e - 0.1) / 0.4 + 0.75 * (4.0 - big_e) / 2.0
    np.testing.assert_allclose(got, want)
    # a constant term contributes nothing (no division by zero)
    np.testing.assert_allclose(combine_scores(e, np.ones(3), 0.5), 0.5 * (e - 0.1) / 0.4)


# ----------------------------------------------------------------------------- measures

GROUPS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
Y_TRUE = np.array([1, 1, 0, 0, 1, 1, 0, 0])
PREDS = np.array([1, 1, 0, 0, 1, 0, 1, 1])  # rates 0.5 vs 0.75; TPR 1.0 vs 0.5


@pytest.mark.parametrize(
    ("measure", "want"),
    [
        ("dp", 0.25),
        ("eo", 0.5),
        # joint P(a, c): (0,0)=2/8, (0,1)=2/8, (1,0)=1/8, (1,1)=3/8; P(a)=1/2, P(c=1)=5/8
        ("mi", 2 / 8 * math.log((2 / 8) / (1 / 2 * 3 / 8)) + 2 / 8 * math.log((2 / 8) / (1 / 2 * 5 / 8))
         + 1 / 8 * math.log((1 / 8) / (1 / 2 * 3 / 8)) + 3 / 8 * math.log((3 / 8) / (1 / 2 * 5 / 8))),
    ],
)
def test_each_measure_hand_made(measure: str, want: float) -> None:
    assert unfairness(PREDS, GROUPS, Y_TRUE, measure=measure) == pytest.approx(want)
    batched = unfairness_batched(np.c_[PREDS, PREDS[::-1]], GROUPS, Y_TRUE, measure=measure)
    assert batched[0] == pytest.approx(want)
    rev = unfairness(PREDS[::-1], GROUPS, Y_TRUE, measure=measure)
    assert batched[1] == pytest.approx(rev)


def test_mutual_information_extremes() -> None:
    assert unfairness(GROUPS, GROUPS, measure="mi") == pytest.approx(math.log(2))
    independent = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    assert unfairness(independent, GROUPS, measure="mi") == pytest.approx(0.0, abs=1e-12)
    assert unfairness_batched(GROUPS, GROUPS, measure="mi")[0] == pytest.approx(math.log(2))


def test_multiclass_measures_hand_made() -> None:
    g = np.array([0, 0, 0, 1, 1, 1])
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.array([0, 1, 2, 0, 0, 0])  # group 1 always predicts class 0
    # DP: class-0 rates 1/3 vs 1 -> 2/3; EO: recall of class 1 (or 2) 1 vs 0 -> 1
    assert unfairness(p, g, measure="dp", n_labels=3) == pytest.approx(2 / 3)
    assert unfairness(p, g, y, measure="eo", n_labels=3) == pytest.approx(1.0)
    for m, want in (("dp", 2 / 3), ("eo", 1.0)):
        assert unfairness_batched(p, g, y, measure=m, n_labels=3)[0] == pytest.approx(want)


def test_eo_needs_labels() -> None:
    head, xl, yl, xf, gf = _biased_setup()
    with pytest.raises(ValueError, match="y_fair"):
        fairal_fast(head, xl, yl, CAND, xf, gf, measure="eo")


# ----------------------------------------------------------------------------- fast == reference


def _random_problem(seed: int, c_out: int):
    rng = np.random.default_rng(seed)
    d = 5
    k = 2 if c_out == 1 else c_out
    xl = rng.normal(size=(30, d))
    yl = (xl[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(int) if k == 2 else rng.integers(0, k, 30)
    xc = rng.normal(size=(13, d)) * 1.5
    xf = rng.normal(size=(70, d))
    gf = rng.integers(0, 3, 70)
    yf = rng.integers(0, k, 70)
    head = fit_logistic_head(xl, yl, k, binary=(c_out == 1), steps=60, lr=0.5)
    return head, xl, yl, xc, xf, gf, yf


@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("measure", ["dp", "eo", "mi"])
def test_fast_equals_reference(c_out: int, measure: str) -> None:
    head, xl, yl, xc, xf, gf, yf = _random_problem(7 + c_out, c_out)
    cfg = RefitConfig(steps=8, lr=1.0, l2=1e-3)
    kw = dict(y_fair=yf, measure=measure, refit=cfg, alpha=0.4)
    ref = fairal_reference(head, xl, yl, xc, xf, gf, **kw)
    fast = fairal_fast(head, xl, yl, xc, xf, gf, chunk_size=4, **kw)  # 4 chunks, last partial
    auto = fairal_fast(head, xl, yl, xc, xf, gf, **kw)
    assert len(np.unique(ref.expected_unfairness)) > 3  # the refits really differ
    for got in (fast, auto):
        np.testing.assert_allclose(got.unfairness_per_label, ref.unfairness_per_label, atol=1e-9)
        np.testing.assert_allclose(got.expected_unfairness, ref.expected_unfairness, atol=1e-9)
        np.testing.assert_allclose(got.score, ref.score, atol=1e-9)
    for mode in ("batch", "nested"):
        sel = [fairal_select(head, xl, yl, xc, xf, gf, 4, mode=mode, nested_k=8, engine=e, **kw)
               for e in ("fast", "reference")]
        assert sel[0].tolist() == sel[1].tolist()


def test_fast_refit_matches_single_refit_weights() -> None:
    """The per-pair weights of the batched program are those of refit_head (checked via the
    fairness-set logits, which would move if any pair's step used another pair's data)."""
    head, xl, yl, xc, xf, gf, _ = _random_problem(3, 1)
    cfg = RefitConfig(steps=5, lr=0.7, l2=1e-2)
    x_aug = torch.cat([torch.tensor(xl), torch.tensor(xc[2:3])])
    y_aug = torch.cat([torch.tensor(yl), torch.tensor([1])])
    single = refit_head(head, x_aug, y_aug, cfg)
    # a candidate equal to an L row labelled like it is not the same as no candidate
    assert not torch.allclose(single.weight, refit_head(head, torch.tensor(xl), torch.tensor(yl),
                                                        cfg).weight)
    ref = fairal_reference(head, xl, yl, xc, xf, gf, refit=cfg)
    fast = fairal_fast(head, xl, yl, xc, xf, gf, refit=cfg, chunk_size=1)
    preds = single.predict(torch.tensor(xf)).numpy()
    assert ref.unfairness_per_label[2, 1] == unfairness(preds, gf)
    assert fast.unfairness_per_label[2, 1] == pytest.approx(ref.unfairness_per_label[2, 1])


# ----------------------------------------------------------------------------- modes


def test_sequential_matches_manual_fal_loop() -> None:
    head, xl, yl, xc, xf, gf, _ = _random_problem(11, 1)
    cfg = RefitConfig(steps=6, lr=1.0, l2=1e-3)
    hidden = (xc[:, 0] > 0).astype(int)
    calls: list[int] = []

    def oracle(i: int) -> int:
        calls.append(i)
        return int(hidden[i])

    got = fairal_select(head, xl, yl, xc, xf, gf, 4, mode="sequential", oracle=oracle,
                        alpha=0.3, refit=cfg)
    assert calls == got.tolist() and len(set(got.tolist())) == 4
    # independent re-implementation of FAL's loop with the reference scorer
    h = head
    xl_t, yl_t = torch.tensor(xl), torch.tensor(yl)
    remaining = list(range(len(xc)))
    want = []
    for _ in range(4):
        s = fairal_reference(h, xl_t, yl_t, xc[remaining], xf, gf, refit=cfg, alpha=0.3)
        best = remaining[int(np.argmax(s.score))]
        want.append(best)
        remaining.remove(best)
        xl_t = torch.cat([xl_t, torch.tensor(xc[best : best + 1])])
        yl_t = torch.cat([yl_t, torch.tensor([hidden[best]])])
        h = refit_head(h, xl_t, yl_t, cfg)
    assert got.tolist() == want
    # and it is not simply the batch top-4 (the refit between picks matters here)
    batch = fairal_select(head, xl, yl, xc, xf, gf, 4, alpha=0.3, refit=cfg)
    assert batch.tolist() != want


def test_sequential_needs_oracle_and_budget_edge_cases() -> None:
    head, xl, yl, xf, gf = _biased_setup()
    with pytest.raises(ValueError, match="oracle"):
        fairal_select(head, xl, yl, CAND, xf, gf, 2, mode="sequential")
    with pytest.raises(ValueError, match="mode"):
        fairal_select(head, xl, yl, CAND, xf, gf, 2, mode="greedy")
    everything = fairal_select(head, xl, yl, CAND, xf, gf, 100, refit=CFG)
    assert sorted(everything.tolist()) == list(range(len(CAND)))
    assert fairal_select(head, xl, yl, CAND, xf, gf, 0).tolist() == []


def test_alpha_schedules() -> None:
    assert resolve_alpha(0.3, 5, 10) == 0.3
    lin = {"start": 1.0, "end": 0.0}
    assert [resolve_alpha(lin, r, 3) for r in range(3)] == [1.0, 0.5, 0.0]
    assert resolve_alpha(lin, 0, 1) == 1.0
    assert resolve_alpha(lambda r, n: 0.1 * r, 4, 10) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        resolve_alpha({"start": 1.0}, 0, 2)
    with pytest.raises(ValueError):
        resolve_alpha(1.5)
    # the schedule reaches the selection: round 0 of 2 is entropy-only, round 1 fairness-only
    head, xl, yl, xf, gf = _biased_setup()
    picks = [fairal_select(head, xl, yl, CAND, xf, gf, 1, alpha=lin, round=r, n_rounds=2,
                           refit=CFG).tolist() for r in (0, 1)]
    assert picks == [[G], [A]]


def test_head_validation() -> None:
    with pytest.raises(ValueError, match="bias"):
        LogisticHead(torch.zeros(3, 2), torch.zeros(3))
    head, xl, yl, xf, gf = _biased_setup()
    with pytest.raises(ValueError, match="x_cand"):
        fairal_fast(head, xl, yl, np.zeros((2, 5)), xf, gf)


def test_one_newton_step_fast_equals_reference() -> None:
    """Sherman-Morrison batched Newton step == explicit Hessian solve per (candidate, label)."""
    head, xl, yl, xc, xf, gf, yf = _random_problem(21, 1)
    cfg = RefitConfig(steps=1, lr=1.0, l2=1e-2, method="newton")
    for measure in ("dp", "eo"):
        ref = fairal_reference(head, xl, yl, xc, xf, gf, y_fair=yf, measure=measure, refit=cfg)
        fast = fairal_fast(head, xl, yl, xc, xf, gf, y_fair=yf, measure=measure, refit=cfg,
                           chunk_size=5)
        assert len(np.unique(ref.expected_unfairness)) > 3
        np.testing.assert_allclose(fast.unfairness_per_label, ref.unfairness_per_label, atol=1e-9)
    # one Newton step from a converged head captures most of a (low-leverage) refit's change
    conv = fit_logistic_head(xl, yl, 2, steps=1500, lr=1.0, l2=1e-2)
    x_aug = torch.cat([torch.tensor(xl), torch.tensor(xc[:1])])
    y_aug = torch.cat([torch.tensor(yl), torch.tensor([1])])
    one = refit_head(conv, x_aug, y_aug, cfg)
    full = refit_head(conv, x_aug, y_aug, RefitConfig(steps=1500, lr=1.0, l2=1e-2))
    assert (one.weight - full.weight).norm() < 0.1 * (full.weight - conv.weight).norm()
    with pytest.raises(ValueError, match="one Newton step"):
        fairal_fast(head, xl, yl, xc, xf, gf, refit=RefitConfig(steps=2, method="newton"))


# ----------------------------------------------------------------------------- faithful protocol
#
# FairAL as its authors ran it (anahideh/FAL--Fair-Active-Learning, FAL/FAL_sklearn.py):
# sequential, every refit sklearn's LogisticRegression(solver="liblinear", C=1) from scratch,
# U as the fairness set, the sensitive attribute not a feature, alpha their 11-level staircase.

EXACT = RefitConfig(method="exact")


def _binary_problem(seed: int, n_l: int = 12, d: int = 6):
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(n_l, d))
    yl = (xl[:, 0] + 0.7 * rng.normal(size=n_l) > 0).astype(int)
    yl[:2] = [0, 1]  # both labels present (liblinear refuses a one-class fit)
    xc = rng.normal(size=(15, d)) * 1.5
    gf = rng.integers(0, 2, 300)
    xf = rng.normal(size=(300, d)) + 0.8 * gf[:, None] * np.eye(d)[0]
    return xl, yl, xc, xf, gf


def test_exact_fit_is_liblinears_minimiser() -> None:
    """fit_exact minimises liblinear's objective (intercept penalised): the same weights as
    sklearn's LogisticRegression(solver='liblinear', C) to its tolerance, for two C; without
    the intercept penalty the weights differ (so the test can tell)."""
    from sklearn.linear_model import LogisticRegression

    xl, yl, *_ = _binary_problem(0, n_l=40)
    for c in (1.0, 0.1):
        cfg = RefitConfig(method="exact", C=c, tol=1e-10)
        head = fit_exact(xl, yl, cfg)
        sk = LogisticRegression(solver="liblinear", C=c, tol=1e-10, max_iter=1000).fit(xl, yl)
        theta = torch.cat([head.weight[:, 0], head.bias]).numpy()
        np.testing.assert_allclose(theta, np.r_[sk.coef_[0], sk.intercept_], atol=1e-6)
    free = fit_exact(xl, yl, RefitConfig(method="exact", penalize_bias=False, tol=1e-10))
    assert abs(float(free.bias[0]) - float(fit_exact(xl, yl, RefitConfig(
        method="exact", tol=1e-10)).bias[0])) > 1e-3
    # refit_head with method 'exact' ignores the head it is given: from scratch
    other = LogisticHead(torch.ones(6, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    again = refit_head(other, torch.tensor(xl), torch.tensor(yl), EXACT)
    np.testing.assert_allclose(again.weight.numpy(), fit_exact(xl, yl, EXACT).weight.numpy())
    with pytest.warns(RuntimeWarning, match="stopping rule"):
        fit_exact(xl, yl, RefitConfig(method="exact", max_iter=1))


@pytest.mark.parametrize("measure", ["mi", "dp"])
def test_exact_fast_equals_reference_and_sklearn(measure: str) -> None:
    """The batched exact refits (Newton-PCG from the fit on L) reach the same minimisers as the
    one-at-a-time reference (Newton from zero) and as sklearn's liblinear: identical F_k at a
    tight tolerance; at liblinear's default tolerance the same E ranking."""
    from scipy.stats import spearmanr

    xl, yl, xc, xf, gf = _binary_problem(3)
    tight = RefitConfig(method="exact", tol=1e-10, max_iter=200)
    head = fit_exact(xl, yl, tight)
    kw = dict(measure=measure, refit=tight, alpha=0.4)
    ref = fairal_reference(head, xl, yl, xc, xf, gf, **kw)
    fast = fairal_fast(head, xl, yl, xc, xf, gf, chunk_size=4, **kw)
    sk = fairal_sklearn(head, xl, yl, xc, xf, gf, **kw)
    assert len(np.unique(ref.expected_unfairness)) > 5  # the refits really differ
    np.testing.assert_allclose(fast.unfairness_per_label, ref.unfairness_per_label, atol=1e-12)
    np.testing.assert_allclose(sk.unfairness_per_label, ref.unfairness_per_label, atol=1e-12)
    np.testing.assert_allclose(sk.probs, ref.probs, atol=1e-6)
    head = fit_exact(xl, yl, EXACT)
    fast = fairal_fast(head, xl, yl, xc, xf, gf, measure=measure, refit=EXACT)
    sk = fairal_sklearn(head, xl, yl, xc, xf, gf, measure=measure, refit=EXACT)
    assert spearmanr(fast.expected_unfairness, sk.expected_unfairness).statistic > 0.99
    with pytest.raises(ValueError, match="exact"):
        fairal_sklearn(head, xl, yl, xc, xf, gf, refit=RefitConfig())


def test_authors_alpha_staircase() -> None:
    """alpha = np.linspace(1, 0, 11)[min(10, floor(Iter / int(b / 11)))] (FAL_sklearn.py line
    25, b = 200 as in test_FAL.py), and per-label indexing through fairal_select."""
    sched = {"start": 1.0, "end": 0.0, "levels": 11}
    want = np.linspace(1, 0, 11)
    got = [resolve_alpha(sched, t, 200) for t in range(200)]
    assert got == [want[min(10, t // 18)] for t in range(200)]
    assert resolve_alpha(sched, 0, 5) == 1.0 and resolve_alpha(sched, 4, 5) == want[4]  # b < 11
    with pytest.raises(ValueError, match="levels"):
        resolve_alpha({**sched, "levels": 1}, 0, 2)
    # per label: pick j of round r is label r * budget + j; two levels over 2 rounds x 2 labels
    head, xl, yl, xf, gf = _biased_setup()
    seen: list[float] = []

    def alpha(t: int, n: int) -> float:  # a callable sees (round, n_rounds) only
        seen.append(t)
        return 0.5

    fairal_select(head, xl, yl, CAND, xf, gf, 2, mode="sequential", oracle=lambda i: 1,
                  alpha=alpha, round=1, n_rounds=2, refit=CFG)
    assert set(seen) == {1}
    two = {"start": 1.0, "end": 0.0, "levels": 2, "per": "label"}
    # round 0, budget 2 of 4 labels: both picks at alpha = 1 (entropy only): G first
    first = fairal_select(head, xl, yl, CAND, xf, gf, 2, mode="sequential",
                          oracle=lambda i: int(CAND[i, 1] > 0), alpha=two, round=0,
                          n_rounds=2, refit=CFG)
    assert first[0] == G
    # round 1: labels 2 and 3, alpha = 0 (fairness only): A or D first, as alpha = 0 picks
    second = fairal_select(head, xl, yl, CAND, xf, gf, 1, mode="sequential",
                           oracle=lambda i: 1, alpha=two, round=1, n_rounds=2, refit=CFG)
    assert second.tolist() == fairal_select(head, xl, yl, CAND, xf, gf, 1, alpha=0.0,
                                            refit=CFG).tolist()


def test_faithful_sequential_fast_equals_sklearn_loop() -> None:
    """mode='sequential' with exact refits (from scratch after each label, FAL_sklearn.py line
    51): the fast engine's picks are the sklearn engine's (the authors' loop)."""
    xl, yl, xc, xf, gf = _binary_problem(5)
    hidden = (xc[:, 0] > 0).astype(int)
    cfg = RefitConfig(method="exact", tol=1e-8)
    head = fit_exact(xl, yl, cfg)
    sched = {"start": 1.0, "end": 0.0, "levels": 3, "per": "label"}
    picks = {e: fairal_select(head, xl, yl, xc, xf, gf, 6, mode="sequential",
                              oracle=lambda i: int(hidden[i]), alpha=sched, measure="mi",
                              refit=cfg, engine=e).tolist() for e in ("fast", "sklearn")}
    assert picks["fast"] == picks["sklearn"] and len(set(picks["fast"])) == 6


def test_faithful_params() -> None:
    """protocol: faithful fills the authors' settings for the keys not given; explicit keys win;
    inconsistent combinations are refused at load time."""
    from rayfal.acquisition import StrategyParamsError, make_strategy
    from rayfal.acquisition.fairal import FAITHFUL_DEFAULTS

    s = make_strategy("fairal", seed=0, protocol="faithful")
    p = s.params
    assert (p.mode, p.refit, p.fair_set, p.measure, p.drop_features) == (
        "sequential", "scratch", "pool", "mi", "auto")
    assert p.alpha_value() == {"start": 1.0, "end": 0.0, "levels": 11, "per": "label"}
    assert s.refit_cfg == RefitConfig(method="exact", C=1.0, tol=1e-4, penalize_bias=True,
                                      max_iter=100)
    assert p.fair_size == p.subsample == 10000 == FAITHFUL_DEFAULTS["fair_size"]
    q = make_strategy("fairal", seed=0, protocol="faithful", alpha=0.6, engine="sklearn",
                      drop_features=[62, 63]).params
    assert (q.alpha_value(), q.engine, q.drop_features, q.mode) == (0.6, "sklearn", [62, 63],
                                                                    "sequential")
    plain = make_strategy("fairal", seed=0).params  # the default protocol is unchanged
    assert (plain.protocol, plain.mode, plain.refit, plain.measure) == ("rayfal", "batch",
                                                                        "head", "dp")
    for bad, key in (({"engine": "sklearn"}, "refit: scratch"),
                     ({"protocol": "faithful", "measure": "eo"}, "labels"),
                     ({"protocol": "faithful", "penalize_bias": False, "engine": "sklearn"},
                      "intercept"),
                     ({"protocol": "faithful", "C": 0.0}, "params.C"),
                     ({"alpha": {"start": 1, "end": 0, "levels": 1}}, "levels")):
        with pytest.raises(StrategyParamsError, match=key):
            make_strategy("fairal", seed=0, **bad)


def test_sensitive_columns() -> None:
    g = np.array([0, 1, 1, 0, 1])
    x = np.c_[np.arange(5.0), g, 1 - g, np.ones(5), 3.0 * g - 0.5]
    assert sensitive_columns(x, g) == [1, 2, 4]
    assert sensitive_columns(x, np.zeros(5, int)) == []


def test_faithful_strategy_on_a_pool(tmp_path) -> None:
    """Through the registered strategy: protocol faithful drops the group's one-hot columns,
    uses U as the fairness set, asks the oracle once per pick, and picks what fairal_select
    picks with the same inputs (and the sklearn engine the same)."""
    import pyarrow.parquet as pq

    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.view import LabelledSet, PoolView, subsample_ids
    from rayfal.data import schema as S
    from rayfal.data.pool import Pool

    rng = np.random.default_rng(1)
    n = 90
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    group = rng.integers(0, 2, n)
    feats = rng.normal(size=(n, 4))
    y = (feats[:, 0] + 0.8 * group > 0.4).astype(np.int64)
    x = np.c_[feats[:, :2], group, 1 - group, feats[:, 2:]].astype(np.float32)  # one-hot group
    (tmp_path / "pool").mkdir()
    pq.write_table(S.feature_table(ids, x, group, y), tmp_path / "pool" / "part-0.parquet")
    pool = Pool(str(tmp_path / "pool" / "*.parquet"))
    lab = np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:3]]  # 3 per class
    labelled = LabelledSet(ids[lab], x[lab], y[lab], group[lab])
    asked: list[int] = []

    def oracle(row_ids: np.ndarray) -> np.ndarray:
        asked.extend(row_ids.tolist())
        return y[row_ids - 1000]

    def view() -> PoolView:
        return PoolView(pool=pool, labelled=labelled, model=None, budget=3, seed=0,
                        oracle=oracle, chunk_rows=40)

    v = view()
    strat = make_strategy("fairal", seed=0, protocol="faithful", fair_size=50, subsample=40)
    out = strat.select_pool(v, 3)
    assert asked == out.tolist() and len(set(out.tolist())) == 3
    assert v.info["dropped_features"] == [2, 3] and v.info["fairness_rows"] == 50
    # the same through fairal_select directly
    keep = [0, 1, 4, 5]
    cand = subsample_ids(v.unlabelled_ids, 40, 0, 0x5AB5)
    fair = subsample_ids(v.unlabelled_ids, 50, 0, 0xFA1A)
    xl = x[lab][:, keep].astype(np.float64)
    head = fit_exact(xl, y[lab], EXACT)
    direct = fairal_select(head, xl, y[lab], x[cand - 1000][:, keep], x[fair - 1000][:, keep],
                           group[fair - 1000], 3, mode="sequential",
                           oracle=lambda i: int(y[cand[i] - 1000]), alpha=strat.params.alpha_value(),
                           measure="mi", refit=EXACT)
    assert cand[direct].tolist() == out.tolist()
    asked.clear()
    sk = make_strategy("fairal", seed=0, protocol="faithful", fair_size=50, subsample=40,
                       engine="sklearn").select_pool(view(), 3)
    assert sk.tolist() == out.tolist()


# ----------------------------------------------------------------------------- faithful on Adult

ADULT = SHARED_DATA / "adult"


@pytest.mark.needs_data("adult/adult.data", "adult/adult.names")
@pytest.mark.timeout(60)
def test_faithful_fast_ranking_agrees_with_sklearn_on_adult() -> None:
    """The faithful mode's defaults on a small Adult sample (rayfal's encoding and split; the
    authors' initial L of 3 rows per class, FAL/prep.py line 41): the fast engine's expected
    unfairness over 100 candidates ranks them as sklearn's liblinear refits do (Spearman >= 0.95)
    with the same first pick; a deliberately wrong L2 (C = 1000) or an unpenalised intercept
    does not."""
    from scipy.stats import spearmanr

    from rayfal.acquisition.fairal import FairALParams
    from rayfal.data.sources.adult import AdultData, encode, load_raw, read_categories

    rows, _ = load_raw(ADULT)
    x, y, g, names = encode(rows, read_categories(ADULT / "adult.names"))
    data = AdultData(x, y, g, names, seed=0)
    x = data.x.astype(np.float64)
    p = FairALParams(protocol="faithful")
    cfg = p.refit_config()
    rng = np.random.default_rng(0)
    meta, pool = data.idx["meta"], data.idx["pool"]
    lab = np.r_[rng.choice(meta[y[meta] == 0], 3, replace=False),
                rng.choice(meta[y[meta] == 1], 3, replace=False)]
    cand = np.sort(rng.choice(pool, 100, replace=False))
    fair = np.sort(rng.choice(pool, min(p.fair_size, len(pool)), replace=False))  # U
    rows_seen = np.r_[lab, cand, fair]
    drop = sensitive_columns(x[rows_seen], g[rows_seen])
    assert [names[i] for i in drop] == ["sex=Female", "sex=Male"]
    keep = np.setdiff1d(np.arange(x.shape[1]), drop)
    xl, yl, xc, xf, gf = x[lab][:, keep], y[lab], x[cand][:, keep], x[fair][:, keep], g[fair]

    def scores(engine, refit: RefitConfig):
        return engine(fit_exact(xl, yl, refit), xl, yl, xc, xf, gf, measure=p.measure,
                      refit=refit)

    sk = scores(fairal_sklearn, cfg)
    fast = scores(fairal_fast, cfg)
    assert len(np.unique(sk.expected_unfairness)) > 50

    def agree(s) -> tuple[float, bool]:
        rho = spearmanr(s.expected_unfairness, sk.expected_unfairness).statistic
        return rho, int(np.argmin(s.expected_unfairness)) == int(np.argmin(sk.expected_unfairness))

    rho, same_first = agree(fast)
    assert rho >= 0.95 and same_first, (rho, same_first)
    # the faithful selection's first pick (alpha at label 0 = 1: entropy) and alpha = 0.6
    a0 = resolve_alpha(p.alpha_value(), 0, 100)
    for a in (a0, 0.6):
        assert np.argmax(combine_scores(fast.entropy, fast.expected_unfairness, a)) == \
            np.argmax(combine_scores(sk.entropy, sk.expected_unfairness, a))
    for wrong in (RefitConfig(method="exact", C=1000.0),  # l2 1000 x too weak
                  RefitConfig(method="exact", penalize_bias=False)):
        rho_w, first_w = agree(scores(fairal_fast, wrong))
        assert not (rho_w >= 0.95 and first_w), (wrong, rho_w, first_w)
