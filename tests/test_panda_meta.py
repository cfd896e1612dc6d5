"""PANDA meta-training that learns (Algorithm 1 with the learning options): on a small synthetic
task where half of the items carry label noise that is tied to the group, constrained
meta-training (warm-started simulated learner with D0, annealed temperature, sharpened
constraint, proximal step) must pick better than random on held-out tasks *and* meet the
parity constraint rho that random picks violate. Plain torch, no Ray, seeded, a few seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayfal.acquisition.panda.diagnose import HELDOUT_TASK_OFFSET, campaign_learner
from rayfal.acquisition.panda.meta import (
    InnerConfig,
    MetaData,
    inner_fit,
    meta_train,
    simulate,
    task_generator,
)
from rayfal.acquisition.panda.policy import PandaPolicy, gumbel_noise
from rayfal.acquisition.panda.settings import PandaSettings
from rayfal.fairness import metrics

RHO = 0.095


def _noisy_groups(n: int, seed: int) -> MetaData:
    """x = [signal, type flag, group, noise]. Type A items (flag +1): y = 1[signal > 0].
    Type B items (flag -1, 30%): pure label noise, y ~ Bernoulli(1/2) whatever the features (on V
    too: nothing to exploit). The group is a feature, independent of everything, so any
    disparity comes from what the learner was trained on. Picking A items is better on the
    objective; the policy sees x (the flag), never y."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    type_a = rng.random(n) < 0.7
    y = np.where(type_a, signal > 0, rng.random(n) < 0.5).astype(np.int64)
    group = (rng.random(n) < 0.5).astype(np.int64)
    x = np.stack([signal, np.where(type_a, 1.0, -1.0), 2.0 * group - 1.0,
                  rng.normal(size=n)], 1)
    return MetaData.from_arrays(x, y, group)


