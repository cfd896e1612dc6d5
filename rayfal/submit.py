"""Submit rayfal jobs to a Ray cluster's Jobs API (``rayfal submit | status | logs | stop``).

The entry point runs ``python -m rayfal.cli run JOB --address auto --run-dir DIR`` on the
cluster, with the current directory as the runtime environment's ``working_dir`` (so the job
files and the ``rayfal`` package travel with the job: the cluster runs the code you submitted).

**Run directory.** The job's ``working_dir`` is a temporary copy on the head node that Ray
deletes, so ``rayfal submit`` requires ``--run-dir`` on storage that every node mounts at the
same path (NFS, EFS, Filestore, Lustre, ...): an absolute path, or a ``file://`` URI (converted
to its path). rayfal writes the run directory with local file APIs (SQLite label ledgers,
checkpoints, CSV), so object-store URIs (``s3://``, ``gs://``, ...) are refused: mount the
bucket with a filesystem that supports in-place writes and give the mount path.

**Token.** With token authentication (``RAY_AUTH_MODE=token``, Ray >= 2.52) every Jobs API
request carries ``Authorization: Bearer TOKEN``. Ray's own client attaches the local token to
*any* address; rayfal decides per address (:func:`token_plan`) and sends exactly that:

* the token goes to loopback addresses (a local cluster, or the ``ray dashboard CLUSTER.yaml`` /
  ``kubectl port-forward`` tunnels of Ray's token-auth guides) when no config file exists;
* to the hosts listed in the config file (``$RAYFAL_SUBMIT_CONFIG``, default
  ``~/.config/rayfal/clusters.yaml``), which then is the complete list, each entry optionally
  with its own ``token_path``::

      clusters:
        - address: https://ray.example.org:8265   # URL, HOST or HOST:PORT
          token_path: ~/.ray/example_token        # optional
        - address: localhost

* to the host named by ``--token-for HOST[:PORT]`` (must be ``--address``'s host);
* never to another host. A plain-``http://`` address that is not loopback gets a warning (the
  token, if sent, crosses the network in clear text). The token itself is never printed or
  logged, and any error text that would contain it is redacted.

The token's value comes from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token`` (``ray get-auth-token --generate``), or from the config entry's
``token_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

log = logging.getLogger("rayfal.submit")

#: never uploaded with the working dir
EXCLUDES = [".venv", ".git", "runs", "data", "**/__pycache__", ".pytest_cache", ".ruff_cache",
            "*.parquet", "benchmarks/results"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
CONFIG_ENV = "RAYFAL_SUBMIT_CONFIG"
DEFAULT_CONFIG = Path("~/.config/rayfal/clusters.yaml")
_REDACTED = "<redacted token>"

RUN_DIR_HELP = (
    "run directory on storage that every node of the cluster mounts at the same path (NFS, "
    "EFS, Filestore, Lustre): an absolute path or a file:// URI. Required: the job's working "
    "directory is temporary, results written there are lost. Object-store URIs (s3://, gs://) "
    "are not supported: rayfal writes run directories with local file APIs (SQLite ledgers, "
    "checkpoints), so mount the bucket with a filesystem that supports in-place writes and "
    "give the mount path"
)


class ClusterAuthError(ConnectionError):
    """The Jobs API refused the request (401/403): no or a wrong token was sent."""


# ----------------------------------------------------------------------------- run directory


def cluster_run_dir(run_dir: str | None) -> str:
    """The ``--run-dir`` of a submitted job as an absolute POSIX path (see the module
    docstring): ``file://`` URIs are converted, other URI schemes and relative paths refused."""
    if not run_dir:
        raise ValueError("rayfal submit needs --run-dir on shared storage (" + RUN_DIR_HELP + ")")
    parts = urlsplit(run_dir)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"--run-dir {run_dir}: a file:// URI must name a local path "
                             f"(file:///mnt/shared/...), not the host {parts.netloc!r}")
        path = unquote(parts.path)
    elif parts.scheme and "://" in run_dir:
        raise ValueError(
            f"--run-dir {run_dir}: {parts.scheme}:// URIs are not supported. rayfal writes its "
            "run directory with local file APIs (SQLite label ledgers, checkpoints, CSV), so only "
            "mounted shared storage works: NFS, EFS, Filestore, Lustre, or a bucket mounted with "
            "a filesystem that supports in-place writes, given as its mount path "
            "(e.g. --run-dir /mnt/shared/runs/NAME)")
    else:
        path = run_dir
    if not PurePosixPath(path).is_absolute():
        raise ValueError(
            f"--run-dir {run_dir} is relative: on the cluster it would land in the job's "
            "temporary working directory and be lost when the job ends; give an absolute path "
            "on storage every node mounts (e.g. /mnt/shared/runs/NAME)")
    return str(PurePosixPath(path))


