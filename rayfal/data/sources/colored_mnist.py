"""Colored-MNIST in the setting of the GBA paper (Kurmi et al. 2022, "ColoredMNIST", after
Nam et al. 2020): each digit's strokes get one of 10 colours; in the pool the colour is
correlated with the class with a controllable ``skew``, in the test set it is independent.

Source: ``mnist_5k.csv.gz`` (5,000 rows of 784 pixels 0-255, row-major 28x28, then the label
0-9; 500 rows per class). Construction (deterministic given ``seed``):

1. Split: per class, the rows are shuffled with ``default_rng([seed, 0])``; the first
   ``n_test`` quota go to the test set, the next ``n_pool`` quota to the pool. Quotas are as
   even as possible over the classes (the first ``n % 10`` classes get one more row).
2. Pool colours (``default_rng([seed, 1])``): per class ``c`` with ``m`` pool rows exactly
   ``round(skew * m)`` randomly chosen rows are *bias-aligned* (colour ``c``); every other row is
   *bias-conflicting* with a colour drawn uniformly from the 9 other colours. So the pool's
   aligned fraction is ``skew`` up to rounding (``skew=0.95``/``0.98``/``0.99`` are the paper's
   "95%/98% skew" settings).
3. Test colours (``default_rng([seed, 2])``): per class, colours ``0..9`` are spread evenly
   (``arange(m) % 10``, shuffled): the colour is independent of the class, and 1 row in 10 is
   aligned (the rest are the bias-conflicting rows the evaluation needs).
4. Pixels: ``image = digit / 255 * colour`` on a black background, where ``colour`` is the
   group's RGB base colour plus per-row Gaussian jitter of std ``color_std`` (clipped to
   [0, 1]; "random perturbation" in the paper, ``default_rng([seed, 3])``), rounded to uint8 and
   zero-padded (centred) from 28x28 to ``image_size`` (32 by default: the repo's CNN needs
   sides divisible by 8).

Rows follow the pool schema (``rayfal.data.schema``): ``row_id``, ``image`` (HWC uint8),
``group`` = the colour index (the bias attribute the GRAD/GBA discriminator predicts),
``label`` = the digit, plus ``bias_aligned`` (int64 0/1: colour == label) for the
bias-aligned / bias-conflicting accuracies of the GBA paper's Tables 1/4. Pool row_ids are
``0..n_pool-1``, test row_ids ``n_pool..n_pool+n_test-1``; each split's rows are shuffled.
The dataset is written into a temp dir and renamed into place (atomic), and cached: an existing
dataset with the same parameters is reused, one with other parameters raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfal.data.manifest import MANIFEST, check_existing
from rayfal.data.schema import image_table

GENERATOR_VERSION = 1
BIAS_ALIGNED = "bias_aligned"
N_CLASSES = 10
MNIST_SIDE = 28
#: Default location of the MNIST CSV: ``<repo>/../shared/data/mnist5k/mnist_5k.csv.gz``.
DEFAULT_MNIST_CSV = (
    Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist5k" / "mnist_5k.csv.gz"
)
#: RGB base colour of each group (= the aligned colour of digit ``g``), in [0, 1].
COLOURS = np.array(
    [
        (1.00, 0.00, 0.00),  # 0 red
        (0.00, 1.00, 0.00),  # 1 green
        (0.00, 0.35, 1.00),  # 2 blue
        (1.00, 1.00, 0.00),  # 3 yellow
        (1.00, 0.00, 1.00),  # 4 magenta
        (0.00, 1.00, 1.00),  # 5 cyan
        (1.00, 0.50, 0.00),  # 6 orange
        (0.55, 0.25, 1.00),  # 7 violet
        (1.00, 1.00, 1.00),  # 8 white
        (1.00, 0.60, 0.70),  # 9 pink
    ],
    dtype=np.float64,
)
COLOUR_NAMES = (
    "red", "green", "blue", "yellow", "magenta", "cyan", "orange", "violet", "white", "pink"
)


# ----------------------------------------------------------------------------- source file


def load_mnist_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read the MNIST CSV (gzip or plain): ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Each line holds 784 pixel values 0-255 then the label 0-9; any other shape or range raises
    ``ValueError`` naming the file and the first bad line (1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST CSV {path} does not exist (set dataset.src_dir to the folder that holds mnist_5k.csv.gz)"
        )
    import pandas as pd

    try:
        arr = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a CSV of integers: {exc}") from None
    width = MNIST_SIDE * MNIST_SIDE + 1
    if arr.shape[0] == 0 or arr.shape[1] != width:
        raise ValueError(f"{path}: expected rows of {width} integers, got shape {arr.shape}")
    pixels, labels = arr[:, :-1], arr[:, -1]
    bad = np.flatnonzero((pixels < 0).any(1) | (pixels > 255).any(1))
    if len(bad):
        raise ValueError(f"{path}: pixel values outside 0-255 on line(s) {(bad + 1)[:10].tolist()}")
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    if len(bad):
        raise ValueError(f"{path}: labels outside 0-9 on line(s) {(bad + 1)[:10].tolist()}")
    return pixels.reshape(-1, MNIST_SIDE, MNIST_SIDE).astype(np.uint8), labels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the maths


def even_quota(n: int, n_classes: int = N_CLASSES) -> np.ndarray:
    """``n`` rows spread over the classes as evenly as possible (first classes get the rest)."""
    q = np.full(n_classes, n // n_classes, dtype=np.int64)
    q[: n % n_classes] += 1
    return q


def pool_colours(labels: np.ndarray, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Pool colours: per class exactly ``round(skew * m)`` aligned rows, the others a uniform
    colour among the ``N_CLASSES - 1`` other colours (step 2 of the module docstring)."""
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew must be in [0, 1], got {skew}")
    labels = np.asarray(labels, dtype=np.int64)
    colours = labels.copy()
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        n_conflict = len(idx) - int(round(skew * len(idx)))
        conflict = idx[rng.permutation(len(idx))[:n_conflict]]
        colours[conflict] = (c + rng.integers(1, N_CLASSES, n_conflict)) % N_CLASSES
    return colours


