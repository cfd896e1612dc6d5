"""GRAD — Gradient Reversal Against Discrimination (Raff & Sylvester 2018), Eq. 2 of
Branchaud-Charron et al. (2021): ``l_y(f_y(z)) + λ · l_a(f_a(z))`` with ``z = h(x)``.

``f_a`` is the :class:`~rayfal.models.fair.FairModel`'s group head, fed through a
gradient-reversal layer (coefficient 1): the group head minimises ``λ·CE(f_a(z), a)`` while the
trunk ``h`` receives ``-λ·∂CE_a/∂z`` and so removes group information from ``z``; the class head
``f_y`` is untouched, so BALD is computed on the class head only. The logged/returned loss is
exactly the value of Eq. 2 (with ``λ_p`` in place of ``λ`` under a ramp).

λ over a round's training (``lambda_schedule``):

* ``"constant"`` (default): ``λ_p = λ`` at every step;
* ``"ganin"``: the ramp of Ganin & Lempitsky (2015, "Unsupervised domain adaptation by
  backpropagation", training schedule of their experiments; γ = 10),
  ``λ_p = λ · (2 / (1 + exp(-10·p)) - 1)`` where ``p ∈ [0, 1)`` is the round's training progress
  (``step / steps``, set by the loop through ``set_progress``): 0 at the first step, ≈ 0.987 λ
  halfway, → λ. As in Ganin's SGD update rules (λ multiplies the domain loss's gradient for
  both the feature extractor and the domain classifier), λ_p weights the group loss, so the
  group head's own gradient is scaled by λ_p as well. The ramp restarts every round (each
  round is one training run, also with ``training.warm_start``); under a ramp the logs carry
  ``lam`` (λ_p).

Parameters: ``lam`` (λ, default 1.0), ``lambda_schedule`` (``constant``). Needs a model built
with ``num_groups=G`` and batches with ``group`` ids in ``[0, G)``. The forward goes through
``model(x, with_groups=True, ...)`` — through the DDP wrapper when there is one — so gradients
are synchronised as in ``standard``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from rayfal.models.fair import FairModel
from rayfal.training.modes import Batch, ModeParams, check_groups, register_mode, unwrap

LambdaSchedule = Literal["constant", "ganin"]
LAMBDA_SCHEDULES: tuple[str, ...] = ("constant", "ganin")

#: Ganin & Lempitsky's gamma in ``2 / (1 + exp(-gamma * p)) - 1``
GANIN_GAMMA = 10.0


class GradParams(ModeParams):
    """Parameters of ``grad``."""

    lam: float = Field(1.0, ge=0, description="lambda: weight of the reversed group loss (Eq. 2)")
    lambda_schedule: LambdaSchedule = Field(
        "constant", description="lambda over a round's steps: constant, or ganin "
                                "(lam * (2 / (1 + exp(-10 p)) - 1), p = training progress)")


def ganin_ramp(p: float, gamma: float = GANIN_GAMMA) -> float:
    """``2 / (1 + exp(-gamma · p)) - 1`` (= ``tanh(gamma · p / 2)``): 0 at ``p = 0``, → 1."""
    return 2.0 / (1.0 + math.exp(-gamma * float(p))) - 1.0


def scheduled_lambda(lam: float, schedule: str, p: float) -> float:
    """``λ_p``: ``λ`` (``"constant"``) or ``λ · ganin_ramp(p)`` (``"ganin"``), ``p ∈ [0, 1]``."""
    if schedule == "constant":
        return float(lam)
    if schedule == "ganin":
        return float(lam) * ganin_ramp(min(max(float(p), 0.0), 1.0))
    raise ValueError(f"unknown lambda_schedule {schedule!r} ({', '.join(LAMBDA_SCHEDULES)})")


class AdversarialWeight:
    """λ of an adversarial fairness loss and its schedule over training (``set_progress``)."""

    def __init__(self, lam: float, lambda_schedule: str, mode: str) -> None:
        if not lam >= 0:
            raise ValueError(f"{mode} lambda (lam) must be >= 0, got {lam!r}")
        if lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"{mode}: unknown lambda_schedule {lambda_schedule!r} "
                             f"({', '.join(LAMBDA_SCHEDULES)})")
        self.lam = float(lam)
        self.lambda_schedule = str(lambda_schedule)
        self.progress = 0.0

    def set_progress(self, p: float) -> None:
        """The training progress ``p ∈ [0, 1]`` of the coming step (called by the loop)."""
        self.progress = float(p)

    @property
    def current_lam(self) -> float:
        """``λ_p`` at the current progress."""
        return scheduled_lambda(self.lam, self.lambda_schedule, self.progress)

    def lam_logs(self) -> dict[str, float]:
        """``{"lam": λ_p}`` under a ramp (nothing for a constant λ: logs as before)."""
        return {} if self.lambda_schedule == "constant" else {"lam": self.current_lam}


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


class GradLoss(AdversarialWeight):
    role = "fair"

    def __init__(self, lam: float, lambda_schedule: str = "constant") -> None:
        super().__init__(lam, lambda_schedule, "GRAD")

    def forward(self, model: torch.nn.Module, x: torch.Tensor,
                batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        inner = fair_module(model, "grad")
        group = check_groups(batch, inner.num_groups, "grad")
        logits, group_logits, _ = model(x, with_groups=True, reverse=1.0)
        group_ce = F.cross_entropy(group_logits, group)
        logs = group_logs(group_logits, group, group_ce) | self.lam_logs()
        return logits, self.current_lam * group_ce, logs

    def __call__(self, model: torch.nn.Module, batch: Batch):
        logits, extra, logs = self.forward(model, batch["x"], batch)
        ce = F.cross_entropy(logits, batch["y"])
        loss = ce + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), **logs}


@register_mode("grad", params=GradParams, role="fair", needs_group_head=True,
               summary="GRAD: CE + lambda * group CE through gradient reversal (Eq. 2)")
def grad_loss(*, lam: float = 1.0, lambda_schedule: LambdaSchedule = "constant") -> GradLoss:
    return GradLoss(lam, lambda_schedule)

