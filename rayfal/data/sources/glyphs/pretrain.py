"""A glyph set *disjoint* from every campaign scenario, to pretrain a CNN trunk on.

The campaign scenarios (:mod:`~rayfal.data.sources.glyphs.sample`) draw the characters
``'a' 'd'`` (``four_class``: ``'a' 'd' 'e' 'k'``) in the upright DejaVu faces of
:data:`~rayfal.data.sources.glyphs.render.FONT_FILES` (Sans, Sans-Bold, Serif, Serif-Bold),
coloured red (hue 0.00) or blue (hue 0.64), each jittered by ±0.03. The pretraining set uses
none of these:

* characters :data:`PRETRAIN_CHARS`: 10 other lowercase letters (a 10-way classification);
* fonts :data:`PRETRAIN_FONTS`: the condensed and monospaced upright DejaVu faces (files the
  campaign never opens); with no DejaVu installed both fall back to Pillow's default font,
  which the manifest records (``fonts_disjoint: false``);
* colours :data:`PRETRAIN_HUES`: yellow 0.15, green 0.33, cyan 0.50, magenta 0.83 (with the
  same ±0.03 jitter, every hue stays > 0.05 away from red's and blue's ranges).

Everything else (size, rotation, position, grey gradient background, noise) is rendered as in
the campaign, at the campaign's image size, so a trunk trained here fits the campaign model.
Rows are balanced over (character, colour) cells; ``label`` is the character, ``group`` the
colour. Assignments come from ``default_rng([seed, split_id, 0x9E7])`` and pixels from
``default_rng([seed, split_id, 0x9E7, 1])``: a function of the settings alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rayfal.data.schema import image_table
from rayfal.data.sources.glyphs.render import (
    _BASE_HUE,
    _HUE_JITTER,
    FONT_DIR,
    FONT_FILES,
    render_images,
)
from rayfal.data.sources.glyphs.sample import FOUR_CLASS_CHARS
from rayfal.data.sources.glyphs.write import ROW_GROUP_ROWS

PRETRAIN_VERSION = 1
#: characters of every campaign scenario (the default 'a' 'd' and four_class's)
CAMPAIGN_CHARS = tuple(sorted({"a", "d", *FOUR_CLASS_CHARS}))
PRETRAIN_CHARS = ("b", "c", "f", "g", "h", "m", "n", "r", "s", "x")
PRETRAIN_FONTS = (
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSerifCondensed.ttf",
    "DejaVuSerifCondensed-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
PRETRAIN_HUES = (0.15, 0.33, 0.50, 0.83)  # yellow, green, cyan, magenta
PRETRAIN_COLOUR_NAMES = ("yellow", "green", "cyan", "magenta")
CAMPAIGN_HUES = tuple(float(h) for h in _BASE_HUE)  # red, blue
HUE_JITTER = _HUE_JITTER
PRETRAIN_SPLITS = ("train", "test")


def pretrain_fonts() -> list[str]:
    """The pretraining fonts installed here, or ``["<pillow-default>"]`` when none is."""
    found = [name for name in PRETRAIN_FONTS if (FONT_DIR / name).is_file()]
    return found or ["<pillow-default>"]


def hue_distance(a: float, b: float) -> float:
    """Distance between two hues on the colour circle (in [0, 0.5])."""
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def pretrain_data_params(n_train: int, n_test: int, image_size: int, seed: int) -> dict[str, Any]:
    """The settings that determine the pretraining set's bytes (hashed for the cache)."""
    return {
        "name": "glyph-pretrain",
        "version": PRETRAIN_VERSION,
        "chars": list(PRETRAIN_CHARS),
        "fonts": pretrain_fonts(),
        "hues": list(PRETRAIN_HUES),
        "image_shape": [int(image_size), int(image_size), 3],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "seed": int(seed),
    }


def _cells(n: int, n_classes: int, n_colours: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Balanced (label, colour) assignment of ``n`` rows (cells differ by at most one row)."""
    cells = (np.arange(n) % (n_classes * n_colours))[rng.permutation(n)]
    return (cells // n_colours).astype(np.int64), (cells % n_colours).astype(np.int64)


def render_pretrain_split(n: int, *, image_size: int, seed: int, split_id: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [n, H, W, 3], label, colour)`` of one split of the pretraining set."""
    label, colour = _cells(n, len(PRETRAIN_CHARS), len(PRETRAIN_HUES),
                           np.random.default_rng([seed, split_id, 0x9E7]))
    rng = np.random.default_rng([seed, split_id, 0x9E7, 1])
    fonts = pretrain_fonts()
    images = render_images(label, colour, chars=PRETRAIN_CHARS, image_size=image_size, rng=rng,
                           hues=np.asarray(PRETRAIN_HUES)[colour],
                           fonts=None if fonts == ["<pillow-default>"] else fonts)
    return images, label, colour


def write_pretrain_set(out_dir: str | os.PathLike[str], *, n_train: int, n_test: int,
                       image_size: int, seed: int) -> dict[str, Any]:
    """Write the pretraining set as ``out_dir/{train,test}/part-00000.parquet`` (the pool
    schema: row_id, image, group = colour, label = character) and ``out_dir/dataset.json``;
    returns the manifest. ``out_dir`` should be a fresh directory (the caller renames a
    finished one into place). Train row_ids are ``0..n_train-1``, test ones follow."""
    if n_train < 1 or n_test < 1 or image_size < 8:
        raise ValueError("the pretraining set needs n_train >= 1, n_test >= 1, image_size >= 8")
    out = Path(out_dir)
    params = pretrain_data_params(n_train, n_test, image_size, seed)
    sizes = {"train": n_train, "test": n_test}
    files, start = {}, 0
    for split_id, split in enumerate(PRETRAIN_SPLITS):
        images, label, colour = render_pretrain_split(sizes[split], image_size=image_size,
                                                      seed=seed, split_id=split_id)
        (out / split).mkdir(parents=True, exist_ok=True)
        rel = f"{split}/part-00000.parquet"
        row_id = np.arange(start, start + sizes[split], dtype=np.int64)
        pq.write_table(image_table(row_id, images, colour, label), out / rel,
                       row_group_size=ROW_GROUP_ROWS)
        files[split] = [rel]
        start += sizes[split]
    manifest = {
        **params,
        "class_names": list(PRETRAIN_CHARS),
        "group_names": list(PRETRAIN_COLOUR_NAMES),
        "fonts_disjoint": not set(params["fonts"]) & {*FONT_FILES, "<pillow-default>"},
        "campaign_chars": list(CAMPAIGN_CHARS),
        "campaign_fonts": list(FONT_FILES),
        "campaign_hues": list(CAMPAIGN_HUES),
        "hue_jitter": HUE_JITTER,
        "files": files,
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_pretrain_split(data_dir: str | os.PathLike[str], split: str) -> dict[str, np.ndarray]:
    """``{"x": [N, H*W*3] uint8, "y", "group"}`` of one written split (as training takes it)."""
    from rayfal.data.schema import column_to_numpy, feature_column

    table = pq.read_table(Path(data_dir) / split)
    col = feature_column(table.schema)
    return {
        "x": column_to_numpy(table.column(col)),
        "y": table.column("label").to_numpy().astype(np.int64),
        "group": table.column("group").to_numpy().astype(np.int64),
    }
