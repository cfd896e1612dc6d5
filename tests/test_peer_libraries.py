"""Peer libraries as known answers, where they compute the same quantity as rayfal:

* L-inf PGD (``rayfal.attacks.pgd``) vs ``torchattacks.PGD`` (CE, Madry et al.) and
  ``torchattacks.TPGD`` (TRADES' KL objective), from the same start, same eps/alpha/steps;
* FairAL's logistic refit objective (``rayfal.acquisition.fairal.refit``: L2-penalised mean
  cross-entropy, bias not penalised) vs scikit-learn's ``LogisticRegression`` (lbfgs) at the
  equivalent ``C = 1 / (n l2)``; the liblinear ("exact") refit is checked in test_fairal.py;
* FRAL's per-group accuracies (``rayfal.fairness.robust.fral_metrics``) and a round's fairness
  report (``rayfal.evaluation.evaluate_probs``) vs ``fairlearn.metrics`` (rayfal's own
  ``rayfal.fairness.metrics`` functions are checked against fairlearn in test_metrics.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from rayfal.acquisition.fairal.refit import LogisticHead, RefitConfig, fit_logistic_head, refit_head
from rayfal.attacks import pgd
from rayfal.evaluation import evaluate_probs
from rayfal.fairness.robust import fral_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- PGD


def _net() -> torch.nn.Module:
    """A small deterministic conv net (no dropout: torchattacks calls the model as is)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 8 * 8, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 4),
    ).eval()


def _images(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=gen)
    x[:4] = x[:4].round()  # some pixels at 0 and 1: the [0, 1] clamp is active
    return x, torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize(("eps", "alpha", "steps"), [(8 / 255, 2 / 255, 7), (0.1, 0.04, 3)])
def test_pgd_equals_torchattacks_pgd(eps: float, alpha: float, steps: int) -> None:
    model = _net()
    x, y = _images()
    # no random start
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False, loss="ce")
    want = ta(x, y)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)
    assert (want - x).abs().max() > 0.9 * eps  # the attack moved (to the ball's surface)
    assert (model(want).argmax(1) != y).sum() >= (model(x).argmax(1) != y).sum()
    # the same uniform random start: torchattacks draws it from the global RNG
    torch.manual_seed(123)
    want = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123)
    start = torch.empty_like(x).uniform_(-eps, eps)
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=True, loss="ce",
               start=start)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)
    # and a different start ends elsewhere (the comparison above is not vacuous)
    other = pgd(model, x, y, eps=eps, alpha=alpha, steps=1, random_start=True, loss="ce",
                start=-start)
    assert (other - want).abs().max() > 1e-3


def test_pgd_kl_equals_torchattacks_tpgd() -> None:
    """``loss="kl"`` is TRADES' inner maximisation, torchattacks' TPGD (start x + 0.001 N(0, I),
    KL(p(x) || p(x')) summed over the batch)."""
    model = _net()
    x, y = _images()
    eps, alpha, steps = 8 / 255, 2 / 255, 5
    torch.manual_seed(7)
    want = torchattacks.TPGD(model, eps=eps, alpha=alpha, steps=steps)(x, y)  # y is unused
    torch.manual_seed(7)
    start = 0.001 * torch.randn_like(x)
    ours = pgd(model, x, None, eps=eps, alpha=alpha, steps=steps, random_start=True, loss="kl",
               start=start)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)
    assert (want - x).abs().max() > 0.9 * eps


# ---------------------------------------------------------------------------- logistic refit


def _logistic_problem(k: int, n: int = 60, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, k)) * 1.5
    y = (x @ w + rng.gumbel(size=(n, k))).argmax(1)
    assert len(np.unique(y)) == k
    return x, y


