"""Drawing glyph images: fonts, rotation, scale, position, colour, background and noise.

Each glyph gets a random DejaVu font, size, rotation (±10°) and position, an antialiased
foreground in a jittered red/blue (the row's group, or the ``colours`` given), a random grey
gradient background and per-pixel Gaussian noise. Every random draw comes from the ``rng``
passed to :func:`render_images`, in a fixed order, so the pixels are a function of it alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

_font_cache: dict[tuple[int | str, int], ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
_mask_cache: dict[tuple[int | str, str, int], Image.Image] = {}
_rotated_cache: dict[tuple[int | str, str, int, int], np.ndarray] = {}
_ROTATED_CACHE_BYTES = 64 << 20  # cleared when exceeded (matters only for big image sizes)
_rotated_bytes = 0


# ----------------------------------------------------------------------------- fonts and masks


def available_fonts() -> list[str]:
    """Font files used for rendering (DejaVu if installed), or ``["<pillow-default>"]``."""
    found = [name for name in FONT_FILES if (FONT_DIR / name).is_file()]
    return found or ["<pillow-default>"]


def _font(index: int | str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font ``index`` of :func:`available_fonts`, or the DejaVu file named ``index``."""
    key = (index, size)
    font = _font_cache.get(key)
    if font is None:
        names = available_fonts() if isinstance(index, int) else [index]
        name = names[index] if isinstance(index, int) else index
        if name == "<pillow-default>":
            font = ImageFont.load_default(size=size)
        else:
            font = ImageFont.truetype(str(FONT_DIR / name), size=size)
        _font_cache[key] = font
    return font


def _glyph_mask(font_index: int | str, char: str, size: int) -> Image.Image:
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


def _rotated_glyph(font_index: int | str, char: str, size: int, degrees: int) -> np.ndarray:
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
    hues: np.ndarray | None = None,
    fonts: Sequence[str] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one glyph per (label, group) as uint8 ``[N, H, W, 3]`` (optionally + masks).

    The colour is the group's (red/blue) unless ``colours`` (0/1 per row) is given;
    ``noise_scale`` multiplies each row's noise std. Neither changes the random draws.
    ``hues`` (a base hue in [0, 1) per row, overriding the red/blue ones) and ``fonts``
    (DejaVu file names drawn from instead of :data:`FONT_FILES`) serve the disjoint
    pretraining set (:mod:`rayfal.data.sources.glyphs.pretrain`); left ``None`` they change
    nothing.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    n, size = len(labels), int(image_size)
    font_keys: list[int] | list[str] = (
        list(range(len(available_fonts()))) if fonts is None else list(fonts)
    )
    # All random draws up front, in a fixed order.
    font_idx = rng.integers(0, len(font_keys), n)
    font_px = np.maximum(4, np.rint(size * rng.uniform(*_SCALE_RANGE, n))).astype(np.int64)
    angle = np.rint(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n)).astype(np.int64)
    pos = rng.random((n, 2))
    if hues is not None:
        base_hue = np.asarray(hues, dtype=np.float64)
    else:
        hue_idx = groups if colours is None else np.asarray(colours, dtype=np.int64)
        base_hue = _BASE_HUE[hue_idx]
    hue = base_hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER, n)
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
                font_keys[int(font_idx[k])], chars[labels[k]], int(font_px[k]), int(angle[k])
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
