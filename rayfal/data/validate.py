"""Row-level checks of a pool's data, streamed shard by shard and cached by file fingerprint.

Opening a :class:`~rayfal.data.pool.Pool` checks schemas and the ``row_id``/``group`` index;
the values of the other columns need a full read, which a pool of 10^9 rows cannot afford on
every run. :func:`validate_pool` reads each Parquet file once, batch by batch (never the whole
file), and checks:

* ``label`` (when present): integer class ids ``>= 0`` and, given ``num_classes``, ``< C``;
* ``group``: ``>= 0`` (group ids index the per-group metrics and the group heads);
* ``features`` (float vectors): finite (no NaN / inf);
* ``uri`` (image files): no null or empty path/URI (the files themselves are read where they
  are decoded, :mod:`rayfal.data.images`).

Each problem raises :class:`~rayfal.data.pool.PoolError` naming the pool, the file, the column
and (up to 20) row ids. Each file that passes gets a small JSON record in ``cache_dir`` keyed by
its fingerprint (absolute-path hash, size, mtime), holding its label range, so the next run
reads nothing from it; a file that changes is read again. The campaign driver puts the cache
in the run directory (``RUN_DIR/data/pool-checks``) with :func:`check_cache`; pools opened
while it is set (:class:`~rayfal.data.pool.Pool` looks it up) are validated on opening.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfal.data import schema as S

#: bump when the checks change: older cache records are ignored
CHECKS_VERSION = 1
_MAX_SHOWN = 20
_BATCH_ROWS = 65_536



class PoolError(ValueError):
    """Invalid pool data; the message names the file, column or rows (also
    :class:`rayfal.data.pool.PoolError`)."""


_CACHE_DIR: ContextVar[Path | None] = ContextVar("rayfal_pool_check_cache", default=None)


@contextmanager
def check_cache(directory: str | Path | None) -> Iterator[None]:
    """While inside, every pool opened (in this thread / task) is validated with its results
    cached in ``directory`` (created when first written)."""
    token = _CACHE_DIR.set(None if directory is None else Path(directory))
    try:
        yield
    finally:
        _CACHE_DIR.reset(token)


def current_check_cache() -> Path | None:
    """The cache directory set by :func:`check_cache`, or ``None`` (pools are not validated
    on opening)."""
    return _CACHE_DIR.get()


@dataclass(frozen=True)
class FileCheck:
    """What the checks found in one file that passed them (the cached record)."""

    path: str
    size: int
    mtime_ns: int
    rows: int
    label_min: int | None
    label_max: int | None
    label_nulls: int
    version: int = CHECKS_VERSION


@dataclass(frozen=True)
class PoolCheck:
    """The checks of every file of a pool."""

    files: tuple[FileCheck, ...]
    read: int  # files read this time (the others came from the cache)

    @property
    def label_max(self) -> int | None:
        values = [f.label_max for f in self.files if f.label_max is not None]
        return max(values) if values else None

    @property
    def label_min(self) -> int | None:
        values = [f.label_min for f in self.files if f.label_min is not None]
        return min(values) if values else None


def fingerprint(path: str | Path) -> tuple[str, int, int]:
    """``(key, size, mtime_ns)`` of a file; ``key`` hashes its absolute path."""
    full = os.path.abspath(path)
    st = os.stat(full)
    key = f"{Path(full).stem[:40]}-{hashlib.sha1(full.encode()).hexdigest()[:16]}"
    return key, st.st_size, st.st_mtime_ns


def _fmt(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:_MAX_SHOWN])
    more = ", ..." if len(ids) > _MAX_SHOWN else ""
    return f"[{shown}{more}]"


def _error(name: str, path: str, text: str) -> PoolError:
    return PoolError(f"{name}: {path}: {text}")


def check_file(path: str | Path, *, name: str = "pool", schema: pa.Schema | None = None
               ) -> FileCheck:
    """Stream one Parquet file and check its values (see the module docstring); raises
    :class:`~rayfal.data.pool.PoolError` at the first batch with a problem."""
    path = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _error(name, path, f"not a readable Parquet file: {exc}") from None
    sch = schema or pf.schema_arrow
    columns = [S.ROW_ID, S.GROUP]
    has_label = S.LABEL in sch.names
    if has_label:
        columns.append(S.LABEL)
    float_features = (S.FEATURES in sch.names
                      and pa.types.is_fixed_size_list(sch.field(S.FEATURES).type)
                      and pa.types.is_floating(sch.field(S.FEATURES).type.value_type))
    if float_features:
        columns.append(S.FEATURES)
    uris = S.URI in sch.names and S.IMAGE not in sch.names and S.FEATURES not in sch.names
    if uris:
        columns.append(S.URI)
    lo = hi = None
    nulls = rows = 0
    _, size, mtime = fingerprint(path)
    try:
        batches = pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns)
        for batch in batches:
            ids = batch.column(S.ROW_ID).to_numpy(zero_copy_only=False)
            rows += len(ids)
            group = batch.column(S.GROUP)
            g = group.to_numpy(zero_copy_only=False)
            bad = np.zeros(len(ids), bool) if group.null_count else g < 0
            if bad.any():
                raise _error(name, path, f"column 'group' has negative group ids "
                                         f"{sorted(set(g[bad].tolist()))[:5]} in row_id(s) "
                                         f"{_fmt(ids[bad])}")
            if has_label:
                col = batch.column(S.LABEL)
                valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool) \
                    if col.null_count else np.ones(len(ids), bool)
                nulls += int((~valid).sum())
                y = col.fill_null(0).to_numpy(zero_copy_only=False) if col.null_count else \
                    col.to_numpy(zero_copy_only=False)
                neg = valid & (y < 0)
                if neg.any():
                    raise _error(name, path, f"column 'label' has negative class ids "
                                             f"{sorted(set(y[neg].tolist()))[:5]} in row_id(s) "
                                             f"{_fmt(ids[neg])}; labels must be 0..C-1")
                if valid.any():
                    lo = int(y[valid].min()) if lo is None else min(lo, int(y[valid].min()))
                    hi = int(y[valid].max()) if hi is None else max(hi, int(y[valid].max()))
            if float_features:
                x = S.column_to_numpy(batch.column(S.FEATURES))
                nonfinite = ~np.isfinite(x).all(axis=1) if x.size else np.zeros(len(ids), bool)
                if nonfinite.any():
                    raise _error(name, path, f"NaN/inf features in row_id(s) "
                                             f"{_fmt(ids[nonfinite])}")
            if uris:
                col = batch.column(S.URI)
                empty = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
                empty |= np.asarray(col.fill_null("").to_numpy(zero_copy_only=False) == "", bool)
                if empty.any():
                    raise _error(name, path, f"column 'uri' is null or empty in row_id(s) "
                                             f"{_fmt(ids[empty])}")
    except (pa.ArrowInvalid, OSError) as exc:
        raise _error(name, path, f"cannot read its rows: {exc}") from None
    return FileCheck(path=os.path.abspath(path), size=size, mtime_ns=mtime, rows=rows,
                     label_min=lo, label_max=hi, label_nulls=nulls)


def _cached(cache_dir: Path, path: str) -> FileCheck | None:
    key, size, mtime = fingerprint(path)
    record = cache_dir / f"{key}.json"
    try:
        data = json.loads(record.read_text())
        check = FileCheck(**data)
    except (OSError, ValueError, TypeError):
        return None
    if (check.version != CHECKS_VERSION or check.size != size or check.mtime_ns != mtime
            or check.path != os.path.abspath(path)):
        return None
    return check


def _store(cache_dir: Path, check: FileCheck) -> None:
    from rayfal.atomic import atomic_write_text

    key, _, _ = fingerprint(check.path)
    try:
        atomic_write_text(cache_dir / f"{key}.json", json.dumps(asdict(check)))
    except OSError:  # a read-only cache: the checks still ran
        pass


def validate_pool(pool, *, num_classes: int | None = None,
                  cache_dir: str | Path | None = None,
                  files: list[str] | None = None) -> PoolCheck:
    """Check every row of ``pool`` (a :class:`~rayfal.data.pool.Pool`; only ``files`` of it
    when given), file by file, using and filling the cache in ``cache_dir`` (``None``: no
    cache); with ``num_classes`` the labels must also be ``< num_classes``
    (:func:`check_label_range`)."""
    cache = None if cache_dir is None else Path(cache_dir)
    checks, read = [], 0
    for f in pool.files if files is None else files:
        found = _cached(cache, f) if cache is not None else None
        if found is None:
            found = check_file(f, name=pool.name, schema=pool.schema)
            read += 1
            if cache is not None:
                _store(cache, found)
        checks.append(found)
    result = PoolCheck(tuple(checks), read)
    if num_classes is not None:
        check_label_range(pool, num_classes, result)
    return result


def check_label_range(pool, num_classes: int, checked: PoolCheck | None = None,
                      *, what: str = "classes") -> None:
    """Every label of ``pool`` is in ``[0, num_classes)``; the error names the file, the
    labels and the row ids. Uses the per-file label ranges of ``checked`` (or of
    ``pool.checked``, or a fresh :func:`validate_pool`) and reads only a file that fails."""
    checked = checked or getattr(pool, "checked", None) or validate_pool(pool)
    for f in checked.files:
        if f.label_max is None or f.label_max < num_classes:
            continue
        for batch in pq.ParquetFile(f.path).iter_batches(batch_size=_BATCH_ROWS,
                                                         columns=[S.ROW_ID, S.LABEL]):
            y = batch.column(S.LABEL).fill_null(0).to_numpy(zero_copy_only=False)
            bad = y >= num_classes
            if bad.any():
                ids = batch.column(S.ROW_ID).to_numpy(zero_copy_only=False)
                raise _error(pool.name, f.path,
                             f"column 'label' has class ids {sorted(set(y[bad].tolist()))[:5]} "
                             f"outside [0, {num_classes}) ({num_classes} {what}) in row_id(s) "
                             f"{_fmt(ids[bad])}")


def check_pool_labels(pool, test) -> None:
    """The pool's labels are classes of the test set (``[0, C)``, ``C = max test label + 1``,
    the model's output size): a label the model cannot output is an error naming the file and
    row ids. Both pools' checks come from their ``checked`` (or are run now)."""
    if not getattr(pool, "has_labels", False) or not getattr(test, "has_labels", False):
        return
    test_check = getattr(test, "checked", None) or validate_pool(test)
    top = test_check.label_max
    if top is None:
        return
    check_label_range(pool, max(int(top), 1) + 1, what=f"classes of the test set {test.files[0]}"
                      + (" ..." if len(test.files) > 1 else ""))


__all__ = [
    "CHECKS_VERSION",
    "FileCheck",
    "PoolCheck",
    "PoolError",
    "check_cache",
    "check_file",
    "check_label_range",
    "check_pool_labels",
    "current_check_cache",
    "fingerprint",
    "validate_pool",
]
