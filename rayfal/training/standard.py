"""The standard mode: cross-entropy on the labelled set (empirical risk minimisation)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rayfal.training.modes import Batch, LossFn, ModeParams, register_mode


class StandardParams(ModeParams):
    """``standard`` takes no parameters."""


@register_mode("standard", params=StandardParams,
               summary="cross-entropy on the labelled set (empirical risk minimisation)")
def standard_loss() -> LossFn:
    def loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["x"])
        ce = F.cross_entropy(logits, batch["y"])
        return ce, {"ce": float(ce.detach())}

    return loss
