"""Training: modes (one loss per file), a plain torch loop, and the Ray Train glue."""

from rayfal.training import (  # noqa: F401  (registration)
    fairlearn_mode,
    gba,
    grad,
    pgd_at,
    standard,
    trades,
)
from rayfal.training.compose import SUPPORTED, supported_compositions
from rayfal.training.modes import MODES, make_loss, mode_parts, needs_group_head

__all__ = [
    "MODES",
    "SUPPORTED",
    "make_loss",
    "mode_parts",
    "needs_group_head",
    "supported_compositions",
]
