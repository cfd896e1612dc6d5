"""The durable label ledger: which pool row got which label in which round.

The ledger is the single source of truth for labels acquired during active learning. It is a
SQLite database (WAL journal, ``synchronous=FULL``) with one row per labelled pool row::

    labels(row_id INTEGER PRIMARY KEY, label INTEGER NOT NULL, round INTEGER NOT NULL,
           grp INTEGER, source TEXT, committed_at TEXT, annotator TEXT)

and, for labels given by people, every annotation as it was imported (provenance; several
annotators may label one row, see :meth:`LabelLedger.add_annotations`)::

    annotations(row_id, annotator, label, round, source, file, imported_at)
                PRIMARY KEY (row_id, annotator)

Every :meth:`LabelLedger.commit` is all-or-nothing in a single transaction: a batch either
lands entirely or not at all, even if the process is killed mid-commit. Re-committing a row with
the same label is a no-op (the original round is kept); a different label is a conflict.

``meta`` also holds the ledger's identity (:meth:`LabelLedger.bind_identity`: the job's hash,
the campaign, the seed and the pool's fingerprint), so a ledger is never used by another
campaign. Ledgers of schema version 1 are upgraded in place when opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "LabelConflictError",
    "LabelLedger",
    "LedgerError",
    "NotLabelledError",
    "UnknownRowError",
]

SCHEMA_VERSION = 2
_MAX_SHOWN = 20  # ids named in an error message
_CHUNK = 900  # max bound parameters per IN (...) query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    row_id INTEGER PRIMARY KEY,
    label INTEGER NOT NULL,
    round INTEGER NOT NULL,
    grp INTEGER,
    source TEXT,
    committed_at TEXT
);
CREATE INDEX IF NOT EXISTS labels_round ON labels(round);
CREATE TABLE IF NOT EXISTS annotations (
    row_id INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    label INTEGER NOT NULL,
    round INTEGER NOT NULL,
    source TEXT NOT NULL,
    file TEXT,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (row_id, annotator)
);
"""

_MIGRATE_1_TO_2 = "ALTER TABLE labels ADD COLUMN annotator TEXT"


class LedgerError(ValueError):
    """Base class of label-ledger errors."""


class LabelConflictError(LedgerError):
    """A row would get a label different from the one it already has (or has in the batch)."""

    def __init__(
        self, message: str, row_ids: np.ndarray, old_labels: np.ndarray, new_labels: np.ndarray
    ) -> None:
        super().__init__(message)
        self.row_ids = row_ids
        self.old_labels = old_labels
        self.new_labels = new_labels


class UnknownRowError(LedgerError):
    """Row ids that the pool does not know."""

    def __init__(self, message: str, row_ids: np.ndarray) -> None:
        super().__init__(message)
        self.row_ids = row_ids


class NotLabelledError(LedgerError, KeyError):
    """Row ids looked up in the ledger that have no label yet."""

    __str__ = BaseException.__str__  # not KeyError's quoted repr

    def __init__(self, message: str, row_ids: np.ndarray) -> None:
        super().__init__(message)
        self.row_ids = row_ids


def _fmt_ids(ids: np.ndarray) -> str:
    """``[1, 2, 3] (3 rows)``, showing at most the first ``_MAX_SHOWN`` ids."""
    shown = ", ".join(str(int(i)) for i in ids[:_MAX_SHOWN])
    more = ", ..." if len(ids) > _MAX_SHOWN else ""
    return f"[{shown}{more}] ({len(ids)} row{'s' if len(ids) != 1 else ''})"


def _fmt_conflicts(ids: np.ndarray, old: np.ndarray, new: np.ndarray) -> str:
    """``row 3: 1 -> 2, ...`` for the first ``_MAX_SHOWN`` conflicts, and the count."""
    parts = [f"{int(r)}: {int(o)} -> {int(n)}" for r, o, n in zip(ids, old, new, strict=False)]
    shown = parts[:_MAX_SHOWN]
    more = ", ..." if len(parts) > _MAX_SHOWN else ""
    return f"[{', '.join(shown)}{more}] ({len(parts)} row{'s' if len(parts) != 1 else ''})"


