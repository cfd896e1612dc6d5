"""Submit rayfal jobs to a Ray cluster's Jobs API (``rayfal submit | status | logs | stop``).

The entry point runs ``python -m rayfal.cli run JOB --address auto`` on the cluster, with the
current directory as the runtime environment's ``working_dir`` (so the job files and the
``rayfal`` package travel with the job: the cluster runs the code you submitted). Token
authentication (``RAY_AUTH_MODE=token``, default for local clusters since Ray 2.59) is handled
by Ray's client: it reads ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

#: never uploaded with the working dir
EXCLUDES = [".venv", ".git", "runs", "data", "**/__pycache__", ".pytest_cache", ".ruff_cache",
            "*.parquet", "benchmarks/results"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def auth_token() -> str | None:
    """The cluster token: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
    ``~/.ray/auth_token`` (written by ``ray get-auth-token --generate`` / a local head)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return path.read_text().strip() if path.is_file() else None


def client(address: str):
    """A ``JobSubmissionClient`` for ``http://HEAD:8265`` (clear error if unreachable).

    The token (see :func:`auth_token`) is sent as ``Authorization: Bearer ...``, so token
    authentication works whether or not ``RAY_AUTH_MODE=token`` is set in this process.
    """
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError/RuntimeError variants
        raise ConnectionError(f"cannot reach the Ray Jobs API at {address}: {exc}") from None


def entrypoint(job: str, overrides: list[str], run_dir: str | None, resume: bool) -> str:
    parts = ["python", "-m", "rayfal.cli", "run", job, "--address", "auto", "--no-progress"]
    for o in overrides:
        parts += ["--set", o]
    if run_dir:
        parts += ["--run-dir", run_dir]
    if resume:
        parts.append("--resume")
    return shlex.join(parts)


def submit(
    job: str,
    address: str,
    *,
    overrides: list[str] | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    working_dir: str = ".",
    submission_id: str | None = None,
    env: dict[str, str] | None = None,
    retry_s: float = 90.0,
) -> str:
    """Submit a job file; returns the submission id (retries while the head's agent starts)."""
    if not Path(working_dir, job).is_file():
        raise FileNotFoundError(f"job file {job} not found under the working dir {working_dir}")
    runtime_env = {"working_dir": working_dir, "excludes": EXCLUDES}
    if env:
        runtime_env["env_vars"] = env
    import requests

    c = client(address)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return c.submit_job(
                entrypoint=entrypoint(job, overrides or [], run_dir, resume),
                runtime_env=runtime_env,
                submission_id=submission_id,
                metadata={"rayfal_job": job},
            )
        except (RuntimeError, requests.ConnectionError) as exc:
            # a just-started or busy head: no job agent yet, or a dropped connection
            transient = isinstance(exc, requests.ConnectionError) or "No available agent" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def _retry(fn, attempts: int = 5, wait_s: float = 2.0):
    """Call ``fn`` again on transient HTTP failures (a busy head drops connections)."""
    import requests

    for i in range(attempts):
        try:
            return fn()
        except (requests.ConnectionError, requests.Timeout):
            if i == attempts - 1:
                raise
            time.sleep(wait_s)


def status(address: str, job_id: str) -> str:
    return str(_retry(lambda: client(address).get_job_status(job_id).value))


def logs(address: str, job_id: str) -> str:
    return _retry(lambda: client(address).get_job_logs(job_id))


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)


def follow(address: str, job_id: str, *, poll_s: float = 2.0, echo=print) -> str:
    """Print new log lines until the job ends; returns the final status."""
    c = client(address)
    shown = 0
    while True:
        st = str(_retry(lambda: c.get_job_status(job_id).value))
        text = _retry(lambda: c.get_job_logs(job_id))
        if len(text) > shown:
            echo(text[shown:].rstrip("\n"))
            shown = len(text)
        if st in TERMINAL:
            return st
        time.sleep(poll_s)
