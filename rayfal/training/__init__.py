"""Training: modes (one loss per file), a plain torch loop, and the Ray Train glue."""

from rayfal.training import standard  # noqa: F401  (registration)
from rayfal.training.modes import MODES, make_loss

__all__ = ["MODES", "make_loss"]