def unbiased_colours(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Test colours independent of the class: within each class the 10 colours are spread
    evenly (step 3 of the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    colours = np.empty_like(labels)
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        colours[idx] = (np.arange(len(idx)) % N_CLASSES)[rng.permutation(len(idx))]
    return colours


def colourise(
    digits: np.ndarray,
    colours: np.ndarray,
    rng: np.random.Generator,
    *,
    color_std: float = 0.03,
    image_size: int = 32,
) -> np.ndarray:
    """Grey digits ``[N, 28, 28]`` uint8 -> coloured uint8 ``[N, S, S, 3]`` (step 4)."""
    n = len(digits)
    rgb = np.clip(COLOURS[colours] + rng.normal(0.0, color_std, (n, 3)), 0.0, 1.0)
    img = digits.astype(np.float64)[..., None] * rgb[:, None, None, :]
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    pad = image_size - MNIST_SIDE
    if pad < 0:
        raise ValueError(f"image_size must be >= {MNIST_SIDE}, got {image_size}")
    lo = pad // 2
    out = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
    out[:, lo : lo + MNIST_SIDE, lo : lo + MNIST_SIDE] = img
    return out


def split_rows(
    labels: np.ndarray, n_pool: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Source-row indices of ``(pool, test)``: stratified by class (step 1), each shuffled."""
    pool_q, test_q = even_quota(n_pool), even_quota(n_test)
    pool_idx, test_idx = [], []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        if pool_q[c] + test_q[c] > len(idx):
            raise ValueError(
                f"class {c} has {len(idx)} source rows but n_pool={n_pool} and n_test={n_test} "
                f"need {pool_q[c]} + {test_q[c]} of them"
            )
        idx = idx[rng.permutation(len(idx))]
        test_idx.append(idx[: test_q[c]])
        pool_idx.append(idx[test_q[c] : test_q[c] + pool_q[c]])
    pool, test = np.concatenate(pool_idx), np.concatenate(test_idx)
    return pool[rng.permutation(len(pool))], test[rng.permutation(len(test))]


def build_colored_mnist(
    digits: np.ndarray,
    labels: np.ndarray,
    *,
    n_pool: int,
    n_test: int,
    skew: float,
    seed: int = 0,
    color_std: float = 0.03,
    image_size: int = 32,
) -> dict[str, dict[str, np.ndarray]]:
    """In-memory splits ``{"pool"|"test": {"image", "label", "group", "bias_aligned"}}``."""
    if n_pool < 1 or n_test < 1:
        raise ValueError(f"need n_pool >= 1 and n_test >= 1, got {n_pool}, {n_test}")
    if not color_std >= 0:
        raise ValueError(f"color_std must be >= 0, got {color_std}")
    pool_idx, test_idx = split_rows(labels, n_pool, n_test, np.random.default_rng([seed, 0]))
    out: dict[str, dict[str, np.ndarray]] = {}
    pix_rng = np.random.default_rng([seed, 3])
    for split, idx in (("pool", pool_idx), ("test", test_idx)):
        y = labels[idx].astype(np.int64)
        if split == "pool":
            g = pool_colours(y, skew, np.random.default_rng([seed, 1]))
        else:
            g = unbiased_colours(y, np.random.default_rng([seed, 2]))
        out[split] = {
            "image": colourise(digits[idx], g, pix_rng, color_std=color_std,
                               image_size=image_size),
            "label": y,
            "group": g,
            BIAS_ALIGNED: (g == y).astype(np.int64),
        }
    return out


# ----------------------------------------------------------------------------- on disk


def _table(row_id: np.ndarray, split: dict[str, np.ndarray]) -> pa.Table:
    table = image_table(row_id, split["image"], split["group"], split["label"])
    meta = table.schema.metadata
    table = table.append_column(BIAS_ALIGNED, pa.array(split[BIAS_ALIGNED], type=pa.int64()))
    return table.replace_schema_metadata(meta)


def generate_colored_mnist(
    out_dir: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    n_pool: int = 4000,
    n_test: int = 1000,
    skew: float = 0.95,
    seed: int = 0,
    color_std: float = 0.03,
    image_size: int = 32,
    shard_rows: int = 50_000,
) -> dict[str, Any]:
    """Write ``out_dir/{pool,test}/part-NNNNN.parquet`` + ``dataset.json``; return the manifest.

    ``source`` defaults to :data:`DEFAULT_MNIST_CSV`. Cached and atomic (module docstring).
    """
    src = Path(source) if source else DEFAULT_MNIST_CSV
    if not src.is_file():
        raise FileNotFoundError(
            f"MNIST CSV {src} does not exist (set dataset.src_dir to the folder that holds mnist_5k.csv.gz)"
        )
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    params = {
        "name": "colored_mnist",
        "version": GENERATOR_VERSION,
        "source_sha256": _sha256(src),
        "seed": int(seed),
        "n_pool": int(n_pool),
        "n_test": int(n_test),
        "skew": float(skew),
        "color_std": float(color_std),
        "image_shape": [int(image_size), int(image_size), 3],
        "shard_rows": int(shard_rows),
    }
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        return check_existing(out, params, "colored_mnist")
    digits, labels = load_mnist_csv(src)
    splits = build_colored_mnist(
        digits, labels, n_pool=n_pool, n_test=n_test, skew=skew, seed=seed,
        color_std=color_std, image_size=image_size,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        files: dict[str, list[str]] = {}
        counts: dict[str, Any] = {}
        start = 0
        for name in ("pool", "test"):
            split = splits[name]
            n = len(split["label"])
            (tmp / name).mkdir()
            files[name] = []
            for i, lo in enumerate(range(0, n, shard_rows)):
                hi = min(n, lo + shard_rows)
                rel = f"{name}/part-{i:05d}.parquet"
                part = {k: v[lo:hi] for k, v in split.items()}
                pq.write_table(_table(np.arange(start + lo, start + hi), part), tmp / rel)
                files[name].append(rel)
            cell = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
            np.add.at(cell, (split["label"], split["group"]), 1)
            counts[name] = {
                "label_colour": cell.tolist(),  # [label][colour]
                "bias_aligned": int(split[BIAS_ALIGNED].sum()),
                "bias_aligned_fraction": float(split[BIAS_ALIGNED].mean()),
            }
            start += n
        manifest = {
            **params,
            "source": str(src),
            "class_names": [str(c) for c in range(N_CLASSES)],
            "group_names": list(COLOUR_NAMES),
            "counts": counts,
            "row_ids": {"pool": [0, n_pool], "test": [n_pool, n_pool + n_test]},
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(tmp, out)  # atomic; replaces an empty out_dir
        except OSError:
            if out.exists() and (out / MANIFEST).is_file():  # lost a race to an identical writer
                shutil.rmtree(tmp, ignore_errors=True)
                return check_existing(out, params, "colored_mnist")
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
