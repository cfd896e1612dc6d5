"""Reading a file of labels given by people, checked against the batch it answers.

Every problem is collected and reported at once in one :class:`LabelFileError` naming the file,
the row numbers (CSV: file lines, header = line 1; Parquet: row positions from 1) and the row
ids; a file with any problem is rejected whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_SHOWN = 10


class LabelFileError(ValueError):
    """A label file that cannot be imported; the message names the file, rows and ids."""


@dataclass(frozen=True)
class LabelRows:
    """The labels of a valid file: ``row_id`` and ``label`` (int64), in file order."""

    row_id: np.ndarray
    label: np.ndarray


def _read(path: Path) -> tuple[pd.DataFrame, int]:
    """The file's table and the offset from a table position to the row number shown."""
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path), 1
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path, dtype=str, keep_default_na=False), 2
    except Exception as exc:  # noqa: BLE001  (any parse failure is the file's problem)
        raise LabelFileError(f"{path}: not a readable {suffix[1:]} file: {exc}") from None
    raise LabelFileError(f"{path}: unknown format '{suffix}' (use .csv or .parquet)")


def _where(rows: np.ndarray, ids: list | None = None, what: str = "rows") -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_SHOWN])
    more = f" (and {len(rows) - _SHOWN} more)" if len(rows) > _SHOWN else ""
    out = f"{what} {shown}{more}"
    if ids is not None:
        out += f" (row_id {', '.join(str(i) for i in ids[:_SHOWN])})"
    return out


def _as_ints(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(ints, ok)``: integer values (0 where not parseable) and which cells parsed."""
    text = values.astype(str).str.strip()
    num = pd.to_numeric(text.where(text != ""), errors="coerce")
    ok = num.notna().to_numpy() & np.isfinite(num.fillna(0).to_numpy(np.float64))
    vals = num.fillna(0).to_numpy(np.float64)
    ok &= vals == np.round(vals)
    return vals.astype(np.int64), ok


def read_label_file(path: str | Path, *, batch_ids: np.ndarray, num_classes: int,
                    expected: dict[str, object] | None = None,
                    in_pool: Callable[[np.ndarray], np.ndarray] | None = None) -> LabelRows:
    """The labels of ``path`` (CSV or Parquet with columns ``row_id`` and ``label``) for the
    batch ``batch_ids``; a partial answer (a subset of the batch) is allowed.

    Checked (all problems reported together): the columns exist; ``expected`` columns
    (``campaign``, ``seed``, ``round``) match where the file has them (a file written for
    another round or campaign); row ids are integers, unique, and in the batch (ids that are
    not even in the pool, by ``in_pool``, are said so); labels are present and integers in
    ``[0, num_classes)``.
    """
    path = Path(path)
    df, offset = _read(path)
    missing = [c for c in ("row_id", "label") if c not in df.columns]
    if missing:
        raise LabelFileError(f"{path}: missing column(s) {missing}; columns are "
                             f"{list(df.columns)}")
    problems: list[str] = []
    for key, want in (expected or {}).items():
        if key in df.columns and len(df):
            got = sorted(set(df[key].astype(str).str.strip()))
            if got != [str(want)]:
                problems.append(f"column '{key}' is {', '.join(got)} but the campaign waits for "
                                f"{key} {want} (a file for another {key}?)")
    shown_rows = np.arange(len(df)) + offset
    ids, ids_ok = _as_ints(df["row_id"])
    if not ids_ok.all():
        problems.append(f"row_id is not an integer in {_where(shown_rows[~ids_ok])}")
    raw_label = df["label"].astype(str).str.strip()
    empty = (raw_label == "").to_numpy() | df["label"].isna().to_numpy()
    labels, lab_ok = _as_ints(df["label"])
    if empty.any():
        problems.append(f"empty label in {_where(shown_rows[empty], ids[empty].tolist())}")
    bad_type = ~lab_ok & ~empty
    if bad_type.any():
        vals = raw_label[bad_type].tolist()[:_SHOWN]
        problems.append(f"label is not an integer class id in "
                        f"{_where(shown_rows[bad_type], ids[bad_type].tolist())}: {vals}")
    out_of_range = lab_ok & ((labels < 0) | (labels >= num_classes))
    if out_of_range.any():
        problems.append(f"label outside the known classes 0..{num_classes - 1} in "
                        f"{_where(shown_rows[out_of_range], ids[out_of_range].tolist())}: "
                        f"{labels[out_of_range][:_SHOWN].tolist()}")
    valid = ids_ok
    uniq, first, counts = np.unique(ids[valid], return_index=True, return_counts=True)
    dup_ids = uniq[counts > 1]
    if len(dup_ids):
        dup_rows = shown_rows[valid][np.isin(ids[valid], dup_ids)]
        problems.append(f"duplicate row_id {dup_ids[:_SHOWN].tolist()} in {_where(dup_rows)}")
    batch = np.asarray(batch_ids, np.int64)
    outside = valid & ~np.isin(ids, batch)
    if outside.any():
        bad = ids[outside]
        note = ""
        if in_pool is not None:
            unknown = bad[~np.asarray(in_pool(bad), bool)]
            if len(unknown):
                note = f"; not in the pool at all: {unknown[:_SHOWN].tolist()}"
        problems.append(f"row_id not in the batch waiting for labels in "
                        f"{_where(shown_rows[outside], bad.tolist())}{note}")
    if problems:
        raise LabelFileError(f"{path}: " + "; ".join(problems) + "; nothing imported")
    return LabelRows(ids.astype(np.int64), labels.astype(np.int64))
