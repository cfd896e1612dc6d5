"""Tests of the durable label ledger (rayfal.data.ledger)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rayfal
from rayfal.data.ledger import (
    SCHEMA_VERSION,
    LabelConflictError,
    LabelLedger,
    LedgerError,
    NotLabelledError,
    UnknownRowError,
)


@pytest.fixture
def ledger(tmp_path: Path) -> LabelLedger:
    with LabelLedger(tmp_path / "ledger.db") as led:
        yield led


def _frame(led: LabelLedger) -> pd.DataFrame:
    return led.to_frame().reset_index(drop=True)


def test_empty_ledger(ledger: LabelLedger) -> None:
    assert len(ledger) == 0
    assert ledger.last_round() is None
    assert ledger.count_by_round() == {}
    ids = ledger.labelled_row_ids()
    assert ids.dtype == np.int64 and ids.size == 0
    frame = ledger.to_frame()
    assert list(frame.columns) == ["row_id", "label", "round", "group", "source", "committed_at",
                                   "annotator"]
    assert len(frame) == 0
    assert ledger.commit([], [], round=0) == 0


def test_commit_and_read_back(ledger: LabelLedger) -> None:
    assert ledger.commit([30, 10, 20], [3, 1, 2], round=0, groups=[1, 0, 1]) == 3
    assert ledger.commit(np.array([5, 40]), np.array([0, 4]), round=1, source="human") == 2

    ids = ledger.labelled_row_ids()
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [5, 10, 20, 30, 40])
    np.testing.assert_array_equal(ledger.label_of([40, 10, 10, 5]), [4, 1, 1, 0])
    assert ledger.label_of([40]).dtype == np.int64
    assert len(ledger) == 5
    assert ledger.last_round() == 1
    assert ledger.count_by_round() == {0: 3, 1: 2}

    frame = ledger.to_frame()
    assert list(frame.columns) == ["row_id", "label", "round", "group", "source", "committed_at",
                                   "annotator"]
    assert frame["row_id"].tolist() == [5, 10, 20, 30, 40]
    assert frame["label"].tolist() == [0, 1, 2, 3, 4]
    assert frame["round"].tolist() == [1, 0, 0, 0, 1]
    assert frame["group"].tolist() == [pd.NA, 0, 1, 1, pd.NA]
    assert frame["source"].tolist() == ["human", "oracle", "oracle", "oracle", "human"]
    assert frame["committed_at"].notna().all()


def test_float_ids_with_integral_values_are_accepted(ledger: LabelLedger) -> None:
    assert ledger.commit(np.array([1.0, 2.0]), [0, 1], round=0) == 2
    np.testing.assert_array_equal(ledger.labelled_row_ids(), [1, 2])


def test_recommit_same_labels_is_idempotent(ledger: LabelLedger) -> None:
    ledger.commit([1, 2, 3], [0, 1, 0], round=0, groups=[0, 0, 1])
    before = _frame(ledger)

    # Same labels in a later round: nothing new, nothing rewritten (original round kept).
    assert ledger.commit([3, 1, 2], [0, 0, 1], round=5, groups=[1, 0, 0], source="again") == 0
    pd.testing.assert_frame_equal(_frame(ledger), before)
    assert ledger.last_round() == 0

    # A batch mixing old (same label) and new rows only adds the new ones.
    assert ledger.commit([2, 4, 1, 5], [1, 1, 0, 0], round=2) == 2
    frame = _frame(ledger).set_index("row_id")
    assert frame.loc[[1, 2, 3], "round"].tolist() == [0, 0, 0]
    assert frame.loc[[4, 5], "round"].tolist() == [2, 2]
    assert ledger.count_by_round() == {0: 3, 2: 2}


def test_conflict_with_existing_label_raises_and_writes_nothing(ledger: LabelLedger) -> None:
    ledger.commit([1, 2, 3], [0, 1, 0], round=0)
    before = _frame(ledger)

    # New rows 10 and 11 plus one conflict (row 2: 1 -> 7): none of it may land.
    with pytest.raises(LabelConflictError) as info:
        ledger.commit([10, 2, 11, 3], [1, 7, 1, 0], round=1)
    msg = str(info.value)
    assert "2: 1 -> 7" in msg
    assert "(1 row)" in msg
    assert str(ledger.path) in msg
    np.testing.assert_array_equal(info.value.row_ids, [2])
    np.testing.assert_array_equal(info.value.old_labels, [1])
    np.testing.assert_array_equal(info.value.new_labels, [7])
    assert isinstance(info.value, LedgerError) and isinstance(info.value, ValueError)

    pd.testing.assert_frame_equal(_frame(ledger), before)
    assert ledger.count_by_round() == {0: 3}
    # The ledger stays usable after a rejected commit.
    assert ledger.commit([10, 11], [1, 1], round=1) == 2


def test_conflict_message_lists_first_20_and_count(ledger: LabelLedger) -> None:
    ids = np.arange(100, 125)
    ledger.commit(ids, np.zeros(25, dtype=int), round=0)
    with pytest.raises(LabelConflictError) as info:
        ledger.commit(ids, np.ones(25, dtype=int), round=1)
    msg = str(info.value)
    assert "(25 rows)" in msg
    assert "119: 0 -> 1" in msg  # the 20th
    assert "120: 0 -> 1" not in msg  # the 21st is only counted
    assert len(info.value.row_ids) == 25


def test_unknown_row_ids_raise_naming_them(tmp_path: Path) -> None:
    calls: list[np.ndarray] = []

    def is_known(row_ids: np.ndarray) -> np.ndarray:
        calls.append(row_ids)
        return row_ids < 100

    with LabelLedger(tmp_path / "l.db", is_known=is_known) as led:
        assert led.commit([1, 2], [0, 1], round=0) == 2
        with pytest.raises(UnknownRowError) as info:
            led.commit([5, 150, 7, 200], [1, 1, 1, 1], round=1)
        msg = str(info.value)
        assert "150" in msg and "200" in msg and "(2 rows)" in msg
        assert "[150, 200]" in msg  # only the unknown ids are named
        assert str(led.path) in msg
        np.testing.assert_array_equal(info.value.row_ids, [150, 200])
        # Nothing written, not even the known rows of the batch.
        np.testing.assert_array_equal(led.labelled_row_ids(), [1, 2])
        assert calls and all(c.dtype == np.int64 for c in calls)


def test_unknown_row_message_truncates(tmp_path: Path) -> None:
    with LabelLedger(tmp_path / "l.db", is_known=lambda ids: ids < 0) as led:
        with pytest.raises(UnknownRowError) as info:
            led.commit(np.arange(30), np.zeros(30, dtype=int), round=0)
        msg = str(info.value)
        assert "(30 rows)" in msg and "19" in msg and ", 20" not in msg
        assert len(led) == 0


def test_is_known_bad_return_is_rejected(tmp_path: Path) -> None:
    with LabelLedger(tmp_path / "l.db", is_known=lambda ids: np.ones(1, dtype=bool)) as led:
        with pytest.raises(LedgerError, match="is_known"):
            led.commit([1, 2], [0, 0], round=0)
        assert len(led) == 0


def test_in_batch_duplicates(ledger: LabelLedger) -> None:
    with pytest.raises(LabelConflictError) as info:
        ledger.commit([4, 1, 2, 1, 3], [0, 5, 0, 6, 0], round=0)
    msg = str(info.value)
    assert "1: 5 -> 6" in msg and "(1 row)" in msg
    np.testing.assert_array_equal(info.value.row_ids, [1])
    assert len(ledger) == 0

    # Duplicates with the same label are fine and count once.
    assert ledger.commit([4, 1, 2, 1, 4], [0, 5, 0, 5, 0], round=0) == 3
    np.testing.assert_array_equal(ledger.label_of([1, 2, 4]), [5, 0, 0])


@pytest.mark.parametrize(
    ("row_ids", "labels", "match"),
    [
        ([1, 2, 3], [0, 1], "3 row_ids but 2 labels"),
        ([1.0, np.nan], [0, 1], "NaN"),
        ([1, 2], [0.0, np.nan], "NaN"),
        ([1.5, 2.0], [0, 1], "integers"),
        (["a", "b"], [0, 1], "integers"),
        ([[1, 2]], [[0, 1]], "1-D"),
        ([True, False], [0, 1], "booleans"),
    ],
)
def test_invalid_batches_are_rejected(
    ledger: LabelLedger, row_ids: list, labels: list, match: str
) -> None:
    ledger.commit([100], [1], round=0)
    with pytest.raises(LedgerError, match=match):
        ledger.commit(row_ids, labels, round=1)
    np.testing.assert_array_equal(ledger.labelled_row_ids(), [100])


def test_invalid_round_groups_source(ledger: LabelLedger) -> None:
    with pytest.raises(LedgerError, match="round"):
        ledger.commit([1], [0], round=-1)
    with pytest.raises(LedgerError, match="round"):
        ledger.commit([1], [0], round=1.5)  # type: ignore[arg-type]
    with pytest.raises(LedgerError, match="groups"):
        ledger.commit([1, 2], [0, 0], round=0, groups=[1])
    with pytest.raises(LedgerError, match="source"):
        ledger.commit([1], [0], round=0, source=3)  # type: ignore[arg-type]
    assert len(ledger) == 0
    assert ledger.commit([1], [0], round=np.int64(2)) == 1


def test_label_of_unlabelled_raises_naming_ids(ledger: LabelLedger) -> None:
    ledger.commit([1, 2], [0, 1], round=0)
    with pytest.raises(NotLabelledError) as info:
        ledger.label_of([2, 9, 1, 8, 9])
    assert isinstance(info.value, KeyError) and isinstance(info.value, LedgerError)
    msg = str(info.value)
    assert "[8, 9]" in msg and "(2 rows)" in msg and str(ledger.path) in msg
    assert not msg.startswith("'")  # not KeyError's quoted repr
    np.testing.assert_array_equal(info.value.row_ids, [8, 9])
    assert ledger.label_of([]).size == 0


def test_reopen_persists_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there" / "ledger.db"
    with LabelLedger(path) as led:
        led.commit([3, 1], [1, 0], round=0, groups=[2, 2])
        led.commit([2], [1], round=1, source="human")
        before = _frame(led)
    assert path.exists()
    with pytest.raises(LedgerError, match="closed"):
        len(led)

    with LabelLedger(path) as again:
        pd.testing.assert_frame_equal(_frame(again), before)
        assert again.last_round() == 1
        assert again.commit([1, 2, 3], [0, 1, 1], round=7) == 0
        pd.testing.assert_frame_equal(_frame(again), before)

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(labels)")]
        assert cols == ["row_id", "label", "round", "grp", "source", "committed_at", "annotator"]
    finally:
        conn.close()


def test_synchronous_full(ledger: LabelLedger) -> None:
    # 2 == FULL; the pragma is per connection, so check the ledger's own.
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_schema_version_mismatch_and_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    LabelLedger(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 999"):
        LabelLedger(path)

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(LedgerError, match=str(junk).replace("\\", "\\\\")):
        LabelLedger(junk)


def test_two_instances_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with LabelLedger(path) as a, LabelLedger(path) as b:
        a.commit([1], [0], round=0)
        with pytest.raises(LabelConflictError):
            b.commit([1], [1], round=1)
        assert b.commit([1, 2], [0, 0], round=1) == 1
        assert a.count_by_round() == {0: 1, 1: 1}


def test_large_commit_100k(ledger: LabelLedger) -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(1_000_000)[:100_000].astype(np.int64)
    labels = rng.integers(0, 10, size=ids.size)
    groups = rng.integers(0, 3, size=ids.size)
    assert ledger.commit(ids, labels, round=0, groups=groups) == 100_000
    assert len(ledger) == 100_000
    np.testing.assert_array_equal(ledger.labelled_row_ids(), np.sort(ids))
    np.testing.assert_array_equal(ledger.label_of(ids), labels)  # > 900 ids: chunked lookup
    frame = ledger.to_frame().set_index("row_id").loc[ids]
    np.testing.assert_array_equal(frame["group"].to_numpy(dtype=np.int64), groups)

    # Idempotent re-commit of all of it, then one conflict at the very end: nothing written.
    assert ledger.commit(ids[::-1], labels[::-1], round=1) == 0
    new = np.arange(2_000_000, 2_100_000)
    bad_ids = np.concatenate([new, ids[-1:]])
    bad_labels = np.concatenate([np.zeros(new.size, dtype=int), labels[-1:] + 1])
    with pytest.raises(LabelConflictError, match=f"{ids[-1]}: {labels[-1]} -> {labels[-1] + 1}"):
        ledger.commit(bad_ids, bad_labels, round=1)
    assert len(ledger) == 100_000
    assert ledger.count_by_round() == {0: 100_000}


# ---------------------------------------------------------------------- crash safety

_BATCH = 200_000  # rows per round: a commit takes long enough to be killed mid-way

_CHILD = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from rayfal.data.ledger import LabelLedger

    path, batch = sys.argv[1], int(sys.argv[2])
    led = LabelLedger(path)
    r = 0
    while True:
        ids = np.arange(r * batch, (r + 1) * batch)
        print(f"BEGIN {r}", flush=True)
        t0 = time.perf_counter()
        led.commit(ids, ids % 7, round=r, groups=ids % 3)
        print(f"DONE {r} {time.perf_counter() - t0:.6f}", flush=True)
        r += 1
    """
)


