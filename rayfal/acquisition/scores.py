"""Uncertainty acquisition scores computed from predicted class probabilities (pure numpy).

Every score takes ``probs`` of shape ``[N, C]`` (one forward pass) or ``[N, C, T]``
(``T`` MC-dropout samples) and returns a float64 array of shape ``[N]`` in which *larger
means more informative*. Entropies use the natural log and the convention ``0 * log 0 = 0``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["bald", "entropy", "margin", "mean_probs"]


def _validate(probs: ArrayLike) -> np.ndarray:
    """Return ``probs`` as float64 after checking it is 2-D/3-D, finite and non-negative."""
    arr = np.asarray(probs)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"probs must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"probs must have shape [N, C] or [N, C, T], got {arr.ndim}-D shape {arr.shape}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"probs must have at least one class (C >= 1), got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 0:
        raise ValueError(f"probs must have at least one sample (T >= 1), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("probs must be finite (found NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"probs must be non-negative (min value {arr.min()!r})")
    return arr


def _xlogx(x: np.ndarray) -> np.ndarray:
    """Elementwise ``x * log(x)`` with the limit ``0 * log 0 = 0``."""
    safe = np.where(x > 0, x, 1.0)
    return x * np.log(safe)


def _entropy_over_classes(p: np.ndarray) -> np.ndarray:
    """Shannon entropy ``H[p] = -sum_c p_c log p_c`` along axis 1 (the class axis)."""
    return -np.sum(_xlogx(p), axis=1)


def mean_probs(probs: ArrayLike) -> np.ndarray:
    """Predictive distribution ``p(y|x, D) ~= (1/T) sum_t p_t(y|x)``: ``[N, C]`` (float64).

    ``[N, C]`` input is returned as float64 unchanged; ``[N, C, T]`` is averaged over ``T``.
    """
    arr = _validate(probs)
    return arr.mean(axis=2) if arr.ndim == 3 else arr


def entropy(probs: ArrayLike) -> np.ndarray:
    """Predictive entropy ``H[p(y|x, D)] = -sum_c pbar_c log pbar_c`` with ``pbar`` the
    MC-averaged probabilities (:func:`mean_probs`). Returns ``[N]`` float64."""
    return _entropy_over_classes(mean_probs(probs))


def margin(probs: ArrayLike) -> np.ndarray:
    """Negated margin ``-(pbar_(1) - pbar_(2))`` between the top-1 and top-2 mean class
    probabilities, so that larger (smaller gap) is more informative. Needs ``C >= 2``."""
    p = mean_probs(probs)
    if p.shape[1] < 2:
        raise ValueError(f"margin needs at least 2 classes, got C={p.shape[1]}")
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def bald(probs: ArrayLike) -> np.ndarray:
    """BALD mutual information (Houlsby et al. 2011; Eq. 1 of Branchaud-Charron et al. 2021):

    ``I[y, w | x, D] = H[E_t p_t(y|x)] - E_t H[p_t(y|x)]``,

    estimated with the ``T`` MC-dropout samples. ``[N, C]`` input is a single sample, so its
    BALD is 0. Tiny negative values from floating-point rounding are clipped to 0.
    """
    arr = _validate(probs)
    if arr.ndim == 2:
        return np.zeros(arr.shape[0], dtype=np.float64)
    predictive = _entropy_over_classes(arr.mean(axis=2))
    expected = _entropy_over_classes(arr).mean(axis=1)
    return np.maximum(predictive - expected, 0.0)
