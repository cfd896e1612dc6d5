"""TRADES (Zhang et al. 2019): ``CE(f(x), y) + β · KL(p(x) ‖ p(x_adv))``, β = 6 by default.

``x_adv`` maximises ``KL(p(x) ‖ p(x'))`` over the L-inf ball (:func:`rayfal.attacks.pgd` with
``loss="kl"``: no labels, model in eval mode, deterministic dropout, start at
``x + 0.001·N(0, I)``). The outer loss follows the reference implementation: both ``p(x)`` and
``p(x_adv)`` carry gradients, the KL is summed over classes and averaged over the batch
(``batchmean``), and both forwards run in train mode.

Choice (MC dropout, which the TRADES paper does not have): the clean and the adversarial
forward share the *same* dropout masks per row (:class:`PairedMasks`), so the KL term measures
the effect of the perturbation, not the disagreement of two random sub-networks (with independent
masks the term would be > 0 even at ``x_adv = x``). ``paired_dropout=False`` draws independent
masks.

Parameters: ``beta`` (6.0), the attack's ``eps``/``alpha``/``steps``/``random_start``/``clamp``
(as in :mod:`rayfal.training.pgd_at`), ``paired_dropout`` (True). Composed with ``grad``
(``trades+grad``) the clean forward is the fairness forward (class and group logits in one
pass) and the adversarial forward is the plain classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch.nn import functional as F

from rayfal.models.mc_dropout import MCDropout, dropout_masks
from rayfal.training.modes import Batch, ClassForward, plain_forward, register_mode
from rayfal.training.pgd_at import AttackParams, AttackSettings


class TradesParams(AttackParams):
    """Parameters of ``trades``: β and the KL attack (``eps``, ``alpha``, ``steps``, ...)."""

    beta: float = Field(6.0, ge=0, description="weight of the KL term (the paper's 1/lambda)")
    paired_dropout: bool = Field(True, description="clean and adversarial forwards share their "
                                                   "MC-dropout masks")


class PairedMasks:
    """A :func:`~rayfal.models.mc_dropout.dropout_masks` provider that draws one inverted-dropout
    keep-mask per layer (global torch RNG) and reuses it for every later activation of the same
    shape: two forwards of the same rows inside one block share their dropout masks."""

    def __init__(self) -> None:
        self._masks: dict[int, torch.Tensor] = {}

    def __call__(self, module: MCDropout, x: torch.Tensor) -> torch.Tensor:
        mask = self._masks.get(id(module))
        if mask is None or mask.shape != x.shape or mask.device != x.device:
            if module.p >= 1.0:
                mask = torch.zeros_like(x)
            else:
                keep = torch.rand(x.shape, device=x.device) >= module.p
                mask = keep.to(x.dtype) / (1.0 - module.p)
            self._masks[id(module)] = mask
        return mask


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """``(1/N) Σ_i KL(p(x_i) ‖ p(x_adv_i))`` with gradients through both arguments."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1),
                    reduction="batchmean")


class TradesLoss:
    role = "robust"

    def __init__(self, beta: float, attack: AttackSettings, paired_dropout: bool) -> None:
        if not beta >= 0:
            raise ValueError(f"TRADES beta must be >= 0, got {beta!r}")
        self.beta = float(beta)
        self.attack = attack
        self.paired_dropout = bool(paired_dropout)

    def term(self, model: torch.nn.Module, batch: Batch,
             forward: ClassForward) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["x"]
        x_adv = self.attack.run(model, x, None, "kl")
        provider = PairedMasks() if self.paired_dropout else None
        if provider is not None:
            with dropout_masks(provider):
                logits, extra, logs = forward(model, x, batch)
                adv_logits = model(x_adv)
        else:
            logits, extra, logs = forward(model, x, batch)
            adv_logits = model(x_adv)
        ce = F.cross_entropy(logits, batch["y"])
        kl = trades_kl(logits, adv_logits)
        loss = ce + self.beta * kl + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()),
                      "kl": float(kl.detach()), **logs}

    def __call__(self, model: torch.nn.Module, batch: Batch):
        return self.term(model, batch, plain_forward)


@register_mode("trades", params=TradesParams, role="robust",
               summary="TRADES (Zhang et al.): CE(f(x), y) + beta * KL(p(x) || p(x_adv))")
def trades_loss(
    *,
    beta: float = 6.0,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    random_start: bool = True,
    clamp: Any = "auto",
    paired_dropout: bool = True,
) -> TradesLoss:
    return TradesLoss(beta, AttackSettings(eps, alpha, steps, random_start, clamp),
                      paired_dropout)

