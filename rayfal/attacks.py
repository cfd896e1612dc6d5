"""Functional L-infinity attacks: PGD (Madry et al. 2018; CE or TRADES' KL objective) and FGSM.

Both are pure functions of ``(model, x, [y])``: batched, computed on the model's device (``x``,
``y`` and a given random start are moved there; the result stays there), and side-effect free
for the model:

* the model is switched to ``eval()`` for the attack (batch-norm uses its running statistics and
  does not update them) and its previous train/eval flag is restored afterwards;
* MC dropout, which stays on in ``eval()`` (:class:`rayfal.models.mc_dropout.MCDropout`), is
  made the identity with :func:`~rayfal.models.mc_dropout.deterministic_dropout`, so the attack
  ascends the gradient of one fixed (the mean-weight) network rather than of a random mask;
* a DDP wrapper (anything with ``.module``) is unwrapped: the attack only needs input gradients,
  which must not trigger gradient all-reduces or buffer broadcasts;
* it works inside ``torch.no_grad()`` / ``torch.inference_mode()`` (e.g. in pool scoring) and
  never accumulates ``.grad`` on the model's parameters.

Objectives (maximised over the ball ``||x' - x||_inf <= eps`` intersected with ``clamp``):

* ``loss="ce"``: ``CE(f(x'), y)`` (Madry et al.'s inner problem; needs labels);
* ``loss="kl"``: ``KL(p(x) || p(x'))`` with ``p = softmax(f)`` and ``p(x)`` held fixed (TRADES'
  inner problem, Zhang et al. 2019; needs no labels). This is also the adversarial map
  ``A(x, eps)`` of JIN's robust inconsistency (Eq. 3 of the FRAL paper) when computed with CE.

Random start: ``ce`` starts uniformly in the eps-ball (Madry et al.); ``kl`` starts at
``x + 0.001 * N(0, I)`` (TRADES' reference code) because ``x' = x`` is a stationary point of the
KL objective (its gradient is exactly 0 there), so ``loss="kl", random_start=False`` would not
move. Gradients are summed over the batch, so each row's step is its own (sign of its gradient).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rayfal.models.mc_dropout import deterministic_dropout
from rayfal.models.predict import model_device

__all__ = ["fgsm", "pgd"]

Clamp = tuple[float, float] | None


def _check(eps: float, alpha: float, steps: int, loss: str, clamp: Clamp) -> None:
    if loss not in ("ce", "kl"):
        raise ValueError(f"unknown attack loss {loss!r}; expected 'ce' or 'kl'")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if steps > 0 and not alpha > 0:
        raise ValueError(f"alpha (step size) must be > 0, got {alpha!r}")
    if clamp is not None and not clamp[0] <= clamp[1]:
        raise ValueError(f"clamp must be (low, high) with low <= high, got {clamp!r}")


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, clamp: Clamp) -> torch.Tensor:
    x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    if clamp is not None:
        x_adv = x_adv.clamp(clamp[0], clamp[1])
    return x_adv


def _noise(
    x: torch.Tensor, kind: str, eps: float, generator: torch.Generator | None
) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    if kind == "ce":
        u = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype)
        return ((2.0 * u - 1.0) * eps).to(x.device)
    return (0.001 * torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)).to(
        x.device
    )


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    loss: str = "ce",
    clamp: Clamp = (0.0, 1.0),
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L-inf projected gradient ascent; returns the detached ``x_adv`` (shape of ``x``, on the
    model's device).

    ``x_{k+1} = Proj_{B(x, eps) ∩ clamp}(x_k + alpha * sign(grad_x L(x_k)))`` for ``steps``
    steps, with ``L`` the CE (``loss="ce"``, needs ``y``) or TRADES' ``KL(p(x) || p(x_k))``
    (``loss="kl"``, no labels). ``clamp=None`` skips the range clamp (e.g. standardised tabular
    features); an ``x`` outside the clamp range is clamped into it, so then the result may lie
    farther than eps from ``x``. ``generator`` (optional) makes the random start reproducible;
    ``start`` (optional, shape of ``x``) is the random start's perturbation itself (used with
    ``random_start``; e.g. row-keyed noise, :func:`pgd_row_keyed`).
    See the module docstring for the model's mode, MC dropout and DDP handling.
    """
    _check(eps, alpha, steps, loss, clamp)
    if loss == "ce" and y is None:
        raise ValueError("pgd(loss='ce') maximises the cross-entropy against y: pass labels y, "
                         "or use loss='kl' (no labels needed)")
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad(), deterministic_dropout():
            x0 = x.detach().clone().to(model_device(net))
            if len(x0) == 0 or (steps == 0 and not random_start):
                return x0
            target = None
            if loss == "ce":
                y = y.detach().clone().to(x0.device)
            else:
                with torch.no_grad():
                    target = F.softmax(net(x0).float(), dim=1)
            x_adv = x0.clone()
            if random_start:
                delta = _noise(x0, loss, eps, generator) if start is None else start.to(x0)
                x_adv = _project(x_adv + delta, x0, eps, clamp)
            for _ in range(int(steps)):
                x_adv.requires_grad_(True)
                logits = net(x_adv).float()
                if loss == "ce":
                    objective = F.cross_entropy(logits, y, reduction="sum")
                else:
                    objective = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
                (grad,) = torch.autograd.grad(objective, x_adv)
                with torch.no_grad():
                    x_adv = _project(x_adv + alpha * grad.sign(), x0, eps, clamp)
            return x_adv.detach()
    finally:
        net.train(was_training)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    clamp: Clamp = (0.0, 1.0),
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clamp(x + eps * sign(grad_x CE))``.

    One PGD step of size ``eps`` from ``x`` (no random start); same model handling as :func:`pgd`.
    """
    return pgd(model, x, y, eps=eps, alpha=eps if eps > 0 else 1.0, steps=1,
               random_start=False, loss="ce", clamp=clamp)


# ----------------------------------------------------------------------------- row-keyed PGD


@dataclass(frozen=True)
class AttackSpec:
    """An L-inf PGD attack: radius ``eps``, step ``alpha``, ``steps`` steps, objective ``loss``
    (``"ce"`` against labels, ``"kl"`` = KL(p(x) ‖ p(x')) without labels), input ``clamp``."""

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 20
    loss: str = "ce"
    clamp: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "kl"):
            raise ValueError(f"attack loss must be 'ce' or 'kl', got {self.loss!r}")
        if not self.eps >= 0 or self.steps < 0 or (self.steps > 0 and not self.alpha > 0):
            raise ValueError(f"bad attack: eps={self.eps}, alpha={self.alpha}, steps={self.steps}"
                             " (need eps >= 0, steps >= 0, alpha > 0)")


def _row_seed(seed: int, key: int) -> int:
    digest = hashlib.blake2b(f"{int(seed)}:{int(key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def row_noise(shape: tuple[int, ...], row_keys: np.ndarray, seed: int, kind: str) -> torch.Tensor:
    """Per-row start noise ``[N, *shape]``, a pure function of ``(seed, row key)``:
    uniform in ``[-1, 1]`` (``kind="uniform"``) or standard normal (``"normal"``)."""
    out = torch.empty((len(row_keys), *shape))
    gen = torch.Generator()
    for i, key in enumerate(np.asarray(row_keys, dtype=np.int64).tolist()):
        gen.manual_seed(_row_seed(seed, key))
        if kind == "uniform":
            out[i] = 2.0 * torch.rand(shape, generator=gen) - 1.0
        else:
            out[i] = torch.randn(shape, generator=gen)
    return out


def pgd_row_keyed(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    row_keys: np.ndarray,
    seed: int,
    attack: AttackSpec,
) -> torch.Tensor:
    """L-inf PGD as :func:`rayfal.attacks.pgd` (same update, projection, eval mode, deterministic
    dropout, DDP unwrap), but with a random start keyed by row: ``ce`` starts uniformly in the
    eps-ball, ``kl`` at ``x + 0.001·N(0, I)`` (TRADES). Each row's trajectory depends only on
    its own input and key, never on the other rows of the batch."""
    if attack.loss == "ce" and y is None:
        raise ValueError("pgd_row_keyed(loss='ce') needs labels y")
    kind = "uniform" if attack.loss == "ce" else "normal"
    noise = row_noise(tuple(x.shape[1:]), row_keys, seed, kind) if len(x) else None
    if noise is not None:
        noise = noise * (attack.eps if attack.loss == "ce" else 0.001)
    return pgd(model, x, y, eps=attack.eps, alpha=attack.alpha, steps=attack.steps,
               random_start=True, loss=attack.loss, clamp=attack.clamp, start=noise)