def entrypoint(job: str, overrides: list[str], run_dir: str, resume: bool) -> str:
    parts = ["python", "-m", "rayfal.cli", "run", job, "--address", "auto", "--no-progress",
             "--run-dir", cluster_run_dir(run_dir)]
    for o in overrides:
        parts += ["--set", o]
    if resume:
        parts.append("--resume")
    return shlex.join(parts)


# ----------------------------------------------------------------------------- token decision


def jobs_api_url(address: str) -> str:
    """``http(s)://HOST:PORT`` of a ``--address`` (``HOST:PORT`` means ``http://``)."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--address {address}: rayfal talks to the Ray Jobs API over HTTP(S), "
                         "e.g. --address http://127.0.0.1:8265 (ray:// and auto are for "
                         "'rayfal run')")
    return address


def _host_port(address: str) -> tuple[str, int | None]:
    """Lower-case host and explicit port (``None`` when absent) of a URL, HOST or HOST:PORT."""
    text = address.strip().rstrip("/")
    parts = urlsplit(text if "://" in text else "//" + text)
    if not parts.hostname:
        raise ValueError(f"no host in {address!r}")
    return parts.hostname.lower(), parts.port


def is_loopback(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _matches(address: str, target: str) -> bool:
    host, port = _host_port(address)
    t_host, t_port = _host_port(target)
    if t_port is None:
        return t_host == host
    scheme = urlsplit(jobs_api_url(address)).scheme
    return t_host == host and t_port == (port or (443 if scheme == "https" else 80))


@dataclass(frozen=True)
class ClusterEntry:
    address: str
    token_path: Path | None = None


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def load_config(path: Path | None = None) -> list[ClusterEntry] | None:
    """The config file's cluster entries, or ``None`` when there is no config file."""
    import yaml

    path = path or config_path()
    if not path.is_file():
        if os.environ.get(CONFIG_ENV):
            raise FileNotFoundError(f"{CONFIG_ENV}={path}: no such file")
        return None
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    entries = doc.get("clusters") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected 'clusters:' with a list of {{address, token_path}}")
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, str):
            e = {"address": e}
        if not isinstance(e, dict) or not isinstance(e.get("address"), str) or \
                set(e) - {"address", "token_path"}:
            raise ValueError(f"{path}: clusters[{i}] must be {{address: URL|HOST[:PORT], "
                             "token_path: FILE (optional)}}")
        _host_port(e["address"])
        tp = e.get("token_path")
        out.append(ClusterEntry(e["address"], Path(tp).expanduser() if tp else None))
    return out


@dataclass(frozen=True)
class TokenPlan:
    """Whether ``address`` gets the token, from where, and why (for messages)."""

    address: str
    send: bool
    reason: str
    token_path: Path | None = None  # a config entry's own token file

    def token(self) -> str | None:
        return read_token(self.token_path) if self.send else None


def read_token(token_path: Path | None = None) -> str | None:
    """``token_path`` if given, else ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``,
    else ``~/.ray/auth_token`` (Ray's own order); ``None`` when the default file is absent. A
    named file that does not exist is an error (as in Ray)."""
    if token_path is None:
        if os.environ.get("RAY_AUTH_TOKEN", "").strip():
            return os.environ["RAY_AUTH_TOKEN"].strip()
        if not os.environ.get("RAY_AUTH_TOKEN_PATH"):
            default = Path.home() / ".ray" / "auth_token"
            return (default.read_text().strip() or None) if default.is_file() else None
        token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    token_path = token_path.expanduser()
    if not token_path.is_file():
        raise FileNotFoundError(f"token file {token_path} not found")
    return token_path.read_text().strip() or None


def token_plan(address: str, *, token_for: str | None = None,
               config: list[ClusterEntry] | None | bool = True) -> TokenPlan:
    """Decide whether ``address`` gets the token (module docstring). ``config=True`` reads the
    config file; a list (or ``None``: no file) is used as given."""
    url = jobs_api_url(address)
    host, _ = _host_port(url)
    entries = load_config() if config is True else config
    if token_for:
        if not _matches(url, token_for):
            raise ValueError(f"--token-for {token_for} does not match the host of --address "
                             f"{url}: the token is only sent to the host you name")
        return TokenPlan(url, True, f"--token-for {token_for}")
    if entries is not None:
        for e in entries:
            if _matches(url, e.address):
                return TokenPlan(url, True, f"listed in {config_path()}", e.token_path)
        return TokenPlan(url, False, f"{host} is not listed in {config_path()}")
    if is_loopback(host):
        return TokenPlan(url, True, "loopback address")
    return TokenPlan(url, False, f"{host} is not a loopback address and no config file "
                                 f"({config_path()}) or --token-for names it")


