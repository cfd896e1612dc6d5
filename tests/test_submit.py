"""Running for real: `rayfal submit` (token only to the configured host, plain-HTTP warning, the
token never printed, shared run directory, log streaming), the embedded Ray bound to loopback,
and the GPU paths that can be checked without a GPU (loud failure, devices, gpu_check.sh).

The Jobs API is played by local servers on 127.0.0.1 that record every request's headers: a
threading ``http.server`` for the REST calls, an aiohttp app for the log-tail websocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rayfal import submit
from rayfal.cli import main

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "rayfal-test-token-3f9c2b7e0d41"  # noqa: S105 - a test secret


# ----------------------------------------------------------------------------- fake Jobs API


class JobsApi(ThreadingHTTPServer):
    """A Ray Jobs API stand-in on 127.0.0.1 that records (method, path, headers) of every
    request. ``require_token`` answers 401/403 like Ray's token middleware."""

    daemon_threads = True

    def __init__(self, require_token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.require_token = require_token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def auth_headers(self) -> list[str | None]:
        return [h.get("authorization") for _, _, h in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: JobsApi

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: object) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append((method, self.path, headers))
        length = int(headers.get("content-length") or 0)
        self.server.bodies.append(self.rfile.read(length) if length else b"")
        need = self.server.require_token
        if need is not None:
            auth = headers.get("authorization")
            if not auth:
                return self._send(401, "Unauthorized: Missing authentication token")
            if auth != f"Bearer {need}":
                return self._send(403, "Forbidden: Invalid authentication token")
        path = self.path.rstrip("/")
        if path == "/api/version":
            return self._send(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x",
                                    "session_name": "test"})
        if path.startswith("/api/packages/"):
            return self._send(404 if method == "GET" else 200, {})
        if path == "/api/jobs" and method == "POST":
            return self._send(200, {"job_id": "raysubmit_t", "submission_id": "raysubmit_t"})
        if path == "/api/jobs/echo":  # a broken proxy that puts the header in its error page
            return self._send(500, f"bad gateway for {headers.get('authorization')}")
        if path.endswith("/logs"):
            return self._send(200, {"logs": "line 1\nline 2\n"})
        if path.endswith("/stop"):
            return self._send(200, {"stopped": False})
        if path.startswith("/api/jobs/"):
            return self._send(200, {"type": "SUBMISSION", "job_id": None,
                                    "submission_id": path.rsplit("/", 1)[1],
                                    "status": "SUCCEEDED", "entrypoint": "python -m x"})
        return self._send(404, {})

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")


