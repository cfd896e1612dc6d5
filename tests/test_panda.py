"""Tests of PANDA (Sharaf et al. 2022): rayfal.acquisition.panda.policy and .meta."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayfal.acquisition.panda.meta import (
    InnerConfig,
    MetaData,
    fbs_prox_step,
    inner_fit,
    meta_train,
    pretrain_encoder,
    sample_task,
    simulate,
    soft_demographic_parity,
    soft_equalized_odds,
    soft_error_rate_balance,
)
from rayfal.acquisition.panda.policy import (
    PandaPolicy,
    gumbel_noise,
    gumbel_top_b,
    load_policy,
    relaxed_top_b,
    save_policy,
    select,
)
from rayfal.fairness import metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """numpy's assert_allclose (torch.testing's first call costs seconds of imports)."""
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=atol, rtol=rtol)


def _policy(in_dim: int = 2, seed: int = 0, **kw) -> PandaPolicy:
    torch.manual_seed(seed)
    return PandaPolicy(in_dim, d_model=16, n_heads=2, n_layers=1, dim_feedforward=32, **kw)


# ----------------------------------------------------------------------------- Gumbel top-B


def test_gumbel_top_b_distinct_and_seed_deterministic() -> None:
    logits = torch.tensor([3.0, 3.0, 3.0, -1.0, 0.0, 2.0, 2.0, 5.0])
    picks = [gumbel_top_b(logits, 5, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert len(set(picks[0].tolist())) == 5
    assert picks[0].tolist() == picks[1].tolist()
    assert any(picks[2].tolist() != gumbel_top_b(logits, 5, generator=torch.Generator()
               .manual_seed(s)).tolist() for s in (1, 3, 4))
    assert sorted(gumbel_top_b(logits, 8, generator=torch.Generator().manual_seed(0)).tolist()) \
        == list(range(8))


def test_gumbel_top_1_samples_the_softmax() -> None:
    """Gumbel-max: argmax(logits + G) ~ softmax(logits) (guards the -log(-log U) form)."""
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    g = torch.Generator().manual_seed(0)
    n = 40_000
    noise = gumbel_noise((n, 4), generator=g)
    freq = torch.bincount(torch.argmax(logits + noise, dim=1), minlength=4).float() / n
    _close(freq, torch.softmax(logits, 0), atol=0.01, rtol=0)


def test_relaxed_top_b_sums_to_b_and_approaches_hard_top_b() -> None:
    logits = torch.randn(12, generator=torch.Generator().manual_seed(3))
    noise = gumbel_noise((12,), generator=torch.Generator().manual_seed(4))
    hard = gumbel_top_b(logits, 4, noise=noise)
    for tau in (3.0, 1.0, 0.3):
        w = relaxed_top_b(logits, 4, tau, noise=noise)
        assert float(w.sum()) == pytest.approx(4.0, abs=1e-5)
        assert bool((w >= 0).all())
    cold = relaxed_top_b(logits, 4, 1e-3, noise=noise)
    indicator = torch.zeros(12)
    indicator[hard] = 1.0
    _close(cold, indicator, atol=1e-4, rtol=0)


def test_relaxed_top_b_gradients_wrt_logits_and_temperature() -> None:
    policy = _policy()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    logits = policy(x)
    w = relaxed_top_b(logits, 3, policy.temperature,
                      noise=gumbel_noise((10,), generator=torch.Generator().manual_seed(1)))
    target = torch.linspace(-1, 1, 10)
    (w * target).sum().backward()
    assert policy.log_temperature.grad is not None and policy.log_temperature.grad.abs() > 0
    assert policy.score.weight.grad.abs().sum() > 0
    assert policy.input.weight.grad.abs().sum() > 0
    # and w.r.t. raw logits
    raw = torch.randn(10, requires_grad=True)
    tau = torch.tensor(0.5, requires_grad=True)
    (relaxed_top_b(raw, 3, tau) * target).sum().backward()
    assert raw.grad.abs().sum() > 0 and tau.grad.abs() > 0


@pytest.mark.parametrize("tau", [1.0, 0.01, 0.005, 0.002, 1e-3, 1e-6])
def test_relaxed_top_b_gradients_stay_finite_at_small_temperature(tau: float) -> None:
    # the tune space reaches tau = 1e-6; at tau = 0.002 the unbounded 1/(1 - a) of the mask
    # term used to overflow to inf and give nan gradients (meta-training then diverged)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(1000, generator=gen, requires_grad=True)
    log_tau = torch.tensor(float(np.log(tau)), requires_grad=True)
    w = relaxed_top_b(raw, 200, log_tau.exp(), noise=gumbel_noise((1000,), generator=gen))
    assert torch.isfinite(w).all()
    (w * torch.randn(1000, generator=gen)).sum().backward()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(log_tau.grad)


# ----------------------------------------------------------------------------- policy


def test_policy_is_permutation_equivariant_no_positions() -> None:
    policy = _policy().eval()
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(5))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        _close(policy(x)[perm], policy(x[perm]), atol=1e-5, rtol=1e-5)
        # the context matters: an item's logit depends on the rest of the pool
        assert not torch.allclose(policy(x)[:4], policy(x[:4]), atol=1e-4)


def test_select_one_forward_pass_and_save_load_roundtrip(tmp_path) -> None:
    policy = _policy(init_temperature=0.7)
    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    top = select(policy, x, 5)
    with torch.no_grad():
        want = torch.topk(policy.eval()(torch.tensor(x)), 5).indices.numpy()
    assert top.tolist() == want.tolist()
    sampled = select(policy, x, 5, seed=3)
    assert sampled.tolist() == select(policy, x, 5, seed=3).tolist()
    assert len(set(sampled.tolist())) == 5
    assert select(policy, x, 50).shape == (20,)
    save_policy(tmp_path / "p", policy, extra={"step": 3})
    assert not list((tmp_path / "p").glob("*.pt")) and not list((tmp_path / "p").glob("*.pkl"))
    loaded, meta = load_policy(tmp_path / "p")
    assert meta["step"] == 3 and meta["config"] == policy.config
    assert float(loaded.temperature.detach()) == pytest.approx(0.7)
    assert select(loaded, x, 5).tolist() == top.tolist()
    with pytest.raises(ValueError, match="pool_features"):
        select(policy, np.zeros((4, 3)), 2)


# ----------------------------------------------------------------------------- disparities


def test_soft_disparities_equal_table_1_metrics_on_hard_predictions() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    g = rng.integers(0, 3, 60)
    yp = rng.integers(0, 2, 60)
    p, yt, gt = torch.tensor(yp, dtype=torch.float64), torch.tensor(y), torch.tensor(g)
    assert float(soft_demographic_parity(p, gt)) == pytest.approx(
        metrics.panda_demographic_parity(yp, groups=g))
    assert float(soft_error_rate_balance(p, gt, yt)) == pytest.approx(
        metrics.error_rate_balance(y, yp, groups=g))
    assert float(soft_equalized_odds(p, gt, yt)) == pytest.approx(
        metrics.panda_equalized_odds(y, yp, groups=g))


def test_inner_fit_is_the_weighted_gradient_descent() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([1, 0, 1])
    w = torch.tensor([1.0, 0.0, 1.0])  # the middle item is not selected
    cfg = InnerConfig(steps=1, lr=0.5)
    wt, b = inner_fit(x, y, w, cfg)
    # from zero: P = 1/2 everywhere; residual (P - onehot) on the selected rows, averaged over 2
    r = torch.tensor([[0.5, -0.5], [0.5, -0.5]]) / 2
    xs = x[[0, 2]]
    _close(wt, -0.5 * xs.T @ r)
    _close(b, -0.5 * r.sum(0))


# ----------------------------------------------------------------------------- FBS prox step


def _biased_task():
    """Pool items (a, s): a = +-1 codes the group, s = 1 marks "biased" items whose label is
    the group (y = 1[a > 0]); s = 0 items carry the opposite label. Validation: both groups,
    both kinds. Selecting only biased items teaches the classifier to predict from a."""
    a = torch.tensor([1.0, -1.0] * 8)
    s = torch.tensor([1.0] * 8 + [0.0] * 8)
    pool_x = torch.stack([a, s], 1)
    pool_y = ((a > 0) == (s > 0)).long()
    val_x = pool_x.repeat(2, 1)
    val_y = pool_y.repeat(2)
    val_g = (val_x[:, 0] > 0).long()
    return pool_x, pool_y, val_x, val_y, val_g


def test_proximal_step_reduces_a_violated_disparity() -> None:
    pool_x, pool_y, val_x, val_y, val_g = _biased_task()
    theta = torch.nn.Parameter(torch.tensor(1.0))  # logits = theta * s: prefers biased items
    noise = gumbel_noise((16,), generator=torch.Generator().manual_seed(0))
    inner = InnerConfig(steps=5, lr=1.0)

    def disparity() -> torch.Tensor:
        w = relaxed_top_b(theta * pool_x[:, 1], 4, 1.0, noise=noise)
        return simulate(None, pool_x, pool_y, val_x, val_y, val_g, 4, inner=inner,
                        weights=w).disparity

    before = float(disparity().detach())
    assert before > 0.2
    info = fbs_prox_step([theta], disparity, rho=0.15, weight=5.0, steps=50, lr=0.5)
    assert info["initial"] == pytest.approx(before)
    assert info["satisfied"] and info["final"] < 0.15
    assert 0 < info["steps"] < 50 and float(theta.detach()) < 1.0
    assert info["moved"] == pytest.approx(1.0 - float(theta.detach()))
    # a satisfied constraint leaves theta exactly where the forward step put it
    theta2 = torch.nn.Parameter(torch.tensor(1.0))

    def disparity2() -> torch.Tensor:
        w = relaxed_top_b(theta2 * pool_x[:, 1], 4, 1.0, noise=noise)
        return simulate(None, pool_x, pool_y, val_x, val_y, val_g, 4, inner=inner,
                        weights=w).disparity

    info2 = fbs_prox_step([theta2], disparity2, rho=before + 0.01, steps=50)
    assert info2["steps"] == 0 and info2["moved"] == 0.0 and float(theta2.detach()) == 1.0


def test_proximal_step_clips_a_huge_gradient() -> None:
    # at small Gumbel temperatures grad chi~ reaches ~1e12; one unclipped step of size lr
    # used to throw the parameters (log-temperature) to inf and the run to nan
    def run(max_grad_norm: float | None) -> tuple[dict, float]:
        theta = torch.nn.Parameter(torch.tensor(1.0))
        info = fbs_prox_step([theta], lambda: 1e12 * theta**2, rho=0.5, weight=1.0, steps=1,
                             lr=0.5, max_grad_norm=max_grad_norm)
        return info, float(theta.detach())

    info, theta = run(10.0)
    assert math.isfinite(theta) and info["moved"] == pytest.approx(0.5 * 10.0)
    assert theta == pytest.approx(1.0 - 5.0)
    info, theta = run(None)  # the unclipped step: lr * 2e12
    assert info["moved"] == pytest.approx(1e12, rel=1e-3)


# ----------------------------------------------------------------------------- meta-training


def _toy(n: int, seed: int) -> tuple[MetaData, np.ndarray]:
    """2-D toy: y = 1[x1 > 0]. "Good" items have |x1| in [1, 2] and x2 ~ 0; "bad" items have
    x1 ~ 0 (no signal) and a large random-sign x2 that pushes the classifier's w2 randomly."""
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    sign = rng.choice([-1.0, 1.0], n)
    x1 = np.where(good, sign * rng.uniform(1, 2, n), sign * rng.uniform(0, 0.2, n))
    x2 = np.where(good, rng.normal(0, 0.1, n), rng.choice([-1.0, 1.0], n) * rng.uniform(3, 4, n))
    return MetaData.from_arrays(np.c_[x1, x2], (sign > 0).astype(int), rng.integers(0, 2, n)), good


