"""Fixed, seed-free splits of a table by row_id hash."""

from __future__ import annotations

import numpy as np

from rayfal.hashing import row_uniform


def validation_mask(row_id: np.ndarray, fraction: float, salt: int = 0x7A1D) -> np.ndarray:
    """Rows whose hashed row_id falls below ``fraction`` (a fixed, seed-free split of the test
    set into validation — used for ``z*`` — and the reported test rows)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"evaluation.val_fraction must be in [0, 1), got {fraction}")
    return row_uniform(np.asarray(row_id, dtype=np.int64), salt) < fraction