@contextlib.contextmanager
def jobs_api(require_token: str | None = None):
    server = JobsApi(require_token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token or address from the developer's environment; an empty HOME (no
    ~/.ray/auth_token, no ~/.config/rayfal/clusters.yaml)."""
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS",
                submit.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def job_dir(tmp_path):
    """A tiny working dir to upload (a job file only)."""
    d = tmp_path / "wd"
    d.mkdir()
    (d / "job.yaml").write_text("name: t\n")
    return d


def write_config(home: Path, *entries: dict | str) -> Path:
    path = home / ".config" / "rayfal" / "clusters.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    path.write_text(yaml.safe_dump({"clusters": list(entries)}))
    return path


# ----------------------------------------------------------------------------- run directory


def test_run_dir_must_be_an_absolute_path_or_file_uri():
    assert submit.cluster_run_dir("/mnt/shared/runs/x") == "/mnt/shared/runs/x"
    assert submit.cluster_run_dir("file:///mnt/shared/runs/a%20b") == "/mnt/shared/runs/a b"
    assert submit.cluster_run_dir("file://localhost/mnt/x/") == "/mnt/x"
    for bad, why in ((None, "needs --run-dir"), ("", "needs --run-dir"),
                     ("runs/x", "relative"), ("./x", "relative"),
                     ("s3://bucket/runs", "s3:// URIs are not supported"),
                     ("gs://bucket/runs", "mounted shared storage"),
                     ("hdfs://nn:8020/runs", "not supported"),
                     ("file://otherhost/x", "local path")):
        with pytest.raises(ValueError, match=re.escape(why)):
            submit.cluster_run_dir(bad)
    cmd = submit.entrypoint("jobs/tiny.yaml", ["al.rounds=1"], "file:///srv/runs/t", True)
    assert "--run-dir /srv/runs/t" in cmd and cmd.endswith("--resume")


def test_submit_cli_requires_and_explains_the_run_dir(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["submit", "jobs/tiny.yaml", "--address", "http://127.0.0.1:9"])
    assert exc.value.code == 2 and "--run-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--run-dir RUN_DIR", "shared storage", "NFS", "s3://", "not supported",
                   "mounted", "--token-for"):
        assert needle in text, needle
    # an object-store URI is refused before any network call
    assert main(["submit", "jobs/tiny.yaml", "--address", "http://127.0.0.1:9",
                 "--run-dir", "s3://bucket/runs/x"]) == 2
    assert "s3:// URIs are not supported" in capsys.readouterr().err


def test_submitted_entrypoint_carries_the_local_run_dir(clean_env, job_dir, tmp_path):
    """A file:// URI of a local folder (the local-filesystem case of shared storage) reaches
    the cluster as its absolute path."""
    run_dir = tmp_path / "shared" / "runs" / "x"
    with jobs_api() as api:
        job_id = submit.submit("job.yaml", api.url, run_dir=run_dir.as_uri(),
                               working_dir=str(job_dir))
    assert job_id == "raysubmit_t"
    posted = [json.loads(b) for (m, p, _), b in zip(api.requests, api.bodies, strict=True)
              if m == "POST"]
    assert f"--run-dir {run_dir}" in posted[0]["entrypoint"]
    assert posted[0]["runtime_env"]["working_dir"].startswith("gcs://")


# ----------------------------------------------------------------------------- token decision


def test_token_goes_to_loopback_only_by_default(clean_env):
    for addr in ("http://127.0.0.1:8265", "localhost:8265", "http://[::1]:8265",
                 "https://127.0.0.2"):
        assert submit.token_plan(addr, config=None).send, addr
    for addr in ("http://10.0.0.5:8265", "https://ray.example.org", "head:8265"):
        plan = submit.token_plan(addr, config=None)
        assert not plan.send and "not a loopback" in plan.reason, addr
    with pytest.raises(ValueError, match="Jobs API over HTTP"):
        submit.token_plan("ray://10.0.0.5:10001", config=None)


def test_token_for_and_the_config_file_name_the_hosts(clean_env):
    assert submit.token_plan("http://10.0.0.5:8265", token_for="10.0.0.5", config=None).send
    assert submit.token_plan("http://10.0.0.5:8265", token_for="10.0.0.5:8265",
                             config=None).send
    with pytest.raises(ValueError, match="does not match"):
        submit.token_plan("http://10.0.0.5:8265", token_for="10.0.0.6", config=None)
    with pytest.raises(ValueError, match="does not match"):
        submit.token_plan("http://10.0.0.5:8265", token_for="10.0.0.5:9999", config=None)
    cfg_path = write_config(clean_env, {"address": "https://ray.example.org",
                                        "token_path": "~/prod_token"},
                            "10.0.0.5:8265")
    entries = submit.load_config()
    assert [e.address for e in entries] == ["https://ray.example.org", "10.0.0.5:8265"]
    assert entries[0].token_path == clean_env / "prod_token"
    plan = submit.token_plan("https://RAY.example.org:443")
    assert plan.send and plan.token_path == clean_env / "prod_token"
    assert str(cfg_path) in plan.reason
    assert submit.token_plan("http://10.0.0.5:8265").send
    assert not submit.token_plan("http://10.0.0.5:8266").send
    # with a config file, it is the complete list: loopback is not implied
    assert not submit.token_plan("http://127.0.0.1:8265").send
    cfg_path.write_text("clusters: [{address: localhost, token: inline}]")
    with pytest.raises(ValueError, match="clusters\\[0\\]"):
        submit.load_config()


def test_config_file_from_the_environment(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv(submit.CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match=submit.CONFIG_ENV):
        submit.token_plan("http://127.0.0.1:8265")
    (tmp_path / "c.yaml").write_text("clusters: [127.0.0.1]")
    monkeypatch.setenv(submit.CONFIG_ENV, str(tmp_path / "c.yaml"))
    assert submit.token_plan("http://127.0.0.1:1234").send


def test_plain_http_to_a_non_loopback_host_is_warned():
    assert "unencrypted" in submit.transport_warning("http://10.0.0.5:8265", True)
    assert "token" in submit.transport_warning("http://10.0.0.5:8265", True)
    assert "token" not in submit.transport_warning("10.0.0.5:8265", False)
    assert submit.transport_warning("https://10.0.0.5:8265", True) is None
    assert submit.transport_warning("http://127.0.0.1:8265", True) is None
    assert submit.transport_warning("http://localhost:8265", True) is None


def test_token_sources_in_rays_order(clean_env, tmp_path, monkeypatch):
    assert submit.read_token() is None  # nothing anywhere
    (clean_env / ".ray").mkdir()
    (clean_env / ".ray" / "auth_token").write_text("from-home\n")
    assert submit.read_token() == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert submit.read_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.read_token() == "from-env"
    assert submit.read_token(tmp_path / "tok") == "from-path"  # a config entry's own file
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        submit.read_token()


def test_ray_address_override_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://10.9.9.9:8265")
    with pytest.raises(ValueError, match="RAY_ADDRESS"):
        submit.client("http://127.0.0.1:8265")


# ----------------------------------------------------------------------------- real requests


def test_token_reaches_the_configured_host_and_not_another(clean_env, job_dir, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    with jobs_api() as a, jobs_api() as b:
        write_config(clean_env, a.url.removeprefix("http://"))  # 127.0.0.1:PORT_A only
        for api in (a, b):
            assert submit.submit("job.yaml", api.url, run_dir="/shared/r",
                                 working_dir=str(job_dir)) == "raysubmit_t"
            assert submit.status(api.url, "raysubmit_t") == "SUCCEEDED"
            assert submit.logs(api.url, "raysubmit_t") == "line 1\nline 2\n"
            assert submit.stop(api.url, "raysubmit_t") is False
        # every request to A (version check, package upload, submit, status, logs, stop)
        assert {m for m, _, _ in a.requests} == {"GET", "PUT", "POST"}
        assert a.auth_headers() and set(a.auth_headers()) == {f"Bearer {TOKEN}"}
        assert b.requests and set(b.auth_headers()) == {None}
        assert not any("x-ray-authorization" in h or TOKEN in str(h) for _, _, h in b.requests)
        # --token-for names B for one call
        n = len(b.requests)
        assert submit.status(b.url, "raysubmit_t",
                             token_for=b.url.removeprefix("http://")) == "SUCCEEDED"
        assert set(b.auth_headers()[n:]) == {f"Bearer {TOKEN}"}


def test_rays_own_token_header_is_suppressed(clean_env, tmp_path):
    """With RAY_AUTH_MODE=token, Ray's client adds the local token to every address; in a
    fresh process (Ray reads the mode once) rayfal's client sends none to an unlisted host and
    prints nothing of the token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, HOME=str(clean_env))
    with jobs_api() as a, jobs_api() as b:
        write_config(clean_env, a.url)
        for api, expect in ((a, f"Bearer {TOKEN}"), (b, None)):
            proc = subprocess.run(
                [sys.executable, "-m", "rayfal.cli", "status", "raysubmit_t", "--address",
                 api.url], env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert proc.stdout.strip() == "SUCCEEDED"
            assert TOKEN not in proc.stdout + proc.stderr
            assert set(api.auth_headers()) == {expect}, api.requests


def test_the_token_is_never_printed_logged_or_raised(clean_env, job_dir, monkeypatch, capsys,
                                                     caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    with jobs_api() as api:
        monkeypatch.chdir(job_dir)
        assert main(["submit", "job.yaml", "--address", api.url, "--run-dir", "/shared/r"]) == 0
        assert main(["status", "raysubmit_t", "--address", api.url]) == 0
        assert main(["logs", "raysubmit_t", "--address", api.url]) == 0
        assert main(["stop", "raysubmit_t", "--address", api.url]) == 0
        # an error page that echoes the header: the exception text is redacted
        c = submit.client(api.url)
        with pytest.raises(RuntimeError) as exc:
            submit._call(c, lambda: c.get_job_status("echo"))
        assert TOKEN not in str(exc.value) and "<redacted token>" in str(exc.value)
        assert TOKEN not in repr(c)
    assert set(api.auth_headers()) == {f"Bearer {TOKEN}"}
    out = capsys.readouterr()
    assert "submitted job.yaml as raysubmit_t" in out.out and "SUCCEEDED" in out.out
    assert TOKEN not in out.out + out.err + caplog.text


def test_a_refused_token_says_why_without_the_token(clean_env, monkeypatch):
    with jobs_api(require_token="the-right-one") as api:
        with pytest.raises(submit.ClusterAuthError, match="a token was sent"):
            monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
            submit.status(api.url, "x")
        write_config(clean_env, "10.0.0.1")  # the loopback server is not listed
        with pytest.raises(submit.ClusterAuthError, match="no token was sent") as exc:
            submit.status(api.url, "x")
        assert TOKEN not in str(exc.value) and "--token-for" in str(exc.value)


def test_plain_http_warning_is_logged_before_any_request(clean_env, monkeypatch, caplog):
    """The decision is made and warned about before connecting (no non-loopback host is
    contacted: the client class is replaced by one that fails at once)."""
    made: list[dict] = []

    class Unreachable:
        def __init__(self, address, *, auth_headers):
            made.append(auth_headers)
            raise ConnectionError(f"Failed to connect to Ray at address: {address}.")

    monkeypatch.setattr(submit, "_client_class", lambda: Unreachable)
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    caplog.set_level(logging.INFO, logger="rayfal.submit")
    with pytest.raises(ConnectionError, match="cannot reach"):
        submit.client("http://192.0.2.1:8265", token_for="192.0.2.1")
    assert "plain HTTP" in caplog.text and "cluster token" in caplog.text
    assert made == [{"Authorization": f"Bearer {TOKEN}"}]
    caplog.clear()
    with pytest.raises(ConnectionError):
        submit.client("http://192.0.2.1:8265")
    assert "plain HTTP" in caplog.text and "no cluster token sent" in caplog.text
    assert made[-1] == {}
    assert TOKEN not in caplog.text


# ----------------------------------------------------------------------------- log streaming


class FakeTailClient:
    """tail_job_logs as Ray's: an async iterator of text chunks; the first stream drops."""

    def __init__(self) -> None:
        self.streams = [["a\n", "b\n"], ["a\nb\n", "c\n"]]
        self.statuses = iter(["RUNNING", "SUCCEEDED"])

    async def tail_job_logs(self, job_id: str):
        chunks = self.streams.pop(0)
        for c in chunks:
            yield c
            await asyncio.sleep(0)
        if self.streams:
            raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")

    def get_job_status(self, job_id: str):
        class S:
            value = next(self.statuses)
        return S

    def get_job_logs(self, job_id: str):  # pragma: no cover - must not be polled
        raise AssertionError("follow() polled the whole log")


def test_follow_streams_and_resumes_without_repeating():
    got: list[str] = []
    final = submit.follow("http://127.0.0.1:1", "j", echo=got.append, wait_s=0.01,
                          _client=FakeTailClient())
    assert final == "SUCCEEDED"
    assert "".join(got) == "a\nb\nc\n" and got[-1] == "c\n"


def test_follow_uses_the_jobs_api_websocket_with_the_token(clean_env, monkeypatch):
    """The real JobSubmissionClient.tail_job_logs against an aiohttp websocket on 127.0.0.1:
    the handshake carries the token (loopback), the chunks arrive as sent."""
    from aiohttp import web

    seen: list[str | None] = []

    async def version(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})

    async def job(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"type": "SUBMISSION", "submission_id": "j",
                                  "status": "SUCCEEDED", "entrypoint": "x"})

    async def tail(request):
        seen.append(request.headers.get("Authorization"))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for chunk in ("epoch 1\n", "epoch 2\n", "Predictive parity 0.1\n"):
            await ws.send_str(chunk)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/jobs/{id}", job)
    app.router.add_get("/api/jobs/{id}/logs/tail", tail)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    try:
        got: list[str] = []
        assert submit.follow(f"http://127.0.0.1:{port}", "j", echo=got.append) == "SUCCEEDED"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert "".join(got) == "epoch 1\nepoch 2\nPredictive parity 0.1\n"
    assert seen and set(seen) == {f"Bearer {TOKEN}"}