POOL, VAL, BUDGET = 64, 128, 8
INNER = InnerConfig(steps=3, lr=1.0)


def _eval_losses(policy: PandaPolicy, seeds) -> tuple[float, float, float]:
    """Mean validation loss of the policy's hard top-B vs random B picks on fresh tasks."""
    pol, rnd, good_frac = [], [], []
    for s in seeds:
        data, good = _toy(POOL + VAL, 1000 + s)
        px, py = data.x[:POOL], data.y[:POOL]
        vx, vy, vg = data.x[POOL:], data.y[POOL:], data.group[POOL:]
        idx = select(policy, px, BUDGET)
        w = torch.zeros(POOL)
        w[idx] = 1.0
        pol.append(float(simulate(None, px, py, vx, vy, vg, BUDGET, inner=INNER, weights=w).loss))
        good_frac.append(good[:POOL][idx].mean())
        gen = torch.Generator().manual_seed(s)
        for _ in range(10):
            w = torch.zeros(POOL)
            w[torch.randperm(POOL, generator=gen)[:BUDGET]] = 1.0
            rnd.append(float(simulate(None, px, py, vx, vy, vg, BUDGET, inner=INNER,
                                      weights=w).loss))
    return float(np.mean(pol)), float(np.mean(rnd)), float(np.mean(good_frac))