def test_multinomial_refit_converges_to_sklearn_lbfgs() -> None:
    """``J = mean CE + (l2 / 2) ||W||^2`` (bias free) is sklearn's
    ``C sum CE + 1/2 ||W||^2`` divided by ``C n``: at ``C = 1 / (n l2)`` the minimisers are
    equal. Gradient descent run to convergence (``fit_logistic_head``) reaches sklearn's
    multinomial lbfgs solution: same class probabilities and same (centred) weights."""
    x, y = _logistic_problem(3)
    l2 = 0.05
    head = fit_logistic_head(x, y, 3, binary=False, steps=6000, lr=1.0, l2=l2)
    sk = LogisticRegression(C=1.0 / (len(x) * l2), tol=1e-12, max_iter=10_000).fit(x, y)
    probs = head.probs(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(probs, sk.predict_proba(x), atol=1e-6)
    # softmax weights are identified up to a per-feature shift across classes; the L2 penalty
    # picks the centred one (its class-sum is 0) for both
    w = head.weight.numpy().T
    np.testing.assert_allclose(w - w.mean(0), sk.coef_ - sk.coef_.mean(0), atol=1e-5)
    # an un-converged refit (the strategy's default 20 steps) is measurably elsewhere
    short = fit_logistic_head(x, y, 3, binary=False, steps=20, lr=1.0, l2=l2)
    assert np.abs(short.probs(torch.as_tensor(x)).numpy() - sk.predict_proba(x)).max() > 1e-3


def test_binary_newton_refit_converges_to_sklearn_lbfgs() -> None:
    """The sigmoid head's damped-Newton refit (``method="newton"``) minimises the same ``J``:
    from zeros, with full steps, it reaches sklearn's binary lbfgs solution at C = 1/(n l2)."""
    x, y = _logistic_problem(2, n=80, seed=3)
    l2 = 0.02
    zeros = LogisticHead(torch.zeros(x.shape[1], 1, dtype=torch.float64),
                         torch.zeros(1, dtype=torch.float64))
    head = refit_head(zeros, torch.as_tensor(x), torch.as_tensor(y),
                      RefitConfig(method="newton", steps=25, lr=1.0, l2=l2))
    sk = LogisticRegression(C=1.0 / (len(x) * l2), tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(head.weight[:, 0].numpy(), sk.coef_[0], atol=1e-6)
    np.testing.assert_allclose(head.bias.numpy(), sk.intercept_, atol=1e-6)
    # a penalised bias (liblinear's objective) would differ: the comparison can tell
    lib = LogisticRegression(solver="liblinear", C=1.0 / (len(x) * l2), tol=1e-10).fit(x, y)
    assert abs(float(lib.intercept_[0]) - float(sk.intercept_[0])) > 1e-3


# ---------------------------------------------------------------------------- fairness metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fral_metrics_match_fairlearn_metricframe(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    group = rng.integers(0, 3, n)
    y = rng.integers(0, 4, n)
    pred_std = np.where(rng.random(n) < 0.6 + 0.1 * group, y, rng.integers(0, 4, n))
    pred_rob = np.where(rng.random(n) < 0.3 + 0.15 * group, y, rng.integers(0, 4, n))
    got = fral_metrics(y, pred_std, pred_rob, group)
    for kind, pred in (("std", pred_std), ("rob", pred_rob)):
        mf = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=group)
        for g, acc in mf.by_group.items():
            assert got[f"{kind}_acc_group_{g}"] == pytest.approx(acc, abs=1e-12)
        assert got[f"F_{kind}"] == pytest.approx(mf.group_min(), abs=1e-12)
        assert got[f"{kind}_disparity"] == pytest.approx(mf.difference(), abs=1e-12)
        assert got[f"{kind}_group_avg"] == pytest.approx(mf.by_group.mean(), abs=1e-12)
    assert got["robust_accuracy"] == pytest.approx(accuracy_score(y, pred_rob), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_probs_fairness_matches_fairlearn(seed: int) -> None:
    """The fairness numbers of a round record (binary task) from MC probabilities: the MC
    mean's argmax scored by fairlearn gives the same accuracy gap, worst group, demographic
    parity and equalized odds differences."""
    rng = np.random.default_rng(seed)
    n, t = 400, 5
    group = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2, t)) + 1.5 * np.eye(2)[y][:, :, None] * (0.4 + 0.6 * group)[
        :, None, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = evaluate_probs(probs, y, group)
    pred = probs.mean(2).argmax(1)
    mf = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=group)
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert out["worst_group_accuracy"] == pytest.approx(mf.group_min(), abs=1e-12)
    assert out["predictive_parity"] == pytest.approx(mf.difference(), abs=1e-12)
    assert out["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=group), abs=1e-12)
    assert out["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=group), abs=1e-12)
    assert out["predictive_parity"] > 0.05  # the groups really differ
