"""Counter-based hashing of row ids: reproducible per-row random numbers in any process."""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def row_uniform(row_ids: np.ndarray, *salt: int) -> np.ndarray:
    """A uniform [0, 1) number per row, a pure function of ``(salt..., row_id)``.

    Used for uniform sampling and tie-breaking: the same row gets the same number in every
    shard, batch and process, so random selection is reproducible and order-independent.
    """
    h = np.asarray(row_ids).astype(np.int64).view(np.uint64)
    for s in salt:
        h = _splitmix64(h ^ _splitmix64(np.full_like(h, np.uint64(s & 0xFFFFFFFFFFFFFFFF))))
    h = _splitmix64(h)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
