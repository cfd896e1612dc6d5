"""A Parquet-backed pool: any number of shards in the schema of :mod:`rayfal.data.schema`.

Opening a pool validates every file's schema (errors name the file and column; an image
column's ``rayfal.image_shape`` metadata must match its row length) and that ``row_id`` is
unique and ``group`` has no nulls. The per-row index (every ``row_id`` and ``group``, in file
order) is streamed file by file into unlinked temporary files and memory-mapped read-only
(:class:`PoolIndex`), so the driver holds no per-row copy in its heap: pages are read from the
page cache when touched and the kernel can drop them. Pools whose ``row_id`` increase across the
(sorted) files, as every pool rayfal writes, need no sorted copy; others get a sorted copy and
its permutation, also memory-mapped. Rows are fetched by ``row_id`` with a filtered, streaming
scan.

The values of every row (labels ``>= 0``, groups ``>= 0``, finite features) are checked file by
file by :func:`rayfal.data.validate.validate_pool` when the pool is opened with a check cache:
``Pool(..., check_cache=DIR)``, or inside :func:`rayfal.data.validate.check_cache` (the campaign
driver sets it to the run directory), so each file is read once, not on every run.
"""

from __future__ import annotations

import glob
import json
import mmap
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from rayfal.data import schema as S
from rayfal.data.validate import PoolError, current_check_cache, validate_pool

__all__ = ["Pool", "PoolError", "PoolIndex", "expand_paths"]

#: rows per step when the index is scanned (group counts, copies): bounds temporaries
_STEP = 1 << 20


def _mapped(values: np.ndarray | None, n: int, *, writable: bool = False) -> np.ndarray:
    """A read-only (or writable) int64 array of ``n`` values in an unlinked temporary file,
    memory-mapped (shared mapping); filled from ``values`` when given."""
    with tempfile.TemporaryFile(prefix="rayfal-pool-index-") as fh:
        if values is not None:
            np.ascontiguousarray(values, dtype=np.int64).tofile(fh)
        else:
            fh.truncate(8 * n)
        fh.flush()
        mm = mmap.mmap(fh.fileno(), 8 * n, access=mmap.ACCESS_WRITE if writable
                       else mmap.ACCESS_READ)
    return np.frombuffer(mm, dtype=np.int64, count=n)