def _oracle_loss(seeds) -> float:
    """Mean validation loss of the oracle that labels B of the known "good" items of each
    task (the same tasks as :func:`_eval_losses`): an independent bound for a learnt policy."""
    out = []
    for s in seeds:
        data, good = _toy(POOL + VAL, 1000 + s)
        px, py = data.x[:POOL], data.y[:POOL]
        vx, vy, vg = data.x[POOL:], data.y[POOL:], data.group[POOL:]
        w = torch.zeros(POOL)
        w[np.flatnonzero(good[:POOL])[:BUDGET]] = 1.0
        out.append(float(simulate(None, px, py, vx, vy, vg, BUDGET, inner=INNER, weights=w).loss))
    return float(np.mean(out))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_meta_trained_policy_beats_random_on_toy_task(seed: int) -> None:
    """Meta-training (any seed) closes most of the gap between random picks and the oracle
    that picks known good items, and learns to pick good items."""
    oracle = _oracle_loss(range(4))
    d0, _ = _toy(512, seed)
    policy = _policy(seed=seed)
    losses = pretrain_encoder(policy, d0, steps=30, set_size=64, lr=3e-3, seed=seed)
    assert losses[-1] < losses[0]
    _, random_loss, _ = _eval_losses(policy, range(4))
    assert oracle < random_loss - 0.3  # the toy's good items really are better than random
    history = meta_train(policy, d0, budget=BUDGET, steps=30, pool_size=POOL, val_size=VAL,
                         rho=1.0, inner=INNER, lr=3e-2, seed=seed, progress=False)
    assert len(history) == 30 and history[-1]["step"] == 30
    after, random_loss2, good = _eval_losses(policy, range(4))
    assert random_loss2 == random_loss
    closed = (random_loss - after) / (random_loss - oracle)
    assert closed >= 0.6, (after, random_loss, oracle)  # 0.79-0.89 for seeds 0-3
    assert good >= 0.9