def _heldout(policy, data, settings, n_tasks: int = 100) -> dict[str, np.ndarray]:
    """Per held-out task (generators disjoint from meta-training's): validation loss and hard
    DP of the simulated learner on the policy's hard Gumbel-top-B picks and on B random
    picks of the same task (paired), and the share of type-A items among the policy's picks."""
    inner = settings.inner()
    out: dict[str, list[float]] = {k: [] for k in ("loss_policy", "loss_random", "dp_policy",
                                                   "dp_random", "type_a_policy")}
    policy.eval()
    with torch.no_grad():
        for t in range(n_tasks):
            gen = task_generator(settings.seed, 0, HELDOUT_TASK_OFFSET + t, 1)
            perm = torch.randperm(len(data), generator=gen)
            n_p, n_v = settings.pool_size, settings.val_size
            li, vi = perm[:n_p], perm[n_p:n_p + n_v]
            di = perm[n_p + n_v:n_p + n_v + settings.d0_size]
            noise = gumbel_noise((n_p,), generator=gen)
            d0 = (data.x[di], data.y[di])
            h0 = inner_fit(d0[0], d0[1], torch.ones(settings.d0_size), inner)
            picks = {"policy": torch.topk(policy(data.x[li]) + noise, settings.budget).indices,
                     "random": torch.randperm(n_p, generator=gen)[:settings.budget]}
            for name, idx in picks.items():
                w = torch.zeros(n_p)
                w[idx] = 1.0
                sim = simulate(None, data.x[li], data.y[li], data.x[vi], data.y[vi],
                               data.group[vi], settings.budget, inner=inner, weights=w,
                               init=h0, d0=d0)
                out[f"loss_{name}"].append(float(sim.loss))
                out[f"dp_{name}"].append(metrics.panda_demographic_parity(
                    (sim.p_val > 0.5).long().numpy(), groups=data.group[vi].numpy()))
            out["type_a_policy"].append(float((data.x[li][picks["policy"], 1] > 0).float()
                                              .mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def test_adam_inner_fit_matches_torch_adam():
    """The unrolled full-batch Adam of the simulated learner is torch.optim.Adam's update."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] > 0).long()
    cfg = InnerConfig(steps=15, lr=0.05, optimizer="adam")
    w, b = inner_fit(x, y, torch.ones(40), cfg)
    lin = torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(lin(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(w, lin.weight.detach().T, atol=1e-5)
    assert torch.allclose(b, lin.bias.detach(), atol=1e-5)


def test_d0_rows_enter_the_learner_with_weight_one():
    """extra=(x0, y0) is the same fit as those rows appended with weight 1 each."""
    g = torch.Generator().manual_seed(1)
    x, x0 = torch.randn(10, 2, generator=g), torch.randn(4, 2, generator=g)
    y, y0 = (x[:, 0] > 0).long(), (x0[:, 1] > 0).long()
    w = torch.rand(10, generator=g)
    cfg = InnerConfig(steps=7, lr=0.5)
    a = inner_fit(x, y, w, cfg, extra=(x0, y0))
    b = inner_fit(torch.cat([x, x0]), torch.cat([y, y0]), torch.cat([w, torch.ones(4)]), cfg)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a, b, strict=True))


def test_sharpened_disparity_tends_to_the_hard_one():
    data = _noisy_groups(300, 3)
    sim = simulate(None, data.x[:100], data.y[:100], data.x[100:], data.y[100:],
                   data.group[100:], 50, weights=torch.ones(100), sharpness=1e-3,
                   inner=InnerConfig(steps=20, lr=1.0))
    hard = metrics.panda_demographic_parity((sim.p_val > 0.5).long().numpy(),
                                            groups=data.group[100:].numpy())
    assert float(sim.disparity) == pytest.approx(hard, abs=1e-3)


@pytest.mark.timeout(600)
def test_constrained_meta_training_beats_random_and_meets_rho():
    torch.manual_seed(0)
    data = _noisy_groups(1500, 0)
    settings = PandaSettings(steps=60, lr=5e-2, pool_size=64, val_size=128, budget=16,
                             d0_size=4, rho=RHO, disparity="dp", inner_steps=10, inner_lr=0.5,
                             inner_l2=0.1, inner_optimizer="gd", temperature_final=0.1,
                             sharpness=0.1, prox_steps=3, prox_weight=0.3, prox_lr=0.5,
                             tasks_per_step=2, d_model=16, n_heads=2, dim_feedforward=32, seed=0)
    torch.manual_seed(settings.seed)
    policy = PandaPolicy(4, d_model=16, n_heads=2, dim_feedforward=32, init_temperature=1.0)
    before = _heldout(policy, data, settings)
    hist = meta_train(policy, data, budget=settings.budget, steps=settings.steps,
                      pool_size=settings.pool_size, val_size=settings.val_size,
                      rho=settings.rho, disparity="dp", inner=settings.inner(), lr=settings.lr,
                      prox_weight=settings.prox_weight, prox_steps=settings.prox_steps,
                      prox_lr=settings.prox_lr, seed=settings.seed,
                      tasks_per_step=settings.tasks_per_step, d0_size=settings.d0_size,
                      temperature_final=settings.temperature_final,
                      sharpness=settings.sharpness, progress=False)
    after = _heldout(policy, data, settings)
    # the untrained policy picks like random (about 70% type A); the trained one learned to
    # pick the clean type-A items
    assert before["type_a_policy"].mean() < 0.85
    assert after["type_a_policy"].mean() > 0.95
    # the random baseline violates the constraint on average: rho is informative here
    assert after["dp_random"].mean() > RHO
    # meta-trained: better than random on the objective (paired over the same held-out
    # tasks), and within rho (hard disparity of the thresholded learner)
    diff = after["loss_policy"] - after["loss_random"]
    assert diff.mean() < -0.01, diff.mean()
    assert after["dp_policy"].mean() < RHO
    # the proximal step was active during training; the temperature was annealed
    assert any(r["prox_steps"] > 0 and r["prox_moved"] > 0 for r in hist)
    assert hist[-1]["temperature"] == pytest.approx(0.1, rel=1e-5)
    assert all(math.isfinite(r["soft_hard_gap"]) and r["forward_moved"] > 0 for r in hist)


def test_campaign_learner_is_logistic_regression():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 2, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    w, b = campaign_learner(x, y, lr=0.05, epochs=20)
    acc = float(((x @ w + b).argmax(1) == y).float().mean())
    assert acc > 0.95
