"""Training: modes (one loss per file), a plain torch loop, and the Ray Train glue.

Importing this package registers every mode in :data:`MODES`; :mod:`~rayfal.training.registry`
holds the registry, :mod:`~rayfal.training.compose` the dispatch by name and the composition
rules, :mod:`~rayfal.training.modes` the helpers shared by the mode files.
"""

from rayfal.training import (  # noqa: F401  (registration)
    fairlearn_mode,
    gba,
    grad,
    pgd_at,
    standard,
    trades,
)
from rayfal.training.compose import (
    SUPPORTED,
    check_mode,
    inference_model,
    make_loss,
    mode_names,
    mode_params_model,
    mode_summary,
    needs_group_head,
    supported_compositions,
    validate_mode_params,
)
from rayfal.training.registry import MODES, ModeParams, mode_parts, register_mode

__all__ = [
    "MODES",
    "SUPPORTED",
    "ModeParams",
    "check_mode",
    "inference_model",
    "make_loss",
    "mode_names",
    "mode_params_model",
    "mode_parts",
    "mode_summary",
    "needs_group_head",
    "register_mode",
    "supported_compositions",
    "validate_mode_params",
]