def transport_warning(address: str, sends_token: bool) -> str | None:
    """A warning for plain HTTP to a non-loopback host (``None`` otherwise)."""
    url = jobs_api_url(address)
    host, _ = _host_port(url)
    if urlsplit(url).scheme != "http" or is_loopback(host):
        return None
    what = ("the cluster token and the job" if sends_token else "the job (code, arguments, "
            "logs)")
    return (f"{url} is plain HTTP to a non-loopback host: {what} cross the network "
            "unencrypted. Reach the head through an SSH tunnel (ray dashboard CLUSTER.yaml, "
            "kubectl port-forward) or a TLS proxy (https://).")


# ----------------------------------------------------------------------------- the client


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, _REDACTED) if token else text


@contextlib.contextmanager
def _no_token_in_errors(token: str | None, address: str, plan: TokenPlan | None = None
                        ) -> Iterator[None]:
    """Re-raise errors without the token in their text; Ray's ``AuthenticationError`` (HTTP
    401/403) as :class:`ClusterAuthError` saying whether a token was sent and why."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error passes through the redaction
        text = _redact(str(exc), token)
        if type(exc).__name__ == "AuthenticationError":
            first = text.strip().splitlines()[0] if text.strip() else "refused"
            if plan is None:
                why = ""
            elif plan.send:
                why = f" (a token was sent: {plan.reason}; is it this cluster's token?)"
            else:
                why = (f" (no token was sent: {plan.reason}; use --token-for HOST or list the "
                       f"address in {config_path()})")
            raise ClusterAuthError(f"the Jobs API at {address} refused the request: "
                                   f"{first}{why}") from None
        if token and token in str(exc):
            raise RuntimeError(text) from None
        raise


_CLIENT_CLASS = None


def _client_class():
    """A ``JobSubmissionClient`` that sends exactly the ``Authorization`` header rayfal chose:
    Ray's client adds the local token to every request when ``RAY_AUTH_MODE=token``, whatever
    the address. Every request (HTTP and the log-tail websocket) reads ``self._headers``."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from ray.job_submission import JobSubmissionClient

        class GuardedJobSubmissionClient(JobSubmissionClient):
            def __init__(self, address: str, *, auth_headers: dict[str, str], **kwargs):
                self.__dict__["_rayfal_auth"] = dict(auth_headers)
                super().__init__(address, **kwargs)

            @property
            def _headers(self) -> dict[str, str]:
                base = self.__dict__.get("_rayfal_base_headers", {})
                keep = {k: v for k, v in base.items()
                        if k.lower() not in ("authorization", "x-ray-authorization")}
                return {**keep, **self.__dict__["_rayfal_auth"]}

            @_headers.setter
            def _headers(self, value) -> None:
                self.__dict__["_rayfal_base_headers"] = dict(value or {})

            def __repr__(self) -> str:
                return f"GuardedJobSubmissionClient({self._address!r})"

        _CLIENT_CLASS = GuardedJobSubmissionClient
    return _CLIENT_CLASS


def _check_address_env(url: str) -> None:
    """Ray's client replaces its address with ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``;
    the token decision was made for ``url``, so a different override is refused."""
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var)
        if value:
            try:
                same = jobs_api_url(value) == url
            except ValueError:
                same = False
            if not same:
                raise ValueError(f"{var}={value} is set, and Ray's Jobs client would use it "
                                 f"instead of --address {url}: unset it for rayfal submit/"
                                 "status/logs/stop")
            return


def client(address: str, *, token_for: str | None = None):
    """A Jobs API client for ``http(s)://HEAD:8265`` that sends the token only where
    :func:`token_plan` allows (clear error if unreachable; warning on plain HTTP)."""
    plan = token_plan(address, token_for=token_for)
    _check_address_env(plan.address)
    token = plan.token()
    warning = transport_warning(plan.address, token is not None)
    if warning:
        log.warning(warning)
    if not plan.send:
        log.info("no cluster token sent to %s: %s", plan.address, plan.reason)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with _no_token_in_errors(token, plan.address, plan):
        try:
            c = _client_class()(plan.address, auth_headers=headers)
        except (ConnectionError, RuntimeError, OSError) as exc:
            if type(exc).__name__ == "AuthenticationError":
                raise
            raise ConnectionError(
                f"cannot reach the Ray Jobs API at {plan.address}: {_redact(str(exc), token)}"
            ) from None
    c.__dict__["_rayfal_plan"] = plan
    return c