# ----------------------------------------------------------------------------- embedded Ray


PROBE = r"""
import json, os, psutil, ray
from ray._private import ray_constants
from rayfal.ray_env import init_ray
init_ray(num_cpus=1)
node = ray._private.worker.global_worker.node
sess = node.get_session_dir_path()
procs = [psutil.Process()] + [p for p in psutil.process_iter(["cmdline"])
                              if sess in " ".join(p.info["cmdline"] or [])]
listen = {}
for p in procs:
    try:
        listen[f"{p.pid}:{p.name()}"] = [c.laddr.ip for c in p.net_connections(kind="inet")
                                         if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        pass
print(json.dumps({"node_ip": node.node_ip_address, "gcs": node.gcs_address,
                  "listen": listen, "const_restored": ray_constants.ENABLE_RAY_CLUSTER,
                  "env": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}))
ray.shutdown()
"""


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["node_ip"] == "127.0.0.1" and out["gcs"].startswith("127.0.0.1:")
    names = " ".join(out["listen"])
    assert "gcs_server" in names and "raylet" in names
    ips = {ip for ips in out["listen"].values() for ip in ips}
    assert ips and ips <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, out["listen"]
    assert out["const_restored"] is True and out["env"] is None  # later clusters unaffected


# ----------------------------------------------------------------------------- GPU paths


