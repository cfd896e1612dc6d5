"""Provenance of a run directory: what ran, where, when (``provenance.json``).

One entry per invocation (a ``--resume`` adds one): rayfal, Ray, torch, numpy and Python
versions, the git commit of the rayfal checkout when it is one, the job's fingerprint, the host,
the command line, and the start and end times (``end`` stays ``null`` for a run that was
killed, and ``status`` says how it ended).
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from rayfal.atomic import atomic_write_text

PROVENANCE = "provenance.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the rayfal checkout this code runs from (``None`` if not a git checkout
    or git is missing); ``+dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    import numpy
    import ray
    import torch

    import rayfal

    return {"rayfal": rayfal.__version__, "ray": ray.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def start_entry(run_dir: Path, job_fingerprint: str) -> int:
    """Append this invocation to ``run_dir/provenance.json``; returns its index."""
    path = Path(run_dir) / PROVENANCE
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append({"started": _now(), "ended": None, "status": "running",
                    "host": socket.gethostname(), "command": sys.argv, **versions(),
                    "git_commit": git_commit(), "job_fingerprint": job_fingerprint})
    atomic_write_text(path, json.dumps(entries, indent=1))
    return len(entries) - 1


def end_entry(run_dir: Path, index: int, status: str) -> None:
    """Record the end time and how the invocation ended (``finished``, ``awaiting labels``,
    ``failed``)."""
    path = Path(run_dir) / PROVENANCE
    entries = json.loads(path.read_text())
    entries[index].update(ended=_now(), status=status)
    atomic_write_text(path, json.dumps(entries, indent=1))