def _guard(c):
    """:func:`_no_token_in_errors` for calls made with client ``c``."""
    plan: TokenPlan | None = getattr(c, "__dict__", {}).get("_rayfal_plan")
    auth = getattr(c, "__dict__", {}).get("_rayfal_auth", {}).get("Authorization", "")
    token = auth.removeprefix("Bearer ") or None
    return _no_token_in_errors(token, plan.address if plan else "the cluster", plan)


def _call(c, fn: Callable):
    with _guard(c):
        return fn()


# ----------------------------------------------------------------------------- commands


def submit(
    job: str,
    address: str,
    *,
    run_dir: str,
    overrides: list[str] | None = None,
    resume: bool = False,
    working_dir: str = ".",
    submission_id: str | None = None,
    env: dict[str, str] | None = None,
    retry_s: float = 90.0,
    token_for: str | None = None,
) -> str:
    """Submit a job file; returns the submission id (retries while the head's agent starts)."""
    if not Path(working_dir, job).is_file():
        raise FileNotFoundError(f"job file {job} not found under the working dir {working_dir}")
    command = entrypoint(job, overrides or [], run_dir, resume)
    runtime_env = {"working_dir": working_dir, "excludes": EXCLUDES}
    if env:
        runtime_env["env_vars"] = env
    import requests

    c = client(address, token_for=token_for)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return _call(c, lambda: c.submit_job(
                entrypoint=command,
                runtime_env=runtime_env,
                submission_id=submission_id,
                metadata={"rayfal_job": job},
            ))
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


def _job_call(c, job_id: str, fn: Callable):
    """:func:`_call` for a call about one job: an unknown id (Ray's client raises a bare
    ``RuntimeError`` for the HTTP 404) becomes a ``ValueError`` naming the id, which the CLI
    prints as one line instead of a traceback."""
    try:
        return _call(c, fn)
    except RuntimeError as exc:
        if "status code 404" in str(exc):
            raise ValueError(f"no job {job_id!r} on this cluster (the Jobs API answered 404; "
                             "see the ids with `ray job list`)") from None
        raise


def status(address: str, job_id: str, *, token_for: str | None = None) -> str:
    c = client(address, token_for=token_for)
    return str(_retry(lambda: _job_call(c, job_id, lambda: c.get_job_status(job_id).value)))


def logs(address: str, job_id: str, *, token_for: str | None = None) -> str:
    c = client(address, token_for=token_for)
    return _retry(lambda: _job_call(c, job_id, lambda: c.get_job_logs(job_id)))


def stop(address: str, job_id: str, *, token_for: str | None = None) -> bool:
    c = client(address, token_for=token_for)
    return _job_call(c, job_id, lambda: c.stop_job(job_id))


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def follow(address: str, job_id: str, *, echo: Callable[[str], None] = _write,
           timeout_s: float | None = None, reconnects: int = 5, wait_s: float = 2.0,
           token_for: str | None = None, _client=None) -> str:
    """Stream the job's log through the Jobs API's websocket (``tail_job_logs``) until the job
    ends; returns the final status. ``echo`` gets the log text in chunks as it arrives. A
    dropped stream is reopened (the server replays the log from the start; what was shown is
    skipped). ``timeout_s`` bounds the whole wait (``TimeoutError``)."""
    c = _client or client(address, token_for=token_for)
    shown = 0

    def job_status() -> str:
        return str(_retry(lambda: c.get_job_status(job_id).value))

    async def tail() -> None:
        nonlocal shown
        seen = 0
        async for chunk in c.tail_job_logs(job_id):
            skip = max(0, min(len(chunk), shown - seen))
            seen += len(chunk)
            if chunk[skip:]:
                echo(chunk[skip:])
                shown += len(chunk) - skip

    async def run() -> str:
        st = "UNKNOWN"
        for attempt in range(reconnects + 1):
            try:
                await tail()
            except Exception as exc:  # noqa: BLE001 - aiohttp / RuntimeError variants
                if type(exc).__name__ == "AuthenticationError":
                    raise
                st = job_status()
                if st in TERMINAL:
                    return st
                if attempt == reconnects:
                    raise
                log.warning("log stream of %s dropped (%s); reconnecting", job_id,
                            type(exc).__name__)
                await asyncio.sleep(wait_s)
                continue
            # the server closes the stream once the job is terminal; the status may lag
            for _ in range(30):
                st = job_status()
                if st in TERMINAL:
                    return st
                await asyncio.sleep(min(wait_s, 1.0))
        return st

    async def bounded() -> str:
        if timeout_s is None:
            return await run()
        async with asyncio.timeout(timeout_s):
            return await run()

    with _guard(c):
        return asyncio.run(bounded())
