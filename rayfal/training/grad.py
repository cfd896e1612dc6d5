"""GRAD — Gradient Reversal Against Discrimination (Raff & Sylvester 2018), Eq. 2 of
Branchaud-Charron et al. (2021): ``l_y(f_y(z)) + λ · l_a(f_a(z))`` with ``z = h(x)``.

``f_a`` is the :class:`~rayfal.models.fair.FairModel`'s group head, fed through a
gradient-reversal layer (coefficient 1): the group head minimises ``λ·CE(f_a(z), a)`` while the
trunk ``h`` receives ``-λ·∂CE_a/∂z`` and so removes group information from ``z``; the class head
``f_y`` is untouched, so BALD is computed on the class head only. The logged/returned loss is
exactly the value of Eq. 2. ``λ`` is constant over training (no annealing schedule).

Parameters: ``lam`` (λ, default 1.0). Needs a model built with ``num_groups=G`` and batches with
``group`` ids in ``[0, G)``. The forward goes through ``model(x, with_groups=True, ...)`` —
through the DDP wrapper when there is one — so gradients are synchronised as in ``standard``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from rayfal.models.fair import FairModel
from rayfal.training.modes import Batch, ModeParams, check_groups, register_mode, unwrap


class GradParams(ModeParams):
    """Parameters of ``grad``."""

    lam: float = Field(1.0, ge=0, description="lambda: weight of the reversed group loss (Eq. 2)")


def fair_module(model: torch.nn.Module, mode: str) -> FairModel:
    inner = unwrap(model)
    if not isinstance(inner, FairModel):
        raise TypeError(
            f"training mode '{mode}' needs a model with a group head (FairModel); got "
            f"{type(inner).__name__}: build it with build_model(..., num_groups=G) and put "
            "num_groups in the model spec"
        )
    return inner


def group_logs(group_logits: torch.Tensor, group: torch.Tensor,
               group_ce: torch.Tensor) -> dict[str, float]:
    acc = (group_logits.detach().argmax(dim=1) == group).float().mean()
    return {"group_ce": float(group_ce.detach()), "group_acc": float(acc)}


class GradLoss:
    role = "fair"

    def __init__(self, lam: float) -> None:
        if not lam >= 0:
            raise ValueError(f"GRAD lambda (lam) must be >= 0, got {lam!r}")
        self.lam = float(lam)

    def forward(self, model: torch.nn.Module, x: torch.Tensor,
                batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        inner = fair_module(model, "grad")
        group = check_groups(batch, inner.num_groups, "grad")
        logits, group_logits, _ = model(x, with_groups=True, reverse=1.0)
        group_ce = F.cross_entropy(group_logits, group)
        return logits, self.lam * group_ce, group_logs(group_logits, group, group_ce)

    def __call__(self, model: torch.nn.Module, batch: Batch):
        logits, extra, logs = self.forward(model, batch["x"], batch)
        ce = F.cross_entropy(logits, batch["y"])
        loss = ce + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), **logs}


@register_mode("grad", params=GradParams, role="fair", needs_group_head=True,
               summary="GRAD: CE + lambda * group CE through gradient reversal (Eq. 2)")
def grad_loss(*, lam: float = 1.0) -> GradLoss:
    return GradLoss(lam)