def _holds_write_lock(path: Path) -> bool:
    """Whether another connection holds the ledger's write lock, i.e. is inside a write
    transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``): our own ``BEGIN IMMEDIATE`` is refused."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


def _kill_inside_transaction(proc: subprocess.Popen, path: Path, deadline_s: float = 60.0) -> int:
    """Freeze the child (SIGSTOP), and SIGKILL it only if it is frozen inside a write
    transaction; otherwise let it run a few ms more and try again. Returns the attempts."""
    t_end = time.monotonic() + deadline_s
    attempts = 0
    while time.monotonic() < t_end:
        attempts += 1
        os.kill(proc.pid, signal.SIGSTOP)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once the child is stopped
        assert os.WIFSTOPPED(status), status
        if _holds_write_lock(path):
            os.kill(proc.pid, signal.SIGKILL)  # lands while the transaction is open
            return attempts
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.003)
    pytest.fail("never caught the child inside a write transaction")


def _run_and_kill(path: Path, fraction: float) -> list[str]:
    """Run the committing child; SIGKILL it ``fraction`` of a commit's duration into round 1,
    at the first moment from then on when it is inside the commit's write transaction (checked
    with the child frozen, so the kill lands inside the transaction).

    Round 0 calibrates how long one commit of ``_BATCH`` rows takes on this machine.
    """
    env = dict(os.environ)
    root = str(Path(rayfal.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(_BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("BEGIN 1"):
                break
        else:
            pytest.fail(f"child exited early ({proc.wait()}): {proc.stderr.read()}")
        duration = float(lines[-2].split()[2])  # "DONE 0 <seconds>"
        time.sleep(fraction * duration)
        _kill_inside_transaction(proc, path)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return lines + [s.strip() for s in out.splitlines()]


def _assert_whole_rounds(path: Path, lines: list[str]) -> int:
    """The reopened ledger holds whole rounds 0..m and nothing partial; return m."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()

    done = max(int(s.split()[1]) for s in lines if s.startswith("DONE"))
    with LabelLedger(path) as led:
        counts = led.count_by_round()
        m = max(counts)
        # Whole rounds only: never a partial batch.
        assert counts == {r: _BATCH for r in range(m + 1)}
        # Everything reported committed is there; at most the in-flight round on top.
        assert done <= m <= done + 1
        ids = led.labelled_row_ids()
        np.testing.assert_array_equal(ids, np.arange((m + 1) * _BATCH))
        np.testing.assert_array_equal(led.label_of(ids), ids % 7)
        # And the ledger is writable again.
        assert led.commit([ids[-1] + 1], [0], round=m + 1) == 1
    return m


