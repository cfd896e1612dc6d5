"""Training modes: a mode is a loss ``loss(model, batch) -> (loss, logs)`` registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rayfal.registry import Registry

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]

#: name -> factory(**mode_params) -> LossFn
MODES: Registry = Registry("training mode")


def make_loss(name: str, **params: Any) -> LossFn:
    """Build the loss function of a registered training mode."""
    return MODES.get(name)(**params)