def _as_int64(values: Any, name: str, where: str) -> np.ndarray:
    """Validate a 1-D int-like sequence (ints, or floats with integral values) as int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise LedgerError(f"{where}: {name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == object:
        try:
            arr = np.asarray(arr.tolist(), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"{where}: {name} must be integers ({exc})") from None
    if arr.dtype.kind == "b":
        raise LedgerError(f"{where}: {name} must be integers, got booleans")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise LedgerError(f"{where}: {name} exceed the int64 range")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise LedgerError(
                f"{where}: {name} contain NaN/inf at positions {_fmt_ids(np.flatnonzero(bad))}"
            )
        if (arr != np.round(arr)).any() or np.abs(arr).max() >= 2.0**63:
            raise LedgerError(f"{where}: {name} must be integers, got non-integral floats")
        return arr.astype(np.int64)
    raise LedgerError(f"{where}: {name} must be integers, got dtype {arr.dtype}")


class LabelLedger:
    """Durable, append-only record of acquired labels, backed by one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        is_known: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Open (or create, with parent directories) the ledger at ``path``.

        ``is_known(row_ids) -> bool mask`` optionally restricts commits to known pool rows.
        """
        self.path = Path(path)
        self._is_known = is_known
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"ledger {self.path}: cannot open ({exc})") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"ledger {self.path}: cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            columns = {r[1] for r in conn.execute("PRAGMA table_info(labels)")}
            if "annotator" not in columns:  # new (columns come from _SCHEMA) or version 1
                conn.execute(_MIGRATE_1_TO_2)
            if row is None or row[0] == "1":
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                conn.execute("ROLLBACK")
                raise LedgerError(
                    f"ledger {self.path}: schema version {row[0]}, expected {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _batch "
                "(row_id INTEGER PRIMARY KEY, label INTEGER NOT NULL, grp INTEGER, "
                "annotator TEXT)"
            )
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"ledger {self.path}: not a usable label ledger ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ------------------------------------------------------------------ helpers
    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"ledger {self.path}: already closed")
        return self._conn

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{len(self)} labels"
        return f"LabelLedger({str(self.path)!r}, {state})"

    # ------------------------------------------------------------------ writes
    def commit(
        self,
        row_ids: Any,
        labels: Any,
        *,
        round: int,
        groups: Any = None,
        source: str = "oracle",
        annotator: str | Any | None = None,
    ) -> int:
        """Record ``labels`` for ``row_ids`` acquired in ``round``, atomically.

        Rows already present with the same label are skipped (their original round is kept);
        a different label raises :class:`LabelConflictError` and nothing is written. Returns
        the number of newly added rows.
        """
        where = f"ledger {self.path}"
        if isinstance(round, bool) or not isinstance(round, int | np.integer) or round < 0:
            raise LedgerError(f"{where}: round must be a non-negative int, got {round!r}")
        if not isinstance(source, str):
            raise LedgerError(f"{where}: source must be a str, got {type(source).__name__}")
        ids = _as_int64(row_ids, "row_ids", where)
        labs = _as_int64(labels, "labels", where)
        if len(ids) != len(labs):
            raise LedgerError(f"{where}: {len(ids)} row_ids but {len(labs)} labels")
        grps = None if groups is None else _as_int64(groups, "groups", where)
        if grps is not None and len(grps) != len(ids):
            raise LedgerError(f"{where}: {len(ids)} row_ids but {len(grps)} groups")
        if annotator is None or isinstance(annotator, str):
            who = np.full(len(ids), annotator, dtype=object)
        else:  # one annotator (or None) per row
            who = np.asarray(list(annotator), dtype=object)
            if len(who) != len(ids):
                raise LedgerError(f"{where}: {len(ids)} row_ids but {len(who)} annotators")
        db = self._db
        if len(ids) == 0:
            return 0

        # In-batch duplicates: same label is fine (first occurrence wins), different is not.
        order = np.argsort(ids, kind="stable")
        s_ids, s_labs = ids[order], labs[order]
        dup = s_ids[1:] == s_ids[:-1]
        clash = dup & (s_labs[1:] != s_labs[:-1])
        if clash.any():
            pos = np.flatnonzero(clash)
            c_ids, first = np.unique(s_ids[pos + 1], return_index=True)
            old, new = s_labs[pos][first], s_labs[pos + 1][first]
            raise LabelConflictError(
                f"{where}: the batch gives different labels to the same row_ids "
                f"(row_id: label -> other label) {_fmt_conflicts(c_ids, old, new)}",
                c_ids,
                old,
                new,
            )
        keep = np.concatenate([[True], ~dup])
        u_ids, u_labs = s_ids[keep], s_labs[keep]
        u_grps = None if grps is None else grps[order][keep]
        u_who = who[order][keep]

        if self._is_known is not None:
            known = np.asarray(self._is_known(u_ids))
            if known.shape != u_ids.shape or known.dtype.kind != "b":
                raise LedgerError(
                    f"{where}: is_known must return a bool mask of shape {u_ids.shape}, "
                    f"got {known.dtype} {known.shape}"
                )
            if not known.all():
                bad = u_ids[~known]
                raise UnknownRowError(
                    f"{where}: row_ids not in the pool {_fmt_ids(bad)}; nothing committed", bad
                )

        rows = zip(
            u_ids.tolist(),
            u_labs.tolist(),
            [None] * len(u_ids) if u_grps is None else u_grps.tolist(),
            u_who.tolist(),
            strict=True,
        )
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM _batch")
                db.executemany("INSERT INTO _batch(row_id, label, grp, annotator) "
                               "VALUES (?, ?, ?, ?)", rows)
                conflicts = db.execute(
                    "SELECT b.row_id, l.label, b.label FROM _batch b "
                    "JOIN labels l ON l.row_id = b.row_id "
                    "WHERE l.label <> b.label ORDER BY b.row_id"
                ).fetchall()
                if conflicts:
                    arr = np.asarray(conflicts, dtype=np.int64)
                    raise LabelConflictError(
                        f"{where}: row_ids already labelled differently "
                        f"(row_id: old -> new) {_fmt_conflicts(arr[:, 0], arr[:, 1], arr[:, 2])}; "
                        "nothing committed",
                        arr[:, 0],
                        arr[:, 1],
                        arr[:, 2],
                    )
                cur = db.execute(
                    "INSERT INTO labels(row_id, label, round, grp, source, committed_at, "
                    "annotator) SELECT b.row_id, b.label, ?, b.grp, ?, ?, b.annotator "
                    "FROM _batch b "
                    "WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.row_id = b.row_id)",
                    (int(round), source, stamp),
                )
                added = cur.rowcount
                db.execute("DELETE FROM _batch")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerError(f"{where}: commit failed, nothing committed ({exc})") from exc
        return int(added)

    # ------------------------------------------------------------------ reads
    def labelled_row_ids(self) -> np.ndarray:
        """All labelled row ids, int64, sorted ascending."""
        rows = self._db.execute("SELECT row_id FROM labels ORDER BY row_id").fetchall()
        return np.fromiter((r for (r,) in rows), dtype=np.int64, count=len(rows))

    def to_frame(self) -> pd.DataFrame:
        """The ledger as a frame: row_id, label, round, group (nullable Int64), source,
        committed_at, annotator; sorted by row_id."""
        rows = self._db.execute(
            "SELECT row_id, label, round, grp, source, committed_at, annotator FROM labels "
            "ORDER BY row_id"
        ).fetchall()
        cols = list(zip(*rows, strict=True)) if rows else [()] * 7
        return pd.DataFrame(
            {
                "row_id": np.asarray(cols[0], dtype=np.int64),
                "label": np.asarray(cols[1], dtype=np.int64),
                "round": np.asarray(cols[2], dtype=np.int64),
                "group": pd.array(list(cols[3]), dtype="Int64"),
                "source": pd.Series(list(cols[4]), dtype=object),
                "committed_at": pd.Series(list(cols[5]), dtype=object),
                "annotator": pd.Series(list(cols[6]), dtype=object),
            }
        )

    # ------------------------------------------------------------------ annotations (people)
    def add_annotations(self, row_ids: Any, labels: Any, *, annotator: str, round: int,
                        source: str = "human", file: str | None = None,
                        aggregation: str = "none") -> int:
        """Record one annotator's labels for ``row_ids`` (in one transaction; returns the
        number of new annotations). The same annotator giving the same label again is a no-op.

        Refused, with nothing written (:class:`LabelConflictError` naming the ids, labels and
        annotators): the same annotator changing a label; a label that differs from the row's
        committed label; and, with ``aggregation="none"``, a label that differs from another
        annotator's (with ``"majority"`` disagreements are kept and resolved by
        :meth:`resolved_annotations`)."""
        where = f"ledger {self.path}"
        if not annotator or not isinstance(annotator, str):
            raise LedgerError(f"{where}: annotator must be a non-empty name")
        if aggregation not in ("none", "majority"):
            raise LedgerError(f"{where}: aggregation must be 'none' or 'majority'")
        ids = _as_int64(row_ids, "row_ids", where)
        labs = _as_int64(labels, "labels", where)
        if len(ids) != len(labs):
            raise LedgerError(f"{where}: {len(ids)} row_ids but {len(labs)} labels")
        if len(np.unique(ids)) != len(ids):
            raise LedgerError(f"{where}: repeated row_ids in one annotation batch")
        if len(ids) == 0:
            return 0
        db = self._db
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                problems: list[str] = []
                added = 0
                for rid, lab in zip(ids.tolist(), labs.tolist(), strict=True):
                    committed = db.execute("SELECT label, annotator, source FROM labels "
                                           "WHERE row_id = ?", (rid,)).fetchone()
                    if committed is not None and committed[0] != lab:
                        who = committed[1] or committed[2]
                        problems.append(f"{rid}: {lab} by {annotator}, but {committed[0]} by "
                                        f"{who} is in the ledger")
                        continue
                    others = db.execute("SELECT annotator, label FROM annotations WHERE "
                                        "row_id = ?", (rid,)).fetchall()
                    mine = [lb for a, lb in others if a == annotator]
                    if mine and mine[0] != lab:
                        problems.append(f"{rid}: {annotator} gave {mine[0]} before, now {lab}")
                        continue
                    if mine:
                        continue
                    clash = [(a, lb) for a, lb in others if lb != lab]
                    if clash and aggregation == "none":
                        a, lb = clash[0]
                        problems.append(f"{rid}: {lab} by {annotator}, {lb} by {a}")
                        continue
                    db.execute("INSERT INTO annotations(row_id, annotator, label, round, source, "
                               "file, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (rid, annotator, lab, int(round), source, file, stamp))
                    added += 1
                if problems:
                    shown = "; ".join(problems[:_MAX_SHOWN])
                    more = f" (and {len(problems) - _MAX_SHOWN} more)" \
                        if len(problems) > _MAX_SHOWN else ""
                    raise LabelConflictError(
                        f"{where}: conflicting labels (set oracle.aggregation: majority to "
                        f"resolve disagreements between annotators): {shown}{more}; nothing "
                        "committed", np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros(0, np.int64))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerError(f"{where}: annotation import failed, nothing committed ({exc})") \
                from exc
        return added

    def annotations_frame(self) -> pd.DataFrame:
        """Every annotation: row_id, annotator, label, round, source, file, imported_at."""
        rows = self._db.execute("SELECT row_id, annotator, label, round, source, file, "
                                "imported_at FROM annotations ORDER BY row_id, annotator"
                                ).fetchall()
        cols = ["row_id", "annotator", "label", "round", "source", "file", "imported_at"]
        df = pd.DataFrame(rows, columns=cols)
        return df.astype({"row_id": np.int64, "label": np.int64, "round": np.int64})

    def resolved_annotations(self, row_ids: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """``(row_id, label, ties)`` for the annotated rows among ``row_ids``: the label most
        annotators gave (all agree under aggregation ``none``); rows whose top labels tie are
        left out and listed in ``ties``."""
        ids = _as_int64(row_ids, "row_ids", f"ledger {self.path}")
        wanted = set(ids.tolist())
        votes: dict[int, dict[int, int]] = {}
        for rid, lab in self._db.execute("SELECT row_id, label FROM annotations"):
            if rid in wanted:
                votes.setdefault(rid, {}).setdefault(lab, 0)
                votes[rid][lab] += 1
        out_ids, out_labs, ties = [], [], []
        for rid in sorted(votes):
            counts = votes[rid]
            top = max(counts.values())
            best = [lab for lab, c in counts.items() if c == top]
            if len(best) > 1:
                ties.append(rid)
                continue
            out_ids.append(rid)
            out_labs.append(best[0])
        return (np.asarray(out_ids, np.int64), np.asarray(out_labs, np.int64), ties)

    # ------------------------------------------------------------------ identity
    def bind_identity(self, identity: dict[str, str]) -> None:
        """Record ``identity`` (e.g. job hash, campaign, seed, pool fingerprint) in a new
        ledger, or check it against the recorded one: a ledger of another campaign, job or
        pool raises :class:`LedgerError` naming the keys that differ."""
        db = self._db
        stored = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'identity.%'"))
        wanted = {f"identity.{k}": str(v) for k, v in identity.items()}
        if stored:
            diff = sorted(k.removeprefix("identity.") for k in set(stored) | set(wanted)
                          if stored.get(k) != wanted.get(k))
            if diff:
                detail = ", ".join(f"{k}: {stored.get('identity.' + k)!r} here, "
                                   f"{wanted.get('identity.' + k)!r} expected" for k in diff)
                raise LedgerError(f"ledger {self.path} belongs to another campaign ({detail}); "
                                  "use a new run directory")
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", wanted.items())
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def identity(self) -> dict[str, str]:
        """The recorded identity (empty for a ledger that has none yet)."""
        return {k.removeprefix("identity."): v for k, v in self._db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'identity.%'")}

    def label_of(self, row_ids: Any) -> np.ndarray:
        """Labels (int64) of ``row_ids``, in order; :class:`NotLabelledError` names any
        ids that are not in the ledger."""
        where = f"ledger {self.path}"
        ids = _as_int64(row_ids, "row_ids", where)
        uniq = np.unique(ids)
        found_ids: list[int] = []
        found_labs: list[int] = []
        db = self._db
        db.execute("BEGIN")  # one read snapshot across chunks
        try:
            for start in range(0, len(uniq), _CHUNK):
                chunk = uniq[start : start + _CHUNK].tolist()
                marks = ",".join("?" * len(chunk))
                for rid, lab in db.execute(
                    f"SELECT row_id, label FROM labels WHERE row_id IN ({marks})", chunk
                ):
                    found_ids.append(rid)
                    found_labs.append(lab)
        finally:
            db.execute("COMMIT")
        f_ids = np.asarray(found_ids, dtype=np.int64)
        f_labs = np.asarray(found_labs, dtype=np.int64)
        order = np.argsort(f_ids)
        f_ids, f_labs = f_ids[order], f_labs[order]
        if len(f_ids) != len(uniq):
            missing = np.setdiff1d(uniq, f_ids, assume_unique=True)
            raise NotLabelledError(f"{where}: row_ids not labelled {_fmt_ids(missing)}", missing)
        return f_labs[np.searchsorted(f_ids, ids)]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def last_round(self) -> int | None:
        """The highest round with a label, or None for an empty ledger."""
        value = self._db.execute("SELECT MAX(round) FROM labels").fetchone()[0]
        return None if value is None else int(value)

    def count_by_round(self) -> dict[int, int]:
        """Number of rows first labelled in each round, ascending by round."""
        rows = self._db.execute(
            "SELECT round, COUNT(*) FROM labels GROUP BY round ORDER BY round"
        ).fetchall()
        return {int(r): int(n) for r, n in rows}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LabelLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