def test_meta_train_constraint_runs_prox_and_resume_is_exact() -> None:
    d0, _ = _toy(96, 1)
    kw = dict(budget=4, pool_size=24, val_size=24, rho=0.0, inner=INNER, lr=1e-2, seed=5,
              prox_steps=2, progress=False, train_encoder=True)
    full = _policy(seed=1)
    hist = meta_train(full, d0, steps=4, **kw)
    assert all(h["prox_steps"] == 2 and h["prox_moved"] > 0 for h in hist)  # rho=0: violated

    saved = {}

    def ckpt(step, policy, opt, record):
        saved[step] = ({k: v.clone() for k, v in policy.state_dict().items()}, opt.state_dict())

    first = _policy(seed=1)
    meta_train(first, d0, steps=2, checkpoint_fn=ckpt, checkpoint_every=1, **kw)
    assert sorted(saved) == [1, 2]
    resumed = _policy(seed=99)
    resumed.load_state_dict(saved[2][0])
    opt = torch.optim.Adam(list(resumed.parameters()), lr=1e-2)
    opt.load_state_dict(saved[2][1])
    hist2 = meta_train(resumed, d0, steps=4, start_step=2, optimizer=opt, **kw)
    assert [h["step"] for h in hist2] == [3, 4]
    for k, v in full.state_dict().items():
        _close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-5)


def test_sample_task_is_a_disjoint_reshuffle() -> None:
    li, vi = sample_task(50, 20, 25, torch.Generator().manual_seed(0))
    assert len(set(li.tolist()) | set(vi.tolist())) == 45
    li2, _ = sample_task(50, 20, 25, torch.Generator().manual_seed(0))
    assert li.tolist() == li2.tolist()
    with pytest.raises(ValueError):
        sample_task(10, 8, 8, torch.Generator())
