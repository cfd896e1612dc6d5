"""Scenario sampling: which class, group and colour each row gets.

* ``minority_group``: the group is independent of the class and rare,
  ``P(group=1) = minority_fraction``; classes are balanced within each group.
* ``sensitive_attribute``: a spurious correlation, ``P(group = label | label) = correlation``
  (mostly red 'a', mostly blue 'd'); classes are balanced.
* ``four_class``: 4 classes ``'a' 'd' 'e' 'k'``, a rare class-independent "noisy" group (noise
  std x ``NOISY_SIGMA_SCALE``) and a red/blue colour drawn independently of class and group.

Assignments are stratified (exact cell counts, largest-remainder rounding) and shuffled with
the caller's generator; ``balanced=True`` gives every (label, group) cell the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayfal.data.sources.glyphs.render import render_images

SCENARIOS = ("minority_group", "sensitive_attribute")
#: Scenarios added after the paper's two (kept apart so ``SCENARIOS`` stays the paper's pair).
EXTRA_SCENARIOS = ("four_class",)
ALL_SCENARIOS = SCENARIOS + EXTRA_SCENARIOS
FOUR_CLASS_CHARS = ("a", "d", "e", "k")
FOUR_CLASS_GROUP_NAMES = ("clean", "noisy")
NOISY_SIGMA_SCALE = 5.0  # four_class group 1: noise std in [0.05, 0.25] instead of [0.01, 0.05]
GROUP_NAMES = ("red", "blue")


# ----------------------------------------------------------------------------- label sampling


def _cell_probs(
    n_classes: int, scenario: str, minority_fraction: float, correlation: float, balanced: bool
) -> np.ndarray:
    """``[C, G]`` joint probabilities of (label, group)."""
    n_groups = len(GROUP_NAMES)
    if scenario not in ALL_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {ALL_SCENARIOS}")
    if balanced:
        return np.full((n_classes, n_groups), 1.0 / (n_classes * n_groups))
    if scenario in ("minority_group", "four_class"):
        if not 0.0 <= minority_fraction <= 1.0:
            raise ValueError(f"minority_fraction must be in [0, 1], got {minority_fraction}")
        p_group = np.array([1.0 - minority_fraction, minority_fraction])
        return np.outer(np.full(n_classes, 1.0 / n_classes), p_group)
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    probs = np.full((n_classes, n_groups), (1.0 - correlation) / (n_groups - 1))
    probs[np.arange(n_classes), np.arange(n_classes) % n_groups] = correlation
    return probs / n_classes


def _apportion(n: int, probs: np.ndarray) -> np.ndarray:
    """Integer cell counts summing to ``n`` (largest remainder, ties by cell order)."""
    flat = probs.reshape(-1) * n
    counts = np.floor(flat).astype(np.int64)
    rest = n - int(counts.sum())
    order = np.argsort(-(flat - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts.reshape(probs.shape)


def sample_labels_groups(
    n: int,
    *,
    n_classes: int,
    scenario: str,
    rng: np.random.Generator,
    minority_fraction: float = 0.1,
    correlation: float = 0.9,
    balanced: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, shuffled (label, group) assignment of ``n`` rows for a scenario."""
    counts = _apportion(
        n, _cell_probs(n_classes, scenario, minority_fraction, correlation, balanced)
    )
    cells = np.repeat(np.arange(counts.size), counts.reshape(-1))
    cells = cells[rng.permutation(n)]
    n_groups = counts.shape[1]
    return (cells // n_groups).astype(np.int64), (cells % n_groups).astype(np.int64)


# ----------------------------------------------------------------------------- scenario designs


def _resolve_chars(classes: Sequence[str] | int | None, chars: Sequence[str]) -> tuple[str, ...]:
    if classes is None:
        out = tuple(chars)
    elif isinstance(classes, int):
        if not 1 <= classes <= len(chars):
            raise ValueError(f"classes={classes} but only {len(chars)} chars: {tuple(chars)}")
        out = tuple(chars)[:classes]
    else:
        out = tuple(classes)
    if len(out) < 1 or len(set(out)) != len(out) or any(len(c) != 1 for c in out):
        raise ValueError(f"chars must be distinct single characters, got {out}")
    return out


def render_glyphs(
    n: int,
    *,
    classes: Sequence[str] | int | None = None,
    scenario: str,
    rng_seed: int | Sequence[int],
    image_size: int = 32,
    minority_fraction: float = 0.1,
    correlation: float = 0.9,
    balanced: bool = False,
    chars: Sequence[str] = ("a", "d"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``n`` (label, group) pairs for ``scenario`` and render them.

    ``classes`` is either the characters themselves (overriding ``chars``), the number of
    classes (the first ``classes`` of ``chars``) or ``None`` (all of ``chars``); label ``i`` is
    the ``i``-th character. Returns ``(images uint8 [n, H, W, 3], label int64, group int64)``.
    """
    if scenario == "four_class" and classes is None:
        classes = FOUR_CLASS_CHARS
    alphabet = _resolve_chars(classes, chars)
    rng = np.random.default_rng(rng_seed)
    label, group = sample_labels_groups(
        n,
        n_classes=len(alphabet),
        scenario=scenario,
        rng=rng,
        minority_fraction=minority_fraction,
        correlation=correlation,
        balanced=balanced,
    )
    images = render_images(label, group, chars=alphabet, image_size=image_size, rng=rng,
                           **_domain(scenario, group, rng))
    return images, label, group


def _domain(scenario: str, groups: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Extra :func:`render_images` arguments of a scenario (``four_class``: independent
    red/blue colours drawn from ``rng``, noisy group 1); none for the paper's scenarios."""
    if scenario != "four_class":
        return {}
    return {
        "colours": rng.integers(0, 2, len(groups)),
        "noise_scale": np.where(np.asarray(groups) == 1, NOISY_SIGMA_SCALE, 1.0),
    }


