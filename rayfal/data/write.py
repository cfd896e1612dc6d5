"""Write one's own data into the pool schema (:mod:`rayfal.data.schema`) as Parquet shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rayfal.data import schema as S


def _column(name: str, values, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"write_pool: {name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"write_pool: {name} has {len(arr)} rows, the features have {n}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"write_pool: {name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def write_pool(
    directory: str | Path,
    *,
    row_id,
    group,
    features=None,
    images=None,
    label=None,
    shard_rows: int = 50_000,
) -> Path:
    """Write rows to ``directory/part-NNNNN.parquet`` (``shard_rows`` rows a file) and return
    the glob ``directory/*.parquet`` to put in a job's ``dataset: {name: parquet, pool: ...}``.

    ``row_id`` (unique integers), ``group`` (integer group ids) and exactly one of ``features``
    (float ``[N, D]``) or ``images`` (uint8 ``[N, H, W, C]``); ``label`` (integer classes) may be
    ``None`` for an unlabelled pool. Accepts numpy arrays, lists or pandas Series. Each file is
    written to a temporary name and renamed, so a crash never leaves a half-written shard.
    """
    if (features is None) == (images is None):
        raise ValueError("write_pool: give exactly one of features=[N, D] or images=[N, H, W, C]")
    data = np.asarray(features if features is not None else images)
    n = len(data)
    if n == 0:
        raise ValueError("write_pool: no rows")
    ids = _column("row_id", row_id, n)
    if len(np.unique(ids)) != n:
        _, first = np.unique(ids, return_index=True)
        dup = np.unique(ids[np.setdiff1d(np.arange(n), first)])[:10].tolist()
        raise ValueError(f"write_pool: duplicate row_id values {dup}")
    grp = _column("group", group, n)
    lab = None if label is None else _column("label", label, n)
    if features is not None and not np.all(np.isfinite(np.asarray(data, np.float64))):
        bad = ids[~np.isfinite(np.asarray(data, np.float64)).all(axis=1)][:10].tolist()
        raise ValueError(f"write_pool: non-finite features in rows with row_id {bad}")
    if shard_rows < 1:
        raise ValueError(f"write_pool: shard_rows must be >= 1, got {shard_rows}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, shard_rows)):
        sl = slice(start, start + shard_rows)
        part = lab[sl] if lab is not None else None
        table = (S.feature_table(ids[sl], data[sl], grp[sl], part) if features is not None
                 else S.image_table(ids[sl], data[sl], grp[sl], part))
        final = out / f"part-{i:05d}.parquet"
        tmp = out / f".part-{i:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    return out / "*.parquet"
