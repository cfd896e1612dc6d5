"""Tests of the L-inf attacks (rayfal.attacks) and of deterministic MC dropout (no Ray)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rayfal.attacks import fgsm, pgd
from rayfal.models import MLP, SmallCNN, deterministic_dropout, dropout_masks

SHAPE = (3, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cnn(seed: int = 0, dropout: float = 0.5) -> tuple[SmallCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = SmallCNN(SHAPE, 3, width=4, hidden=16, dropout=dropout)
    x = torch.rand(16, *SHAPE)
    x[0] = 0.0  # pixels on both edges of the clamp range
    x[1] = 1.0
    model.train()
    with torch.no_grad():  # batch-norm running statistics != batch statistics
        model(x * 0.5 + 0.2)
        model.head[-1].weight.mul_(20.0)  # confident logits, as after training
    model.eval()
    with deterministic_dropout(), torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right: CE can only go up
    return model, x, y


def _clean_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with deterministic_dropout(), torch.no_grad():
        return F.cross_entropy(model.eval()(x), y, reduction="none")


def _kl(model: nn.Module, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    with deterministic_dropout(), torch.no_grad():
        p = F.softmax(model.eval()(x), 1)
        return F.kl_div(F.log_softmax(model(x2), 1), p, reduction="none").sum(1)


# ---------------------------------------------------------------------------- deterministic dropout


def test_deterministic_dropout_makes_mc_dropout_the_identity() -> None:
    model, x, _ = _cnn()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # MC dropout is on in eval()
    with deterministic_dropout():
        c, d = model(x), model(x)
        # it also overrides a mask provider
        with dropout_masks(lambda m, h: torch.zeros_like(h)):
            e = model(x)
        with deterministic_dropout(False):
            f = model(x)
    torch.testing.assert_close(c, d)
    torch.testing.assert_close(c, e)
    torch.testing.assert_close(c, model.head[4](model.head[2](model.head[1](model.embed(x)))))
    assert not torch.allclose(c, f)
    assert not torch.allclose(model(x), c)  # restored after the block


# ---------------------------------------------------------------------------- PGD


@pytest.mark.parametrize("loss", ["ce", "kl"])
@pytest.mark.parametrize("clamp", [(0.0, 1.0), (0.2, 0.9), None])
def test_pgd_stays_in_eps_ball_and_clamp(loss: str, clamp) -> None:
    model, x, y = _cnn()
    if clamp is not None:
        x = x.clamp(*clamp)  # x itself inside the range (x[0] and x[1] on its edges)
    eps = 0.1
    x_adv = pgd(model, x, y if loss == "ce" else None, eps=eps, alpha=0.04, steps=5,
                loss=loss, clamp=clamp)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    if clamp is not None:
        assert float(x_adv.min()) >= clamp[0] and float(x_adv.max()) <= clamp[1]
    else:  # the ball is not cut at [0, 1]: rows at 0 and 1 move outside
        assert float(x_adv.min()) < 0.0 and float(x_adv.max()) > 1.0
    assert float((x_adv - x).abs().max()) > 0.5 * eps  # it did move


def test_pgd_ce_raises_the_loss_and_beats_random_noise() -> None:
    model, x, y = _cnn(1)
    eps = 0.05
    x_adv = pgd(model, x, y, eps=eps, alpha=0.02, steps=10)
    clean, adv = _clean_ce(model, x, y), _clean_ce(model, x_adv, y)
    noise = (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert (adv > clean).float().mean() >= 0.9
    assert adv.mean() > 1.2 * clean.mean()
    assert adv.mean() > _clean_ce(model, noise, y).mean()
    # more steps do not do worse (on average) than one FGSM step
    assert adv.mean() >= _clean_ce(model, fgsm(model, x, y, eps=eps), y).mean() - 1e-6


def test_pgd_kl_needs_no_labels_and_raises_the_kl() -> None:
    model, x, _ = _cnn(2)
    eps = 0.05
    x_adv = pgd(model, x, None, eps=eps, alpha=0.02, steps=10, loss="kl")
    noise = (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    kl_adv, kl_noise = _kl(model, x, x_adv), _kl(model, x, noise)
    assert kl_adv.mean() > 3 * kl_noise.mean()
    assert (kl_adv > kl_noise).float().mean() >= 0.9


def test_pgd_ce_without_labels_is_a_clear_error() -> None:
    model, x, _ = _cnn()
    with pytest.raises(ValueError, match="labels y"):
        pgd(model, x, eps=0.1, alpha=0.01, steps=2)
    with pytest.raises(ValueError, match="attack loss"):
        pgd(model, x, eps=0.1, alpha=0.01, steps=2, loss="mse")
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, eps=-0.1, alpha=0.01, steps=2, loss="kl")


@pytest.mark.parametrize("was_training", [True, False])
def test_pgd_uses_eval_mode_and_restores_the_mode(was_training: bool) -> None:
    model, x, y = _cnn(3)
    model.train(was_training)
    bn = model.trunk[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    seen: list[bool] = []
    hook = model.trunk.register_forward_hook(lambda m, i, o: seen.append(m.training))
    for p in model.parameters():
        p.grad = None
    pgd(model, x, y, eps=0.03, alpha=0.01, steps=3)
    hook.remove()
    assert seen and not any(seen)  # every attack forward ran in eval mode
    assert model.training is was_training
    assert all(m.training is was_training for m in model.modules())
    # eval mode: batch-norm statistics untouched; no parameter gradients accumulated
    torch.testing.assert_close(bn.running_mean, stats[0])
    torch.testing.assert_close(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    assert all(p.grad is None for p in model.parameters())


def test_pgd_restores_the_mode_after_an_error() -> None:
    model, x, _ = _cnn()
    model.train()
    with pytest.raises((RuntimeError, ValueError)):
        pgd(model, x, torch.zeros(3, dtype=torch.long), eps=0.1, alpha=0.1, steps=1)  # bad y
    assert model.training


def test_pgd_is_deterministic_despite_mc_dropout() -> None:
    model, x, y = _cnn(4, dropout=0.5)
    a = pgd(model, x, y, eps=0.05, alpha=0.01, steps=4, random_start=False)
    b = pgd(model, x, y, eps=0.05, alpha=0.01, steps=4, random_start=False)
    torch.testing.assert_close(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c = pgd(model, x, y, eps=0.05, alpha=0.01, steps=2, generator=g1)
    d = pgd(model, x, y, eps=0.05, alpha=0.01, steps=2, generator=g2)
    torch.testing.assert_close(c, d)
    assert not torch.equal(a, c)


def test_pgd_rows_are_independent_of_the_batch() -> None:
    model, x, y = _cnn(5, dropout=0.5)
    full = pgd(model, x, y, eps=0.05, alpha=0.01, steps=3, random_start=False)
    part = pgd(model, x[3:7], y[3:7], eps=0.05, alpha=0.01, steps=3, random_start=False)
    torch.testing.assert_close(full[3:7], part)


def test_pgd_works_under_inference_mode_and_on_a_ddp_like_wrapper() -> None:
    model, x, y = _cnn(6)
    ref = pgd(model, x, y, eps=0.05, alpha=0.01, steps=3, random_start=False)

    class Wrapper(nn.Module):  # like DDP: the attack must use .module, not the wrapper
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x):
            raise AssertionError("the attack must not call the (DDP) wrapper")

    with torch.inference_mode():
        xi = x.clone()
        out = pgd(Wrapper(model), xi, y, eps=0.05, alpha=0.01, steps=3, random_start=False)
    torch.testing.assert_close(out, ref)


def test_pgd_edge_cases() -> None:
    model, x, y = _cnn()
    torch.testing.assert_close(pgd(model, x, y, eps=0.1, alpha=0.1, steps=0,
                                   random_start=False), x)
    torch.testing.assert_close(pgd(model, x, y, eps=0.0, alpha=0.1, steps=3), x)
    empty = pgd(model, x[:0], y[:0], eps=0.1, alpha=0.1, steps=3)
    assert empty.shape == (0, *SHAPE)


def test_pgd_on_feature_vectors_without_clamp() -> None:
    torch.manual_seed(7)
    model = MLP((5,), 2, hidden=8).eval()
    x = torch.randn(9, 5) * 3
    y = torch.randint(0, 2, (9,))
    x_adv = pgd(model, x, y, eps=0.5, alpha=0.2, steps=4, clamp=None)
    assert float((x_adv - x).abs().max()) <= 0.5 + 1e-6
    assert _clean_ce(model, x_adv, y).mean() > _clean_ce(model, x, y).mean()


# ---------------------------------------------------------------------------- FGSM


def test_fgsm_is_one_signed_gradient_step() -> None:
    model, x, y = _cnn(8)
    eps = 0.03
    xr = x.clone().requires_grad_(True)
    with deterministic_dropout():
        F.cross_entropy(model.eval()(xr), y, reduction="sum").backward()
    want = (x + eps * xr.grad.sign()).clamp(0, 1)
    model.train()
    out = fgsm(model, x, y, eps=eps)
    assert model.training
    torch.testing.assert_close(out, want)
    assert _clean_ce(model, out, y).mean() > _clean_ce(model, x, y).mean()
