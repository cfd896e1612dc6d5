"""``rayfal data index-images``: a pool index (Parquet, ``uri`` column) from a tree of image files.

The files stay where they are (a local directory, or any ``pyarrow.fs`` URI such as
``s3://bucket/prefix``); the index holds one row per file:

* ``row_id`` -- a stable 63-bit hash of the file's path relative to the root (and of an optional
  ``namespace``): the same tree indexed on a laptop and in a bucket gets the same ids, so labels,
  scores and MC-dropout masks follow the files. Two paths with the same id are an error naming
  both (it takes ~3·10^9 files for a 50 % chance of one).
* ``uri`` -- the absolute local path or the full URI of the file.
* ``label`` -- from the ImageFolder layout (``ROOT/<class>/.../file.jpg``: classes are the
  sorted first-level folder names, ids ``0..K-1``, as ``torchvision.datasets.ImageFolder``) or
  from the CSV; absent when neither gives one (a pool to be labelled by people).
* ``group`` -- from the CSV's ``group`` column, else 0.

The optional CSV has a ``file`` column (the path relative to the root, or a bare file name when
that is unique) and ``group`` and/or ``label`` columns of integers; it must name every file
(missing, unknown or duplicated names are errors listing them). The schema metadata records the
decoding size (``rayfal.image_input``), the class names (``rayfal.classes``) and the root. The
written index is then opened and validated as any pool (:class:`rayfal.data.pool.Pool`,
:func:`rayfal.data.validate.validate_pool`). With ``verify=True`` every file is also read and
decoded once (slow for big trees), and unreadable ones are reported by row_id and path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rayfal.data import schema as S

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CLASSES_KEY = b"rayfal.classes"
ROOT_KEY = b"rayfal.image_root"


class IndexImagesError(ValueError):
    """A tree or CSV that cannot be indexed; the message names the files."""


@dataclass
class IndexResult:
    """What :func:`index_images` wrote."""

    pattern: str  # the glob of the written shards, for a job's dataset.pool
    rows: int
    classes: list[str]
    labelled: bool


def row_id_for(relative: str, namespace: str = "", bits: int = 63) -> int:
    """The stable row_id of a file: the first 8 bytes of BLAKE2b(``namespace`` NUL
    ``relative``), masked to ``bits`` bits (non-negative int64)."""
    digest = hashlib.blake2b(f"{namespace}\0{relative}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def _is_remote(root: str) -> bool:
    scheme = urlparse(root).scheme
    return bool(scheme) and scheme != "file" and len(scheme) > 1


def list_images(root: str, extensions: Iterable[str] = IMAGE_EXTENSIONS
                ) -> tuple[str, list[str]]:
    """``(uri prefix, sorted relative POSIX paths)`` of the image files under ``root``."""
    exts = tuple(e.lower() for e in extensions)
    if _is_remote(root):
        import pyarrow.fs as pafs

        from rayfal.data.images import filesystem_for

        base = root.rstrip("/")
        fs, path = filesystem_for(base)
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        except (OSError, ValueError) as exc:
            raise IndexImagesError(f"cannot list {root}: {exc}") from None
        rel = [PurePosixPath(i.path).relative_to(path).as_posix() for i in infos
               if i.type == pafs.FileType.File and i.path.lower().endswith(exts)]
        return base + "/", sorted(rel)
    local = Path(root[len("file://"):] if root.startswith("file://") else root).resolve()
    if not local.is_dir():
        raise IndexImagesError(f"{root} is not a directory")
    rel = []
    for dirpath, dirnames, filenames in os.walk(local):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(exts) and not name.startswith("."):
                rel.append(Path(dirpath, name).relative_to(local).as_posix())
    return str(local) + os.sep, sorted(rel)


def _read_csv(csv: str, rel: list[str]) -> dict[str, np.ndarray]:
    import pandas as pd

    try:
        df = pd.read_csv(csv)
    except (OSError, ValueError) as exc:
        raise IndexImagesError(f"{csv}: cannot read it as CSV: {exc}") from None
    if "file" not in df.columns:
        raise IndexImagesError(f"{csv}: needs a 'file' column (has {list(df.columns)})")
    given = [c for c in ("group", "label") if c in df.columns]
    if not given:
        raise IndexImagesError(f"{csv}: needs a 'group' and/or 'label' column (has {list(df.columns)})")
    names = [PurePosixPath(r).name for r in rel]
    by_rel = {r: i for i, r in enumerate(rel)}
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    by_name = {n: i for i, n in enumerate(names) if counts[n] == 1}
    pos = np.full(len(df), -1, np.int64)
    files = df["file"].astype(str).tolist()
    for k, f in enumerate(files):
        f = f.strip()
        f = f[2:] if f.startswith("./") else f
        pos[k] = by_rel.get(f, by_name.get(f, -1))
    unknown = [files[k] for k in np.flatnonzero(pos < 0)[:10]]
    if unknown:
        raise IndexImagesError(f"{csv}: {int((pos < 0).sum())} file(s) not found under the root "
                          f"(or ambiguous bare names), e.g. {unknown}")
    uniq, cnt = np.unique(pos, return_counts=True)
    if (cnt > 1).any():
        dup = [rel[i] for i in uniq[cnt > 1][:10]]
        raise IndexImagesError(f"{csv}: files named more than once: {dup}")
    missing = np.setdiff1d(np.arange(len(rel)), pos)
    if len(missing):
        raise IndexImagesError(f"{csv}: {len(missing)} indexed file(s) have no row, e.g. "
                          f"{[rel[i] for i in missing[:10]]}")
    out: dict[str, np.ndarray] = {}
    for col in given:
        vals = df[col]
        if vals.isna().any() or not np.all(np.equal(np.mod(vals.to_numpy(float), 1), 0)):
            bad = [files[k] for k in np.flatnonzero(vals.isna().to_numpy()
                                                    | (np.mod(vals.fillna(0).to_numpy(float), 1)
                                                       != 0))[:10]]
            raise IndexImagesError(f"{csv}: column '{col}' must hold integers for every file "
                              f"(e.g. {bad})")
        arr = np.empty(len(rel), np.int64)
        arr[pos] = vals.to_numpy(np.int64)
        if (arr < 0).any():
            raise IndexImagesError(f"{csv}: column '{col}' has negative values for "
                              f"{[rel[i] for i in np.flatnonzero(arr < 0)[:10]]}")
        out[col] = arr
    return out


def _folder_labels(rel: list[str]) -> tuple[np.ndarray | None, list[str]]:
    depth = np.array([len(PurePosixPath(r).parts) for r in rel])
    if (depth == 1).all():
        return None, []
    if (depth == 1).any():
        flat = [r for r, d in zip(rel, depth, strict=True) if d == 1][:5]
        raise IndexImagesError(f"mixed layout: files at the root ({flat}) and in class folders; an "
                          "ImageFolder tree keeps every file in ROOT/<class>/ (or give the "
                          "labels in a CSV)")
    first = [PurePosixPath(r).parts[0] for r in rel]
    classes = sorted(set(first))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[f] for f in first], np.int64), classes


def index_images(root: str, out: str | Path, *, csv: str | None = None, image_size: int = 224,
                 channels: int = 3, namespace: str = "", shard_rows: int = 100_000,
                 verify: bool = False, progress: bool = True, _bits: int = 63) -> IndexResult:
    """Write the pool index of the image files under ``root`` to ``out/part-NNNNN.parquet``
    (module docstring) and validate it; returns the shards' glob and what was found."""
    from rayfal.data.pool import Pool
    from rayfal.data.validate import validate_pool

    prefix, rel = list_images(root)
    if not rel:
        raise IndexImagesError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    n = len(rel)
    row_id = np.empty(n, np.int64)
    seen: dict[int, str] = {}
    collisions: list[tuple[str, str]] = []
    for i, r in enumerate(tqdm(rel, desc="index images", unit="file", disable=not progress)):
        rid = row_id_for(r, namespace, _bits)
        if rid in seen:
            collisions.append((seen[rid], r))
        seen[rid] = r
        row_id[i] = rid
    if collisions:
        shown = "; ".join(f"{a} and {b}" for a, b in collisions[:5])
        raise IndexImagesError(f"{len(collisions)} row_id collision(s) between file paths: {shown}. "
                          "Rename one of each pair or index with another namespace")
    label, classes = _folder_labels(rel)
    group = np.zeros(n, np.int64)
    if csv is not None:
        cols = _read_csv(csv, rel)
        group = cols.get("group", group)
        if "label" in cols:
            label, classes = cols["label"], []
    uris = [prefix + r for r in rel]
    if verify:
        _verify(uris, row_id, (channels, image_size, image_size), progress)
    meta = {S.IMAGE_INPUT_KEY: json.dumps({"size": int(image_size),
                                           "channels": int(channels)}).encode(),
            CLASSES_KEY: json.dumps(classes).encode(), ROOT_KEY: str(root).encode()}
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    for k, start in enumerate(range(0, n, shard_rows)):
        sl = slice(start, start + shard_rows)
        cols_: dict[str, pa.Array] = {
            S.ROW_ID: pa.array(row_id[sl]), S.GROUP: pa.array(group[sl]),
            S.URI: pa.array(uris[sl], type=pa.string())}
        if label is not None:
            cols_[S.LABEL] = pa.array(label[sl])
        table = pa.table(cols_).replace_schema_metadata(meta)
        tmp = directory / f".part-{k:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, directory / f"part-{k:05d}.parquet")
    pattern = str(directory / "*.parquet")
    validate_pool(Pool(pattern, name=str(directory)))
    return IndexResult(pattern, n, classes, label is not None)


def _verify(uris: list[str], row_id: np.ndarray, shape: tuple[int, int, int],
            progress: bool) -> None:
    from rayfal.data.images import ImageDecodeError, decode_image, read_bytes

    errors = []
    for uri, rid in tqdm(list(zip(uris, row_id.tolist(), strict=True)), desc="verify images",
                         unit="file", disable=not progress):
        try:
            decode_image(read_bytes(uri), shape)
        except Exception as exc:  # noqa: BLE001
            errors.append((rid, uri, f"{type(exc).__name__}: {exc}"))
    if errors:
        raise ImageDecodeError(errors)


__all__ = ["IMAGE_EXTENSIONS", "IndexImagesError", "IndexResult", "index_images", "list_images",
           "row_id_for"]