def test_a_scorer_asked_for_a_gpu_fails_loudly_without_one(monkeypatch):
    import torch

    from rayfal.scoring.per_row import GpuMissingError, PoolScorer, scoring_device
    from rayfal.scoring.two_pass import JinScorer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scoring_device(False) == torch.device("cpu")
    with pytest.raises(GpuMissingError, match="refusing to fall back to the CPU"):
        scoring_device(True)
    # the check comes first: no object refs are touched (these are dummies)
    with pytest.raises(GpuMissingError, match="gpus_per_actor"):
        PoolScorer(strategy="bald", strategy_params={}, seed=0, round=0, labelled_ref=None,
                   model_ref=None, feature_column="x", input_shape=(2,), mc_samples=2,
                   threads=1, use_gpu=True)
    with pytest.raises(GpuMissingError):
        JinScorer(labelled_ref=None, models_ref=None, worst_group=None, attack={}, seed=0,
                  feature_column="x", input_shape=(2,), threads=1, use_gpu=True)


def test_model_device_and_no_hard_coded_cuda():
    import torch

    from rayfal.models.predict import model_device

    class Wrapped(torch.nn.Module):  # a DDP-like wrapper
        def __init__(self) -> None:
            super().__init__()
            self.module = torch.nn.Linear(2, 2)

    assert model_device(Wrapped()) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    for rel in ("rayfal/evaluation.py", "rayfal/attacks.py", "rayfal/models/predict.py",
                "rayfal/scoring/per_row.py", "rayfal/scoring/two_pass.py"):
        src = (ROOT / rel).read_text()
        assert '"cuda" if' not in src and "'cuda' if" not in src, rel
        assert ".cuda()" not in src, rel


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluation_and_pgd_run_on_the_models_gpu():  # pragma: no cover - GPU machines only
    import numpy as np
    import torch

    from rayfal.attacks import AttackSpec, pgd
    from rayfal.evaluation import evaluate_robust
    from rayfal.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, hidden=16, dropout=0.2)
    x = torch.rand(64, 6)
    y = np.arange(64) % 3
    group = np.arange(64) % 2
    attack = AttackSpec(eps=0.05, alpha=0.02, steps=3, clamp=None)
    cpu = evaluate_robust(model, x, y, group, attack=attack, row_keys=np.arange(64))
    gpu = evaluate_robust(model.cuda(), x, y, group, attack=attack, row_keys=np.arange(64))
    assert cpu.keys() == gpu.keys()
    adv = pgd(model, x, torch.as_tensor(y), eps=0.05, alpha=0.02, steps=2, clamp=None)
    assert adv.device.type == "cuda"


