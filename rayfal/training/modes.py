"""Training modes: a mode is a loss ``loss(model, batch) -> (loss, logs)`` registered by name.

``batch`` holds ``x``, ``y`` and (for the fairness modes) ``group``. Every mode logs ``loss``
(the optimised total) and ``ce`` (the classification cross-entropy on the inputs the classifier
is trained on: adversarial ones for ``pgd_at``, clean ones otherwise), plus its own terms.

Each mode file declares its ``Params`` (a pydantic model of ``mode_params``) and a one-line
``summary`` next to its factory (:func:`rayfal.training.registry.register_mode`).

Modes compose as ``"<robust>+<fairness>"`` (see :mod:`rayfal.training.compose`), e.g.
``make_loss("trades+grad", beta=6.0, lam=0.5)``; :func:`needs_group_head` tells the driver to
build the model with a group head (``build_model(..., num_groups=G)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# the registry and the dispatch live apart (registry.py, compose.py) so that neither imports
# this module: re-exported here for the callers of ``rayfal.training.modes``
from rayfal.training.compose import (
    check_mode,
    make_loss,
    mode_params_model,
    needs_group_head,
    validate_mode_params,
)
from rayfal.training.registry import (
    MODES,
    Batch,
    LossFn,
    ModeParams,
    mode_parts,
    register_mode,
)

__all__ = [
    "MODES",
    "Batch",
    "ClassForward",
    "LossFn",
    "ModeParams",
    "check_groups",
    "check_mode",
    "make_loss",
    "mode_params_model",
    "mode_parts",
    "needs_group_head",
    "plain_forward",
    "register_mode",
    "resolve_clamp",
    "unwrap",
    "validate_mode_params",
]


# ----------------------------------------------------------------------------- shared helpers


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def resolve_clamp(clamp: Any, x: torch.Tensor) -> tuple[float, float] | None:
    """``"auto"``: ``(0, 1)`` for image batches ``[N, C, H, W]`` (pixels in [0, 1]), no clamp for
    feature vectors; ``None``: no clamp; a pair: that range."""
    if isinstance(clamp, str):
        if clamp != "auto":
            raise ValueError(f"clamp must be 'auto', null or [low, high], got {clamp!r}")
        return (0.0, 1.0) if x.dim() == 4 else None
    if clamp is None:
        return None
    if not isinstance(clamp, Sequence) or len(clamp) != 2:
        raise ValueError(f"clamp must be 'auto', null or [low, high], got {clamp!r}")
    return (float(clamp[0]), float(clamp[1]))


def check_groups(batch: Batch, num_groups: int, mode: str) -> torch.Tensor:
    """The batch's group ids, checked to lie in ``[0, num_groups)`` (the group head's classes)."""
    if "group" not in batch:
        raise KeyError(f"training mode '{mode}' needs the batch's 'group' column")
    group = batch["group"].long()
    if len(group):
        lo, hi = int(group.min()), int(group.max())
        if lo < 0 or hi >= num_groups:
            raise ValueError(
                f"training mode '{mode}': group ids must be in [0, {num_groups}) for a "
                f"{num_groups}-way group head, got min {lo}, max {hi}"
            )
    return group


#: ``forward(model, x, batch) -> (class_logits, extra_loss, logs)``: how the classifier sees a
#: batch of inputs ``x`` (the rows of ``batch``). Fairness modes supply one that also adds their
#: adversarial group term; robust modes call it on clean and/or adversarial inputs.
ClassForward = Callable[
    [torch.nn.Module, torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor, dict[str, float]]
]


def plain_forward(
    model: torch.nn.Module, x: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The class logits and no extra term (the standard classifier)."""
    logits = model(x)
    return logits, logits.new_zeros(()), {}
