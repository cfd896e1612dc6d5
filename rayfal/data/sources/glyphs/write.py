"""Glyph data sets on disk: sharded Parquet files, the manifest, :func:`generate_glyphs`.

Label/group assignments of a split come from ``default_rng([seed, split_id])``; the pixels of
shard ``i`` from ``default_rng([seed, split_id, i])``, so shards are independent and the output
does not depend on ``num_workers``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rayfal.data.manifest import MANIFEST, check_existing
from rayfal.data.schema import image_table
from rayfal.data.sources.glyphs.render import available_fonts, render_images
from rayfal.data.sources.glyphs.sample import (
    ALL_SCENARIOS,
    FOUR_CLASS_CHARS,
    FOUR_CLASS_GROUP_NAMES,
    GROUP_NAMES,
    NOISY_SIGMA_SCALE,
    _domain,
    _resolve_chars,
    sample_labels_groups,
)

GENERATOR_VERSION = 2
SPLITS = ("pool", "test")
ROW_GROUP_ROWS = 4096  # Parquet row-group size of the written shards (not part of the data)

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