@dataclass(frozen=True)
class PoolIndex:
    """The memory-mapped per-row index of a pool (module docstring): ``row_id`` and ``group``
    in file order, ``sorted_ids`` (``row_id`` itself when already increasing) and ``order``
    (``row_id[order] == sorted_ids``; ``None`` when increasing). All int64, read-only."""

    row_id: np.ndarray
    group: np.ndarray
    sorted_ids: np.ndarray
    order: np.ndarray | None

    def positions(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(known, pos)``: whether each id is in the pool, and for the known ones their
        positions in file order."""
        ids = np.asarray(row_ids, dtype=np.int64)
        n = len(self.sorted_ids)
        at = np.minimum(np.searchsorted(self.sorted_ids, ids), n - 1)
        known = self.sorted_ids[at] == ids
        at = at[known]
        return known, (at if self.order is None else self.order[at])


def expand_paths(pattern: str | Sequence[str]) -> list[str]:
    """Expand globs / directories into a sorted list of ``.parquet`` files."""
    patterns = [pattern] if isinstance(pattern, str | Path) else list(pattern)
    files: list[str] = []
    for p in patterns:
        p = str(p)
        if Path(p).is_dir():
            files += sorted(glob.glob(str(Path(p) / "*.parquet")))
        else:
            files += sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise PoolError(f"pool file(s) not found: {missing[:5]}")
    if not files:
        raise PoolError(f"no Parquet files match {patterns}")
    return files


class Pool:
    """A validated set of Parquet shards addressed by ``row_id``."""

    def __init__(self, pattern: str | Sequence[str], *, name: str = "pool",
                 check_cache: str | Path | None = None, image_size: int | None = None,
                 channels: int | None = None, on_error: str = "fail") -> None:
        """Open the shards ``pattern`` names (a glob, a directory, a file or a list of them).

        ``check_cache``: validate every row's values too (:mod:`rayfal.data.validate`), with
        the per-file results cached in that directory; default: the directory set by
        :func:`rayfal.data.validate.check_cache`, if any (else the values are checked lazily,
        when rows are read).

        A pool of image files (a ``uri`` column, :mod:`rayfal.data.images`) decodes them to
        ``(channels, image_size, image_size)`` (default: the index's ``rayfal.image_input``
        metadata); ``on_error`` (``fail``/``skip``) is what scoring does with a file it cannot
        read (kept here for the scorers)."""
        self.name = name
        self.files = expand_paths(pattern)
        self._image_opts = {"size": image_size, "channels": channels}
        self.on_error = on_error
        self.schema = self._check_schemas()
        self.feature_column = S.feature_column(self.schema)
        self.input_shape = self._input_shape(self.schema)
        self.has_labels = S.LABEL in self.schema.names
        self._dataset = pads.dataset(self.files, schema=self.schema, format="parquet")
        self.index = self._load_index()
        self.num_rows = len(self.index.row_id)
        cache = check_cache if check_cache is not None else current_check_cache()
        #: the row checks (:class:`rayfal.data.validate.PoolCheck`) when they ran on opening
        self.checked = validate_pool(self, cache_dir=cache) if cache is not None else None

    def _check_schemas(self) -> pa.Schema:
        first: pa.Schema | None = None
        for f in self.files:
            try:
                sch = pq.read_schema(f)
            except (pa.ArrowInvalid, OSError) as exc:
                raise PoolError(f"{self.name}: {f} is not a readable Parquet file: {exc}") from None
            for col in (S.ROW_ID, S.GROUP):
                if col not in sch.names:
                    raise PoolError(f"{self.name}: {f} has no '{col}' column (has {sch.names})")
            if not pa.types.is_integer(sch.field(S.ROW_ID).type):
                raise PoolError(f"{self.name}: {f}: column 'row_id' must be int64")
            if not pa.types.is_integer(sch.field(S.GROUP).type):
                raise PoolError(f"{self.name}: {f}: column 'group' must be integer group ids")
            if S.LABEL in sch.names and not pa.types.is_integer(sch.field(S.LABEL).type):
                raise PoolError(f"{self.name}: {f}: column 'label' must be integer class ids")
            self._check_image_shape(f, sch)
            try:
                self._input_shape(sch)
            except ValueError as exc:
                raise PoolError(f"{self.name}: {f}: {exc}") from None
            if first is None:
                first = sch
            elif not sch.remove_metadata().equals(first.remove_metadata()):
                raise PoolError(
                    f"{self.name}: {f} has a different schema from {self.files[0]}: "
                    f"{sch.remove_metadata()} vs {first.remove_metadata()}"
                )
        assert first is not None
        return first

    def _input_shape(self, sch: pa.Schema) -> tuple[int, ...]:
        if S.IMAGE not in sch.names and S.FEATURES not in sch.names and S.URI in sch.names:
            return S.uri_input_shape(sch, **self._image_opts)
        return S.input_shape(sch)

    def _check_image_shape(self, f: str, sch: pa.Schema) -> None:
        """An image column's ``rayfal.image_shape`` metadata: JSON ``[H, W, C]`` of positive
        ints whose product is the column's values per row."""
        if S.IMAGE not in sch.names:
            return
        field_type = sch.field(S.IMAGE).type
        if not pa.types.is_fixed_size_list(field_type):
            raise PoolError(f"{self.name}: {f}: column 'image' must be a fixed-size list of uint8 "
                            f"pixels, found {field_type}")
        raw = (sch.metadata or {}).get(S.IMAGE_SHAPE_KEY)
        key = S.IMAGE_SHAPE_KEY.decode()
        if raw is None:
            return  # S.input_shape names the missing metadata
        try:
            shape = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            shape = None
        if (not isinstance(shape, list) or len(shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                           for v in shape)):
            raise PoolError(f"{self.name}: {f}: schema metadata '{key}' must be JSON [H, W, C] "
                            f"(positive integers), found {raw[:60]!r}")
        h, w, c = shape
        if h * w * c != field_type.list_size:
            raise PoolError(f"{self.name}: {f}: schema metadata '{key}' = {shape} gives "
                            f"{h * w * c} values per image, but the 'image' column has "
                            f"{field_type.list_size} per row")

    def _read_index_columns(self, f: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            t = pq.read_table(f, columns=[S.ROW_ID, S.GROUP])
        except (pa.ArrowInvalid, OSError) as exc:
            raise PoolError(f"{self.name}: cannot read {f}: {exc}") from None
        for col in (S.ROW_ID, S.GROUP):
            if t.column(col).null_count:
                raise PoolError(f"{self.name}: {f}: column '{col}' has null values")
        return (t.column(S.ROW_ID).to_numpy().astype(np.int64, copy=False),
                t.column(S.GROUP).to_numpy().astype(np.int64, copy=False))

    def _load_index(self) -> PoolIndex:
        """Stream ``row_id``/``group`` file by file into the memory-mapped index (at most one
        file's columns in the heap), checking nulls and that ``row_id`` is unique."""
        increasing, last, n = True, None, 0
        with (tempfile.TemporaryFile(prefix="rayfal-pool-ids-") as ids_fh,
              tempfile.TemporaryFile(prefix="rayfal-pool-groups-") as grp_fh):
            for f in self.files:
                ids, groups = self._read_index_columns(f)
                if len(ids):
                    increasing = increasing and (last is None or int(ids[0]) > last) and bool(
                        np.all(ids[1:] > ids[:-1]))
                    last = int(ids[-1])
                ids.tofile(ids_fh)
                groups.tofile(grp_fh)
                n += len(ids)
            if n == 0:
                raise PoolError(f"{self.name}: {self.files} hold no rows")
            ids_fh.flush()
            grp_fh.flush()
            row_id = np.frombuffer(mmap.mmap(ids_fh.fileno(), 8 * n, access=mmap.ACCESS_READ),
                                   dtype=np.int64, count=n)
            group = np.frombuffer(mmap.mmap(grp_fh.fileno(), 8 * n, access=mmap.ACCESS_READ),
                                  dtype=np.int64, count=n)
        if increasing:  # strictly increasing: unique, and already the sorted ids
            return PoolIndex(row_id, group, row_id, None)
        order = _mapped(np.argsort(row_id, kind="stable"), n)
        sorted_ids = _mapped(None, n, writable=True)
        for s in range(0, n, _STEP):
            sorted_ids[s : s + _STEP] = row_id[order[s : s + _STEP]]
        dups = []
        for s in range(0, n, _STEP):
            step = sorted_ids[s : s + _STEP + 1]
            dups.append(step[1:][step[1:] == step[:-1]])
        dup = np.unique(np.concatenate(dups))
        if len(dup):
            where = [f for f in self.files
                     if np.isin(dup[:10], self._read_index_columns(f)[0]).any()]
            raise PoolError(
                f"{self.name}: {len(dup)} duplicated row_id(s), e.g. {dup[:10].tolist()} "
                f"(in {', '.join(where[:4])}{', ...' if len(where) > 4 else ''})"
            )
        sorted_ids.flags.writeable = False
        return PoolIndex(row_id, group, sorted_ids, order)

    # ------------------------------------------------------------------ queries
    def row_ids(self) -> np.ndarray:
        """Every ``row_id`` in file order (read-only, memory-mapped)."""
        return self.index.row_id

    def groups(self) -> np.ndarray:
        """Group of every row, aligned with :meth:`row_ids` (read-only, memory-mapped)."""
        return self.index.group

    def is_known(self, row_ids: np.ndarray) -> np.ndarray:
        return self.index.positions(row_ids)[0]

    def groups_of(self, row_ids: np.ndarray) -> np.ndarray:
        """The group of each of these (known) row_ids, in the order given."""
        known, pos = self.index.positions(row_ids)
        if not known.all():
            raise PoolError(f"{self.name}: unknown row_id(s) "
                            f"{np.asarray(row_ids)[~known][:20].tolist()}")
        return self.index.group[pos]

    def group_counts(self, exclude: np.ndarray | None = None) -> dict[int, int]:
        """Rows per group, less the rows ``exclude`` names (ids not in the pool are ignored);
        groups left with no row are left out. Scans the index in steps (bounded memory)."""
        counts: dict[int, int] = {}

        def add(g: np.ndarray, sign: int) -> None:
            vals, cs = np.unique(g, return_counts=True)
            for v, c in zip(vals.tolist(), cs.tolist(), strict=True):
                counts[v] = counts.get(v, 0) + sign * c

        for s in range(0, self.num_rows, _STEP):
            add(self.index.group[s : s + _STEP], 1)
        if exclude is not None and len(exclude):
            known, pos = self.index.positions(np.unique(np.asarray(exclude, dtype=np.int64)))
            add(self.index.group[pos], -1)
        return {g: c for g, c in sorted(counts.items()) if c > 0}

    def take(self, row_ids: np.ndarray, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Rows with these ids, in the order given; feature columns as ``[n, K]`` arrays."""
        ids = np.asarray(row_ids, dtype=np.int64)
        unknown = ids[~self.is_known(ids)]
        if len(unknown):
            raise PoolError(f"{self.name}: unknown row_id(s) {unknown[:20].tolist()}")
        cols = list(columns or self.schema.names)
        if S.ROW_ID not in cols:
            cols.append(S.ROW_ID)
        table = self._dataset.to_table(
            columns=cols, filter=pc.field(S.ROW_ID).isin(pa.array(ids))
        )
        got = table.column(S.ROW_ID).to_numpy()
        order = np.argsort(got)
        pos = order[np.searchsorted(got, ids, sorter=order)]
        out = {c: S.column_to_numpy(table.column(c))[pos] for c in cols}
        self._check_finite(out)
        return self._image_refs(out)

    def read_all(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every row (for small sets such as the test set), in file order."""
        cols = list(columns or self.schema.names)
        table = self._dataset.to_table(columns=cols)
        out = {c: S.column_to_numpy(table.column(c)) for c in cols}
        self._check_finite(out)
        return self._image_refs(out)

    def _image_refs(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``uri`` column as :class:`~rayfal.data.images.ImageRefs` carrying the rows'
        ids, so whoever decodes them (a Train worker) names the rows of unreadable files."""
        if S.URI in out and S.ROW_ID in out and self.feature_column == S.URI:
            from rayfal.data.images import ImageRefs

            out[S.URI] = ImageRefs(out[S.URI], out[S.ROW_ID])
        return out

    def _check_finite(self, out: dict[str, np.ndarray]) -> None:
        x = out.get(S.FEATURES)
        if x is not None and x.dtype.kind == "f":
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                ids = out[S.ROW_ID][bad][:20].tolist() if S.ROW_ID in out else "?"
                raise PoolError(f"{self.name}: NaN/inf features in row_id(s) {ids}")
