"""The run directory's guards: one process at a time, and no mixing of runs.

* :func:`run_dir_lock` — an exclusive lock file ``RUN_DIR/rayfal.lock`` (JSON: pid, host,
  start time, purpose), held by ``rayfal run`` / ``run --resume`` (:func:`holds_run_dir_lock`
  around :func:`~rayfal.campaign.driver.run_job`), ``rayfal tune`` and label imports. It is
  created atomically and also ``flock``-ed while held, so a process killed with ``-9`` leaves a
  lock that the next process on the same host recognises as stale (its pid is gone, or was
  reused by a later process) and takes over with a warning. A lock written on another host
  cannot be checked from here: the error names the host, pid and file, and says to remove the
  file once no rayfal process runs there any more.
* :func:`campaign_state` / :func:`check_campaign_state` — what a run directory holds besides
  its job file and data, and whether it belongs to a job (used by ``check_resume``).
* :func:`check_round_records` — each campaign's ``rounds/round_NNN.json`` are readable and
  consecutive (a missing middle record would make ``--resume`` repeat rounds).
* :func:`remove_stale_files` — temp files of writes interrupted by a kill, and Ray Train's
  leftover storage, removed under the lock on a new start.

Errors are :class:`RunDirError` (a :class:`~rayfal.config.ConfigError`): the CLI prints one
``rayfal: error:`` line and exits with code 2.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rayfal.config import ConfigError

log = logging.getLogger("rayfal")

LOCK_FILE = "rayfal.lock"
JOB_YAML = "job.yaml"
ROUNDS_CSV = "rounds.csv"
CAMPAIGNS = "campaigns"
DATA_DIR = "data"
RAY_TRAIN_DIR = "_ray_train"
#: where the driver caches the pool's row checks (:mod:`rayfal.data.validate`)
POOL_CHECKS = Path(DATA_DIR) / "pool-checks"

_RECORD = re.compile(r"round_(\d+)\.json")
_SEED_DIR = re.compile(r"seed_(-?\d+)")
_TEMP_FILE = re.compile(r"\..+\.tmp-(\d+)")  # rayfal.atomic / score_job temp files
_TEMP_DIR = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.TemporaryDirectory in a round dir

F = TypeVar("F", bound=Callable[..., Any])


class RunDirError(ConfigError):
    """A run directory cannot be used as asked (locked, holds another run, damaged); the
    message is one line naming the directory or file and what to do."""


# ----------------------------------------------------------------------------- the lock

_HELD: set[str] = set()  # lock files held by this process
_HELD_GUARD = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    except OSError:
        return False
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or ``None`` when unknown."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return float(psutil.Process(pid).create_time())
        except Exception:  # noqa: BLE001  (gone, or not allowed)
            return None
    try:  # Linux without psutil
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        with open("/proc/stat") as fh:
            btime = next(int(ln.split()[1]) for ln in fh if ln.startswith("btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _flock(fd: int) -> bool | None:
    """Try an exclusive non-blocking ``flock``: True (got it), False (another process holds
    it), None (not supported here: the pid in the file decides)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _read_fd(fd: int) -> dict:
    try:
        raw = os.pread(fd, 65536, 0)
        info = json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    if pid == os.getpid() and host == socket.gethostname():
        pid = f"{pid} (this process)"
    since = info.get("started", "?")
    purpose = f" ('{info['purpose']}')" if info.get("purpose") else ""
    return f"pid {pid} on host {host} since {since}{purpose}"


