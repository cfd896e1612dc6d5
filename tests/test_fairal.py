"""Tests of rayfal.acquisition.fairal (Fair Active Learning, Anahideh et al. 2022)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayfal.acquisition.fairal import (
    LogisticHead,
    RefitConfig,
    combine_scores,
    fairal_fast,
    fairal_reference,
    fairal_select,
    fit_logistic_head,
    refit_head,
    resolve_alpha,
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
