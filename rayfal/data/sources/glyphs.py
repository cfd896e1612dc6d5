"""Synthetic glyph datasets in the style of Synbols (Lacoste et al., 2020).

Reproduces the two bias scenarios of Branchaud-Charron et al. (2021), Section 4 / Appendix B:
binary classification of the characters ``'a'`` (label 0) vs ``'d'`` (label 1), with the glyph
colour as the group: red (group 0) vs blue (group 1).

* ``minority_group``: the group is independent of the class and rare,
  ``P(group=1) = minority_fraction``; classes are balanced within each group.
* ``sensitive_attribute``: a spurious correlation, ``P(group = label | label) = correlation``
  (mostly red 'a', mostly blue 'd'); classes are balanced.
* ``four_class`` (an addition to the paper's two): 4 classes ``'a' 'd' 'e' 'k'`` and two
  *noise domains* as the group: group 0 "clean" (the usual noise) and group 1 "noisy" (per-pixel
  noise std x ``NOISY_SIGMA_SCALE``), rare and class-independent like ``minority_group``
  (``P(group=1) = minority_fraction``). The glyph colour (red/blue) is drawn independently of
  class and group, so the rare, harder noisy group is the worst group.

The test split is balanced in both scenarios: every (label, group) cell has the same size
(when ``n_test`` is a multiple of the number of cells; otherwise cells differ by at most one).

Each glyph gets a random DejaVu font, size, rotation (±10°) and position, an antialiased
foreground in a jittered red/blue, a random grey gradient background and per-pixel Gaussian
noise. Label/group assignments of a split are stratified (exact cell counts, largest-remainder
rounding) and shuffled with ``default_rng([seed, split_id])``; the pixels of shard ``i`` come
from ``default_rng([seed, split_id, i])``, so shards are independent and the output does not
depend on ``num_workers``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from rayfal.data.manifest import MANIFEST, check_existing
from rayfal.data.schema import image_table

SCENARIOS = ("minority_group", "sensitive_attribute")
#: Scenarios added after the paper's two (kept apart so ``SCENARIOS`` stays the paper's pair).
EXTRA_SCENARIOS = ("four_class",)
ALL_SCENARIOS = SCENARIOS + EXTRA_SCENARIOS
FOUR_CLASS_CHARS = ("a", "d", "e", "k")
FOUR_CLASS_GROUP_NAMES = ("clean", "noisy")
NOISY_SIGMA_SCALE = 5.0  # four_class group 1: noise std in [0.05, 0.25] instead of [0.01, 0.05]
GENERATOR_VERSION = 2
GROUP_NAMES = ("red", "blue")
SPLITS = ("pool", "test")
ROW_GROUP_ROWS = 4096  # Parquet row-group size of the written shards (not part of the data)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# Upright regular/bold sans and serif faces. Synbols' defaults (many fonts, larger rotations)
# need a pretrained backbone, as in the paper (VGG-16 on ImageNet); these keep the shape task
# learnable from a few hundred labels by a small CNN trained from scratch on 2 CPU cores.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
)

# Foreground colour per group in HSV: base hue, then jitter ranges.
_BASE_HUE = np.array([0.0, 0.64])  # red, blue
_HUE_JITTER = 0.03
_SAT_RANGE = (0.75, 1.0)
_VAL_RANGE = (0.75, 1.0)
# Background: grey gradient between two levels in [0, 1], small colour tint, Gaussian noise.
_BG_RANGE = (0.04, 0.45)
_BG_TINT = 0.04
_NOISE_SIGMA = (0.01, 0.05)
# Glyph geometry: font size relative to the image size, rotation in degrees.
_SCALE_RANGE = (0.7, 0.95)
_MAX_ROTATION = 10.0
_CHUNK = 256  # images composed per vectorised step

_font_cache: dict[tuple[int, int], ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
_mask_cache: dict[tuple[int, str, int], Image.Image] = {}
_rotated_cache: dict[tuple[int, str, int, int], np.ndarray] = {}
_ROTATED_CACHE_BYTES = 64 << 20  # cleared when exceeded (matters only for big image sizes)
_rotated_bytes = 0


# ----------------------------------------------------------------------------- fonts and masks


def available_fonts() -> list[str]:
    """Font files used for rendering (DejaVu if installed), or ``["<pillow-default>"]``."""
    found = [name for name in FONT_FILES if (FONT_DIR / name).is_file()]
    return found or ["<pillow-default>"]


def _font(index: int, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    key = (index, size)
    font = _font_cache.get(key)
    if font is None:
        names = available_fonts()
        if names == ["<pillow-default>"]:
            font = ImageFont.load_default(size=size)
        else:
            font = ImageFont.truetype(str(FONT_DIR / names[index]), size=size)
        _font_cache[key] = font
    return font


def _glyph_mask(font_index: int, char: str, size: int) -> Image.Image:
    """Antialiased coverage mask (mode ``L``) of one character, cropped to its ink bbox."""
    key = (font_index, char, size)
    mask = _mask_cache.get(key)
    if mask is None:
        font = _font(font_index, size)
        canvas = Image.new("L", (3 * size, 3 * size), 0)
        ImageDraw.Draw(canvas).text((size, size), char, fill=255, font=font)
        bbox = canvas.getbbox()
        mask = canvas.crop(bbox) if bbox else Image.new("L", (1, 1), 0)
        _mask_cache[key] = mask
    return mask


def _rotated_glyph(font_index: int, char: str, size: int, degrees: int) -> np.ndarray:
    """Cached ``[h, w]`` uint8 ink of a glyph rotated by whole ``degrees`` (bicubic)."""
    global _rotated_bytes
    key = (font_index, char, size, degrees)
    arr = _rotated_cache.get(key)
    if arr is None:
        if _rotated_bytes > _ROTATED_CACHE_BYTES:
            _rotated_cache.clear()
            _rotated_bytes = 0
        glyph = _glyph_mask(font_index, char, size).rotate(degrees, Image.BICUBIC, expand=True)
        bbox = glyph.getbbox()
        arr = np.asarray(glyph.crop(bbox)) if bbox else np.zeros((0, 0), np.uint8)
        _rotated_cache[key] = arr
        _rotated_bytes += arr.nbytes
    return arr


@functools.cache
def _normal_table() -> np.ndarray:
    """Standard-normal quantiles at the 65536 midpoints ``(i + 0.5) / 65536`` (float32)."""
    dist = NormalDist()
    return np.array([dist.inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)


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


# ----------------------------------------------------------------------------- rendering


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns ``[N, 3]``."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], 1),
            np.stack([q, v, p], 1),
            np.stack([p, v, t], 1),
            np.stack([p, q, v], 1),
            np.stack([t, p, v], 1),
            np.stack([v, p, q], 1),
        ],
        0,
    )
    return table[i, np.arange(len(h))]


def render_images(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    chars: Sequence[str],
    image_size: int,
    rng: np.random.Generator,
    return_masks: bool = False,
    colours: np.ndarray | None = None,
    noise_scale: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one glyph per (label, group) as uint8 ``[N, H, W, 3]`` (optionally + masks).

    The colour is the group's (red/blue) unless ``colours`` (0/1 per row) is given;
    ``noise_scale`` multiplies each row's noise std. Neither changes the random draws.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    n, size = len(labels), int(image_size)
    n_fonts = len(available_fonts())
    # All random draws up front, in a fixed order.
    font_idx = rng.integers(0, n_fonts, n)
    font_px = np.maximum(4, np.rint(size * rng.uniform(*_SCALE_RANGE, n))).astype(np.int64)
    angle = np.rint(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n)).astype(np.int64)
    pos = rng.random((n, 2))
    hue_idx = groups if colours is None else np.asarray(colours, dtype=np.int64)
    hue = _BASE_HUE[hue_idx] + rng.uniform(-_HUE_JITTER, _HUE_JITTER, n)
    fg = _hsv_to_rgb(hue, rng.uniform(*_SAT_RANGE, n), rng.uniform(*_VAL_RANGE, n))
    fg = fg.astype(np.float32)
    bg_levels = rng.uniform(*_BG_RANGE, (n, 2)).astype(np.float32)
    bg_tint = rng.uniform(-_BG_TINT, _BG_TINT, (n, 3)).astype(np.float32)
    bg_dir = rng.uniform(0.0, 2 * np.pi, n)
    sigma = rng.uniform(*_NOISE_SIGMA, n).astype(np.float32)
    if noise_scale is not None:
        sigma = (sigma * np.asarray(noise_scale, dtype=np.float32)).astype(np.float32)

    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    normal = _normal_table()
    # Chunked so temporaries stay cache-sized; channel-first so inner loops are H*W long.
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        for k in range(lo, hi):
            glyph = _rotated_glyph(
                int(font_idx[k]), chars[labels[k]], int(font_px[k]), int(angle[k])
            )
            _paste(masks[k], glyph, pos[k])
        # Background: grey gradient along a random direction, tinted per channel.
        d = bg_dir[lo:hi]
        t = (
            np.cos(d)[:, None, None] * coords[None, None, :]
            + np.sin(d)[:, None, None] * coords[None, :, None]
        ).astype(np.float32)
        t = np.clip(t * np.float32(np.sqrt(2.0)) + np.float32(0.5), 0.0, 1.0)
        lev0, lev1 = bg_levels[lo:hi, 0, None, None], bg_levels[lo:hi, 1, None, None]
        grey = lev0 + (lev1 - lev0) * t
        alpha = masks[lo:hi] * np.float32(1.0 / 255.0)
        img = np.empty((hi - lo, 3, size, size), dtype=np.float32)
        for c in range(3):
            bg = grey + bg_tint[lo:hi, c, None, None]
            img[:, c] = bg + alpha * (fg[lo:hi, c, None, None] - bg)
        # Per-pixel Gaussian noise (table lookup of uniform uint16 draws: fast and exact
        # enough at 8-bit output precision).
        noise = normal[rng.integers(0, len(normal), img.shape, dtype=np.uint16)]
        noise *= sigma[lo:hi, None, None, None]
        img += noise
        img *= np.float32(255.0)
        np.clip(img, 0.0, 255.0, out=img)
        img += np.float32(0.5)  # round half up on the cast below
        images[lo:hi] = img.astype(np.uint8).transpose(0, 2, 3, 1)
    return (images, masks) if return_masks else images


def _paste(canvas: np.ndarray, arr: np.ndarray, pos: np.ndarray) -> None:
    """Paste the glyph ink ``arr`` into the square ``canvas`` at relative position ``pos``."""
    h, w = arr.shape
    if h == 0 or w == 0:
        return
    size = canvas.shape[0]
    y0 = int(pos[0] * (size - h + 1)) if h <= size else -((h - size) // 2)
    x0 = int(pos[1] * (size - w + 1)) if w <= size else -((w - size) // 2)
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(h, size - y0), min(w, size - x0)
    canvas[y0 + ys : y0 + ye, x0 + xs : x0 + xe] = arr[ys:ye, xs:xe]


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


# ----------------------------------------------------------------------------- dataset on disk


def _write_shard(
    path: str,
    row_start: int,
    labels: np.ndarray,
    groups: np.ndarray,
    chars: tuple[str, ...],
    image_size: int,
    seed_key: list[int],
    scenario: str = "",
) -> str:
    """Render one shard with ``default_rng(seed_key)`` and write it as Parquet, in row groups
    of ``ROW_GROUP_ROWS`` rows so a streaming reader decodes one small group at a time (one
    50,000-row group of images made a Ray Data read worker peak at ~3 GiB)."""
    rng = np.random.default_rng(seed_key)
    images = render_images(labels, groups, chars=chars, image_size=image_size, rng=rng,
                           **_domain(scenario, groups, rng))
    row_id = np.arange(row_start, row_start + len(labels), dtype=np.int64)
    pq.write_table(image_table(row_id, images, groups, labels), path,
                   row_group_size=ROW_GROUP_ROWS)
    return path


def _params(
    scenario: str,
    n_pool: int,
    n_test: int,
    seed: int,
    image_size: int,
    minority_fraction: float,
    correlation: float,
    shard_rows: int,
    chars: tuple[str, ...],
) -> dict[str, Any]:
    """The manifest keys that determine the data (compared on a cache hit)."""
    extra = {"noisy_sigma_scale": NOISY_SIGMA_SCALE} if scenario == "four_class" else {}
    return {
        **extra,
        "name": "glyphs",
        "version": GENERATOR_VERSION,
        "scenario": scenario,
        "seed": int(seed),
        "image_shape": [int(image_size), int(image_size), 3],
        "chars": list(chars),
        "n_pool": int(n_pool),
        "n_test": int(n_test),
        "minority_fraction": (
            float(minority_fraction) if scenario in ("minority_group", "four_class") else None
        ),
        "correlation": float(correlation) if scenario == "sensitive_attribute" else None,
        "shard_rows": int(shard_rows),
        "fonts": available_fonts(),
    }


def generate_glyphs(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str,
    n_pool: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 32,
    minority_fraction: float = 0.1,
    correlation: float = 0.9,
    shard_rows: int = 50_000,
    chars: Sequence[str] | None = None,
    progress: bool = True,
    num_workers: int = 1,
) -> dict[str, Any]:
    """Generate a glyph pool + balanced test set under ``out_dir`` and return its manifest.

    Layout: ``out_dir/{pool,test}/part-NNNNN.parquet`` and ``out_dir/dataset.json``. Pool
    row_ids are ``0..n_pool-1``, test row_ids ``n_pool..n_pool+n_test-1``. The dataset is built
    in a temp dir next to ``out_dir`` and renamed into place. An existing dataset with the same
    parameters is returned as is; one with different parameters raises ``ValueError``.
    ``num_workers > 1`` renders shards in a spawn-based process pool (same bytes as serial); as
    with any spawn pool, a calling script needs an ``if __name__ == "__main__":`` guard.
    ``chars`` defaults to ``'a' 'd'`` (``FOUR_CLASS_CHARS`` for ``four_class``).
    """
    if scenario not in ALL_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {ALL_SCENARIOS}")
    if chars is None:
        chars = FOUR_CLASS_CHARS if scenario == "four_class" else ("a", "d")
    alphabet = _resolve_chars(None, chars)
    if n_pool < 0 or n_test < 0 or shard_rows < 1 or image_size < 8:
        raise ValueError("need n_pool >= 0, n_test >= 0, shard_rows >= 1, image_size >= 8")
    out = Path(out_dir)
    params = _params(
        scenario,
        n_pool,
        n_test,
        seed,
        image_size,
        minority_fraction,
        correlation,
        shard_rows,
        alphabet,
    )
    if out.exists() and any(out.iterdir()):
        return check_existing(out, params, "glyphs")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the dataset should be readable like a mkdir
    try:
        manifest = _generate_into(tmp, params, alphabet, progress, num_workers)
        try:
            os.rename(tmp, out)  # atomic; replaces an empty out_dir
        except OSError:
            if out.exists() and (out / MANIFEST).is_file():  # lost a race to an identical writer
                shutil.rmtree(tmp, ignore_errors=True)
                return check_existing(out, params, "glyphs")
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _generate_into(
    root: Path,
    params: dict[str, Any],
    chars: tuple[str, ...],
    progress: bool,
    num_workers: int,
) -> dict[str, Any]:
    seed, shard_rows, image_size = params["seed"], params["shard_rows"], params["image_shape"][0]
    sizes = {"pool": params["n_pool"], "test": params["n_test"]}
    jobs: list[tuple[Any, ...]] = []
    counts: dict[str, list[list[int]]] = {}
    files: dict[str, list[str]] = {}
    row_start = 0
    for split_id, split in enumerate(SPLITS):
        n = sizes[split]
        (root / split).mkdir()
        label, group = sample_labels_groups(
            n,
            n_classes=len(chars),
            scenario=params["scenario"],
            rng=np.random.default_rng([seed, split_id]),
            minority_fraction=params["minority_fraction"] or 0.0,
            correlation=params["correlation"] or 0.0,
            balanced=split == "test",
        )
        cell = np.zeros((len(chars), len(GROUP_NAMES)), dtype=np.int64)
        np.add.at(cell, (label, group), 1)
        counts[split] = cell.tolist()
        files[split] = []
        for i, lo in enumerate(range(0, n, shard_rows)):
            hi = min(n, lo + shard_rows)
            rel = f"{split}/part-{i:05d}.parquet"
            files[split].append(rel)
            jobs.append(
                (
                    str(root / rel),
                    row_start + lo,
                    label[lo:hi],
                    group[lo:hi],
                    chars,
                    image_size,
                    [seed, split_id, i],
                    params["scenario"],
                )
            )
        row_start += n

    bar = _progress(len(jobs), progress)
    try:
        if num_workers > 1 and len(jobs) > 1:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=ctx) as pool:
                futures = [pool.submit(_write_shard, *job) for job in jobs]
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(1)
        else:
            for job in jobs:
                _write_shard(*job)
                bar.update(1)
    finally:
        bar.close()

    manifest = {
        **params,
        "group_names": list(
            FOUR_CLASS_GROUP_NAMES if params["scenario"] == "four_class" else GROUP_NAMES
        ),
        "class_names": list(chars),
        "counts": counts,  # counts[split][label][group]
        "row_ids": {"pool": [0, sizes["pool"]], "test": [sizes["pool"], row_start]},
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="glyph shards", unit="shard", disable=not enabled)