class RunDirLock:
    """The exclusive lock of one run directory (see the module docstring); use
    :func:`run_dir_lock`."""

    def __init__(self, run_dir: str | Path, purpose: str, *, what: str = "run directory",
                 flag: str = "--run-dir") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.purpose = purpose
        self.what, self.flag = what, flag  # how messages name the directory and its option
        self._fd: int | None = None
        self._created: list[Path] = []  # directories this lock made (removed when left empty)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _mkdirs(self) -> None:
        missing = []
        d = self.run_dir
        while not d.exists() and d != d.parent:
            missing.append(d)
            d = d.parent
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"{self.what} {self.run_dir} is a file, not a directory")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._created = [m for m in missing if m.exists()]
            self._remove_created_dirs()
            raise RunDirError(f"cannot create the {self.what} {self.run_dir}: "
                              f"{exc.strerror or exc}") from None
        self._created = missing  # deepest first

    def _stale_reason(self, info: dict) -> str | None:
        """Why the lock described by ``info`` (on this host) is stale, or None (alive)."""
        try:
            pid = int(info.get("pid"))
        except (TypeError, ValueError):
            return "it names no process"
        if pid == os.getpid():
            with _HELD_GUARD:
                mine = str(self.path.resolve()) in _HELD
            return None if mine else "it was left by an earlier process with this pid"
        if not _pid_alive(pid):
            return f"pid {pid} is gone"
        started, begun = info.get("started_ts"), _process_start(pid)
        if isinstance(started, int | float) and begun is not None and begun > started + 2:
            return f"pid {pid} is now another process (started after the lock was written)"
        return None

    def acquire(self) -> RunDirLock:
        """Take the lock or raise :class:`RunDirError` naming its holder."""
        if self.held:
            raise RunDirError(f"{self.path}: already held by this lock object")
        self._mkdirs()
        try:
            self._acquire()
        except BaseException:
            self._remove_created_dirs()
            raise
        return self

    def _acquire(self) -> None:
        host = socket.gethostname()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunDirError(f"{self.what} {self.run_dir}: cannot create the lock file "
                                  f"{self.path} ({exc.strerror or exc})") from None
            try:
                got = _flock(fd)
                info = _read_fd(fd)
                if got is False:
                    raise RunDirError(
                        f"{self.what} {self.run_dir} is in use: locked by {_describe(info)}; "
                        f"wait for that process to finish (or stop it), or use another "
                        f"{self.flag} (lock file {self.path})")
                try:  # a lock file released (unlinked) while we opened it: open the new one
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                if info:
                    if info.get("host") != host:
                        raise RunDirError(
                            f"{self.what} {self.run_dir} is locked by {_describe(info)}, "
                            "which cannot be checked from this host; if no rayfal process uses it "
                            f"there any more, remove {self.path} and try again")
                    reason = self._stale_reason(info)
                    if reason is None:
                        raise RunDirError(
                            f"{self.what} {self.run_dir} is in use: locked by "
                            f"{_describe(info)}; wait for that process to finish (or stop it), "
                            f"or use another {self.flag} (lock file {self.path}; remove it only "
                            "if that process is not rayfal)")
                    log.warning("%s: taking over a stale lock of %s: %s", self.run_dir,
                                _describe(info), reason)
                now = time.time()
                mine = {"pid": os.getpid(), "host": host,
                        "started": datetime.fromtimestamp(now, timezone.utc).isoformat(
                            timespec="seconds"),
                        "started_ts": now, "purpose": self.purpose}
                data = (json.dumps(mine) + "\n").encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            with _HELD_GUARD:
                _HELD.add(str(self.path.resolve()))
            return
        raise RunDirError(f"{self.what} {self.run_dir}: could not take the lock {self.path} "
                          "(it keeps changing); is another rayfal process starting there?")

    def release(self) -> None:
        """Remove the lock file (when it is still ours) and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            with _HELD_GUARD:
                _HELD.discard(str(self.path.resolve()))
            os.close(fd)
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        for d in self._created:  # deepest first; stops at the first one that is not empty
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, purpose: str, *, what: str = "run directory",
                 flag: str = "--run-dir") -> Iterator[RunDirLock]:
    """Hold ``RUN_DIR/rayfal.lock`` for the block (``purpose``, e.g. ``"run"``, ``"tune"``,
    ``"import labels"``, is shown to a second process). Creates ``run_dir`` if needed (and
    removes it again if it is left empty). A second holder gets :class:`RunDirError`
    (``what``/``flag``: how its message names the directory and the option that sets it)."""
    lock = RunDirLock(run_dir, purpose, what=what, flag=flag).acquire()
    try:
        yield lock
    finally:
        lock.release()


def holds_run_dir_lock(fn: F) -> F:
    """Decorate ``run_job(cfg, resolved, run_dir, *, resume=False, ...)``: the whole call holds
    the run directory's lock (taken before anything is read or written there) and validates
    the pools it opens with their row checks cached in ``RUN_DIR/data/pool-checks``."""
    from rayfal.data.validate import check_cache

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        run_dir = Path(bound.arguments["run_dir"])
        resume = bool(bound.arguments.get("resume", False))
        with run_dir_lock(run_dir, "run --resume" if resume else "run"), \
                check_cache(run_dir / POOL_CHECKS):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- state


def _files_under(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` files below ``root`` (hidden temp files left out), in walk order."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if _TEMP_FILE.fullmatch(name):
                continue
            out.append(Path(dirpath) / name)
            if len(out) >= limit:
                return out
    return out


def campaign_state(run_dir: str | Path, limit: int = 4) -> list[Path]:
    """Files of campaign state in ``run_dir`` (at most ``limit``): anything in ``campaigns/``
    (ledgers, round records, round checkpoints) and ``rounds.csv``. The job file, the data
    (``data/``), the lock, the report and Ray Train's scratch space are not campaign state."""
    run_dir = Path(run_dir)
    found = [run_dir / ROUNDS_CSV] if (run_dir / ROUNDS_CSV).is_file() else []
    if (run_dir / CAMPAIGNS).is_dir():
        found += _files_under(run_dir / CAMPAIGNS, limit)
    return found[:limit]