def test_gpu_quickstart_is_the_quickstart_on_gpus():
    from rayfal.config import load_job

    _, gpu = load_job(ROOT / "jobs/gpu_quickstart.yaml", [])
    _, cpu = load_job(ROOT / "jobs/quickstart.yaml", [])
    assert gpu["training"]["use_gpu"] is True and gpu["training"]["num_workers"] >= 1
    assert gpu["scoring"]["gpus_per_actor"] > 0
    for section in ("dataset", "model", "al", "evaluation", "campaigns", "seeds"):
        assert gpu[section] == cpu[section], section
    keep = {"use_gpu", "num_workers", "cpus_per_worker"}
    assert {k: v for k, v in gpu["training"].items() if k not in keep} == \
        {k: v for k, v in cpu["training"].items() if k not in keep}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_gpu_check_fails_clearly_without_a_gpu():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no GPU" in proc.stderr and "--cpu-dry-run" in proc.stderr


@pytest.mark.ray
@pytest.mark.timeout(280)
def test_gpu_check_cpu_dry_run(tmp_path):
    """The script's code paths (Ray Train, a scoring actor, JIN's actor, evaluate_robust) on
    the CPU; the GPU numbers themselves need a GPU machine."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHON=sys.executable, GPU_CHECK_TIMEOUT_S="270")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--cpu-dry-run",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=280, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "DRY RUN" in proc.stdout and "gpu_check: OK" in proc.stdout
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["dry_run"] is True
    paths = {r["path"] for r in result["paths"]}
    assert paths == {"train", "score", "jin", "pgd"}
    assert all(r["n"] > 0 and r["per_s"] > 0 for r in result["paths"])