@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.7, 0.95])
def test_sigkill_mid_commit_leaves_old_or_new_state(tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "ledger.db"
    lines = _run_and_kill(path, fraction)
    _assert_whole_rounds(path, lines)


# ---------------------------------------------------------------- people's labels, identity


def test_annotations_keep_provenance_and_are_idempotent(tmp_path: Path) -> None:
    led = LabelLedger(tmp_path / "l.sqlite")
    assert led.add_annotations([5, 7], [1, 0], annotator="ann", round=1, file="a.csv") == 2
    assert led.add_annotations([5, 7], [1, 0], annotator="ann", round=1, file="a.csv") == 0
    df = led.annotations_frame()
    assert df[["row_id", "annotator", "label", "round", "file"]].values.tolist() == [
        [5, "ann", 1, 1, "a.csv"], [7, "ann", 0, 1, "a.csv"]]
    ids, labs, ties = led.resolved_annotations([5, 7, 9])
    assert ids.tolist() == [5, 7] and labs.tolist() == [1, 0] and ties == []


def test_two_annotators_disagreeing_is_an_error_naming_both(tmp_path: Path) -> None:
    led = LabelLedger(tmp_path / "l.sqlite")
    led.add_annotations([5, 6], [1, 1], annotator="alice", round=1)
    with pytest.raises(LabelConflictError, match="5: 0 by bob, 1 by alice"):
        led.add_annotations([6, 5], [1, 0], annotator="bob", round=1)
    assert len(led.annotations_frame()) == 2  # nothing from bob's batch
    with pytest.raises(LabelConflictError, match="alice gave 1 before, now 0"):
        led.add_annotations([5], [0], annotator="alice", round=1)


def test_majority_aggregation_reports_ties(tmp_path: Path) -> None:
    led = LabelLedger(tmp_path / "l.sqlite")
    for who, labs in (("a", [1, 1]), ("b", [1, 0]), ("c", [0, 2])):
        led.add_annotations([5, 6], labs, annotator=who, round=1, aggregation="majority")
    ids, labs, ties = led.resolved_annotations([5, 6])
    assert ids.tolist() == [5] and labs.tolist() == [1] and ties == [6]


def test_annotation_against_committed_label_is_refused(tmp_path: Path) -> None:
    led = LabelLedger(tmp_path / "l.sqlite")
    led.commit([5], [1], round=0, source="human", annotator="alice")
    assert led.to_frame()["annotator"].tolist() == ["alice"]
    with pytest.raises(LabelConflictError, match="5: 0 by bob, but 1 by alice is in the ledger"):
        led.add_annotations([5], [0], annotator="bob", round=1)


def test_identity_is_bound_once_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ident = {"job": "abc", "campaign": "bald", "seed": "0", "pool": "p1"}
    LabelLedger(path).bind_identity(ident)
    led = LabelLedger(path)
    led.bind_identity(ident)  # same: fine
    assert led.identity() == ident
    with pytest.raises(LedgerError, match="belongs to another campaign .campaign: 'bald' here, "
                                          "'random' expected"):
        led.bind_identity({**ident, "campaign": "random"})


def test_version_1_ledger_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE labels (row_id INTEGER PRIMARY KEY, label INTEGER NOT NULL, "
        "round INTEGER NOT NULL, grp INTEGER, source TEXT, committed_at TEXT);"
        "INSERT INTO labels VALUES (3, 1, 0, 0, 'initial', '2026-01-01');")
    conn.commit()
    conn.close()
    led = LabelLedger(path)
    frame = led.to_frame()
    assert frame["row_id"].tolist() == [3] and frame["annotator"].isna().all()
    led.commit([4], [0], round=1, annotator="x")
    assert LabelLedger(path).to_frame()["annotator"].tolist()[1] == "x"
