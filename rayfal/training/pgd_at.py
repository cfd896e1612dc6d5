"""PGD adversarial training (Madry et al. 2018): cross-entropy on L-inf PGD examples.

``min_θ E[max_{||δ||_inf <= eps} CE(f_θ(x + δ), y)]``: the inner maximisation is
:func:`rayfal.attacks.pgd` with ``loss="ce"`` (model in eval mode, deterministic dropout, random
start in the ball); the outer step trains on the adversarial batch only (no clean term), in train
mode (MC dropout and batch-norm as in the standard mode).

Parameters: ``eps`` (8/255), ``alpha`` (2/255), ``steps`` (10), ``random_start`` (True),
``clamp`` (``"auto"``: [0, 1] for images, none for feature vectors; or ``null`` / ``[lo, hi]``).
Composed with a fairness mode (``pgd_at+grad``, ``pgd_at+gba``) the fairness forward runs on
the adversarial batch: the whole fairness objective is trained on the worst-case inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field
from torch.nn import functional as F

from rayfal.attacks import pgd
from rayfal.training.modes import (
    Batch,
    ClassForward,
    ModeParams,
    plain_forward,
    register_mode,
    resolve_clamp,
)


def _check_clamp(value: Any) -> Any:
    """``"auto"``, ``null`` or ``[low, high]`` with ``low < high`` (as :func:`resolve_clamp`)."""
    if value is None or value == "auto":
        return value
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and value[0] < value[1]):
        return [float(value[0]), float(value[1])]
    raise ValueError("clamp must be 'auto', null or [low, high] with low < high")


#: the input range after an attack step: ``"auto"`` ([0, 1] for images), ``null`` or a pair
Clamp = Annotated[Any, AfterValidator(_check_clamp),
                  Field(json_schema_extra={"anyOf": [{"const": "auto"}, {"type": "null"},
                                                     {"type": "array", "items": {"type": "number"},
                                                      "minItems": 2, "maxItems": 2}]})]


class AttackParams(ModeParams):
    """The L-inf PGD threat model (``pgd_at``, and the attack part of ``trades``)."""

    eps: float = Field(8 / 255, ge=0, description="L-inf radius of the attack")
    alpha: float = Field(2 / 255, gt=0, description="step size of each PGD step")
    steps: int = Field(10, ge=0, description="PGD steps")
    random_start: bool = Field(True, description="start at a uniform point of the ball")
    clamp: Clamp = Field("auto", description="input range: 'auto' ([0, 1] for images), null "
                                             "or [low, high]")


class PGDATParams(AttackParams):
    """Parameters of ``pgd_at``."""


@dataclass(frozen=True)
class AttackSettings:
    """The L-inf threat model shared by ``pgd_at`` and ``trades``."""

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    clamp: Any = "auto"

    def __post_init__(self) -> None:
        if not self.eps >= 0 or not self.alpha > 0 or int(self.steps) != self.steps \
                or self.steps < 0:
            raise ValueError(f"invalid attack settings eps={self.eps!r} alpha={self.alpha!r} "
                             f"steps={self.steps!r} (need eps >= 0, alpha > 0, steps >= 0)")
        resolve_clamp(self.clamp, torch.zeros(1, 1))  # validate the form early

    def run(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None,
            loss: str) -> torch.Tensor:
        return pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=int(self.steps),
                   random_start=self.random_start, loss=loss, clamp=resolve_clamp(self.clamp, x))


class PGDAdversarialLoss:
    """``CE(f(x_adv), y)`` (+ the composed fairness term computed on ``x_adv``)."""

    role = "robust"

    def __init__(self, attack: AttackSettings) -> None:
        self.attack = attack

    def term(self, model: torch.nn.Module, batch: Batch,
             forward: ClassForward) -> tuple[torch.Tensor, dict[str, float]]:
        x_adv = self.attack.run(model, batch["x"], batch["y"], "ce")
        logits, extra, logs = forward(model, x_adv, batch)
        ce = F.cross_entropy(logits, batch["y"])
        loss = ce + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), **logs}

    def __call__(self, model: torch.nn.Module, batch: Batch):
        return self.term(model, batch, plain_forward)


@register_mode("pgd_at", params=PGDATParams, role="robust",
               summary="PGD adversarial training (Madry et al.): CE on L-inf PGD examples")
def pgd_at_loss(
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    random_start: bool = True,
    clamp: Any = "auto",
) -> PGDAdversarialLoss:
    return PGDAdversarialLoss(AttackSettings(eps, alpha, steps, random_start, clamp))