def describe_state(run_dir: Path, state: list[Path]) -> str:
    shown = ", ".join(str(p.relative_to(run_dir)) for p in state[:3])
    return shown + (", ..." if len(state) > 3 else "")


def read_saved_job(path: str | Path) -> dict:
    """A run directory's ``job.yaml``; a file that cannot be read or parsed is a
    :class:`RunDirError` naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RunDirError(f"--resume: {path} is not valid YAML{where}: {problem}; the saved "
                          "job is damaged (restore it, or start again in another --run-dir)"
                          ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"--resume: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"--resume: {path} does not hold a job (a mapping), found "
                          f"{type(data).__name__}; the saved job is damaged")
    return data


def _round_records(campaign_dir: Path) -> list[tuple[Path, dict]]:
    rounds = Path(campaign_dir) / "rounds"
    if not rounds.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in rounds.glob("round_*.json"):
        m = _RECORD.fullmatch(p.name)
        if not m or p.name != f"round_{int(m.group(1)):03d}.json":
            raise RunDirError(f"{p}: not a round record name (round_NNN.json); remove or rename "
                              "it")
        found[int(m.group(1))] = p
    if not found:
        return []
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        names = ", ".join(f"round_{r:03d}.json" for r in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise RunDirError(
            f"{rounds}: round record(s) {names}{more} missing (found {len(found)} records up to "
            f"round_{max(found):03d}.json); --resume would repeat rounds: restore the missing "
            "record(s), or start again in another --run-dir")
    out = []
    for r in sorted(found):
        p = found[r]
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}); the round record is damaged") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{p}: cannot read the round record: {exc}") from None
        if not isinstance(rec, dict):
            raise RunDirError(f"{p}: a round record must be a JSON object, found "
                              f"{type(rec).__name__}")
        if rec.get("round") != r:
            raise RunDirError(f"{p}: holds round {rec.get('round')!r}, not {r}; the round "
                              "record is damaged or misplaced")
        out.append((p, rec))
    return out


def check_round_records(campaign_dir: str | Path) -> None:
    """``campaign_dir/rounds/round_NNN.json`` are round_000 ... round_K without a gap, each a
    readable JSON object of its own round; else :class:`RunDirError` naming the missing or
    damaged files (``--resume`` would otherwise repeat or skip rounds)."""
    _round_records(Path(campaign_dir))


def _ledger_counts(path: Path) -> dict[int, int]:
    """``{round: labels first committed in it}`` read from a ledger file without writing to it
    (an empty file or one without a ``labels`` table holds no labels yet)."""
    if path.stat().st_size == 0:
        return {}
    uri = f"file:{path.resolve().as_posix()}?mode=ro"
    problem: object = "cannot open it"
    for connect in (lambda: sqlite3.connect(uri, uri=True, timeout=10),
                    lambda: sqlite3.connect(str(path), timeout=10)):
        try:
            conn = connect()
        except sqlite3.Error as exc:
            problem = exc
            continue
        try:
            rows = conn.execute("SELECT round, COUNT(*) FROM labels GROUP BY round").fetchall()
            return {int(r): int(n) for r, n in rows}
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                return {}
            problem = exc
        finally:
            conn.close()
    raise RunDirError(f"{path}: not a readable label ledger ({problem}); the campaign state is "
                      "damaged")


def _check_ledger(campaign_dir: Path, records: list[tuple[Path, dict]]) -> None:
    ledger = campaign_dir / "ledger.sqlite"
    if not ledger.is_file():
        if records:
            raise RunDirError(f"{campaign_dir} holds round records but no ledger.sqlite: the "
                              "labels are lost; start again in another --run-dir")
        return
    counts = _ledger_counts(ledger)
    if counts and max(counts) > len(records):
        raise RunDirError(
            f"{ledger} holds labels of round {max(counts)} but only {len(records)} round "
            f"record(s) exist in {campaign_dir / 'rounds'}: the ledger and the records are "
            "from different runs")
    for path, rec in records:
        n = rec.get("n_labelled")
        if not isinstance(n, int) or isinstance(n, bool):
            continue
        have = sum(c for r, c in counts.items() if r <= rec["round"])
        if n != have:
            raise RunDirError(
                f"{path} trained on {n} labels but {ledger} holds {have} labels up to round "
                f"{rec['round']}: the ledger and the round records are from different runs")


def check_campaign_state(run_dir: str | Path, resolved: dict) -> None:
    """Every campaign directory of ``run_dir`` belongs to the job ``resolved`` (a campaign
    name and seed of the job; round records of that campaign, strategy and seed, consecutive;
    a ledger whose label counts match the records); else :class:`RunDirError` naming the
    directory or file."""
    run_dir = Path(run_dir)
    root = run_dir / CAMPAIGNS
    if not root.is_dir():
        return
    campaigns = {str(c.get("label") or c.get("strategy")): c
                 for c in resolved.get("campaigns") or [] if isinstance(c, dict)}
    seeds = set(resolved.get("seeds") or [])
    for cdir in sorted(root.iterdir()):
        if _TEMP_FILE.fullmatch(cdir.name) or not _files_under(cdir, 1):
            continue
        camp = campaigns.get(cdir.name)
        if camp is None or not cdir.is_dir():
            raise RunDirError(
                f"--resume: {cdir} is not a campaign of this job (its campaigns: "
                f"{', '.join(sorted(campaigns)) or 'none'}); the run directory holds another "
                "job's state: use another --run-dir")
        for sdir in sorted(cdir.iterdir()):
            if _TEMP_FILE.fullmatch(sdir.name) or not _files_under(sdir, 1):
                continue
            m = _SEED_DIR.fullmatch(sdir.name)
            if not m or int(m.group(1)) not in seeds or not sdir.is_dir():
                raise RunDirError(
                    f"--resume: {sdir} is not a seed of this job (seeds: "
                    f"{sorted(seeds)}); the run directory holds another job's state: use "
                    "another --run-dir")
            seed = int(m.group(1))
            records = _round_records(sdir)
            for path, rec in records:
                for key, want in (("campaign", cdir.name), ("seed", seed),
                                  ("strategy", camp.get("strategy"))):
                    if key in rec and rec[key] != want:
                        raise RunDirError(
                            f"--resume: {path} is a record of {key} {rec[key]!r}, not "
                            f"{want!r}: the run directory mixes two jobs; use another "
                            "--run-dir")
            _check_ledger(sdir, records)


def remove_stale_files(run_dir: str | Path) -> list[Path]:
    """Remove what interrupted writes leave in a run directory (call it holding the lock):
    ``.NAME.tmp-PID`` temp files (top level, campaigns, round records), unfinished checkpoint
    temp directories in round directories, and Ray Train's per-round storage in
    ``_ray_train/``. Returns what was removed; never looks outside ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed: list[Path] = []
    dirs = [run_dir]
    camp = run_dir / CAMPAIGNS
    if camp.is_dir() and not camp.is_symlink():  # iterdir, not glob: names may start with '.'
        seed_dirs = [s for c in camp.iterdir() if c.is_dir() and not c.is_symlink()
                     for s in c.iterdir() if _SEED_DIR.fullmatch(s.name)]
        for sdir in seed_dirs:
            if sdir.is_dir() and not sdir.is_symlink():
                dirs += [sdir, sdir / "rounds"]
                for rdir in sdir.glob("round_*"):
                    if rdir.is_dir() and not rdir.is_symlink():
                        dirs.append(rdir)
                        for tmp in rdir.iterdir():
                            if (tmp.is_dir() and not tmp.is_symlink()
                                    and _TEMP_DIR.fullmatch(tmp.name)):
                                shutil.rmtree(tmp, ignore_errors=True)
                                removed.append(tmp)
    for d in dirs:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if _TEMP_FILE.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    train = run_dir / RAY_TRAIN_DIR
    if train.is_dir() and not train.is_symlink():
        for p in train.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    if removed:
        log.info("%s: removed %d leftover(s) of an interrupted run, e.g. %s", run_dir,
                 len(removed), removed[0].relative_to(run_dir))
    return removed


__all__ = [
    "LOCK_FILE",
    "POOL_CHECKS",
    "RunDirError",
    "RunDirLock",
    "campaign_state",
    "check_campaign_state",
    "check_round_records",
    "describe_state",
    "holds_run_dir_lock",
    "read_saved_job",
    "remove_stale_files",
    "run_dir_lock",
]
