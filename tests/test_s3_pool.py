"""Image pools in object storage, against a real S3 HTTP endpoint on 127.0.0.1.

moto's standalone server (``moto[server]``, in the dev extra) speaks the S3 API. The test
uploads a few JPEGs, indexes ``s3://bucket/tree`` with ``rayfal data index-images``, and scores
both the bucket's index and the local copy's through Ray Data (BALD, MC dropout). Credentials
and the endpoint come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``), as on a cluster; since Ray workers inherit the environment of the Ray
instance they belong to, the scoring runs in a child process with its own local Ray started
after the variables are set. Row ids hash the path relative to the root, so both indexes have
the same ids, and the scores of every row must be equal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    import moto.server  # noqa: F401  (moto[server], in the dev extra)
except ImportError:  # a skip locally; under CI=true the dev extra is installed, so fail
    from conftest import in_ci

    if in_ci():
        raise
    pytest.skip("needs moto[server] (pip install -e '.[dev]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32

CHILD = r"""
import json, logging, sys
import numpy as np, ray
from safetensors.torch import load_file, save
from rayfal.config import ScoringConfig
from rayfal.data.pool import Pool
from rayfal.scoring.per_row import score_pool

args = json.loads(sys.argv[1])
ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300_000_000,
         log_to_driver=False, logging_level=logging.WARNING)
spec = json.load(open(args["spec"]))
weights = save(load_file(args["weights"]))
out = {}
for name in ("local", "s3"):
    res = score_pool(Pool(args[name]), strategy="bald", strategy_params={}, seed=3, round=1,
                     budget=1000, labelled=np.zeros(0, np.int64), model=(spec, weights),
                     cfg=ScoringConfig(mc_samples=5, compute="actors", actors=1),
                     progress=False)
    out[name] = dict(zip(map(str, res.candidates.row_id.tolist()),
                         res.candidates.score.tolist()))
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (its own process, killed at the end)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start on {url}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(autouse=True)
def _fresh_filesystems():
    """S3 file systems are cached per process: build them from each test's environment."""
    from rayfal.data.images import _FILESYSTEMS

    _FILESYSTEMS.clear()
    yield
    _FILESYSTEMS.clear()


@pytest.mark.timeout(660)
def test_index_and_score_s3_uris_equal_local_copy(s3_endpoint, tmp_path: Path,
                                                  monkeypatch) -> None:
    import pyarrow.fs as pafs
    import torch
    from safetensors.torch import save_file

    from rayfal.cli import main as cli_main
    from rayfal.data import schema as S
    from rayfal.data.pool import Pool
    from rayfal.models import build_model
    from rayfal.models.checkpoint import model_spec

    env = {"AWS_ACCESS_KEY_ID": "rayfal-test", "AWS_SECRET_ACCESS_KEY": "rayfal-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # a local tree, uploaded as it is
    rng = np.random.default_rng(7)
    local = tmp_path / "tree"
    for i in range(12):
        d = local / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(img).save(d / f"img_{i:02d}.{'jpg' if i % 3 else 'png'}")
    host = s3_endpoint.removeprefix("http://")
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                           access_key=env["AWS_ACCESS_KEY_ID"],
                           secret_key=env["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True)
    fs.create_dir("rayfal-bucket")
    for f in sorted(local.rglob("*.*")):
        with fs.open_output_stream(f"rayfal-bucket/tree/{f.relative_to(local).as_posix()}") as o:
            o.write(f.read_bytes())
    assert cli_main(["data", "index-images", "s3://rayfal-bucket/tree", "--out",
                     str(tmp_path / "idx_s3"), "--image-size", str(SIZE)]) == 0
    assert cli_main(["data", "index-images", str(local), "--out", str(tmp_path / "idx_local"),
                     "--image-size", str(SIZE)]) == 0
    s3_pool, local_pool = Pool(tmp_path / "idx_s3"), Pool(tmp_path / "idx_local")
    s3_rows = s3_pool.read_all([S.ROW_ID, S.URI, S.LABEL])
    local_rows = local_pool.read_all([S.ROW_ID, S.URI, S.LABEL])
    assert s3_rows[S.URI].uris[0].startswith("s3://rayfal-bucket/tree/class0/")
    assert s3_rows[S.ROW_ID].tolist() == local_rows[S.ROW_ID].tolist()
    assert s3_rows[S.LABEL].tolist() == local_rows[S.LABEL].tolist()
    # decoding here (as the driver does for a test set) reads the same pixels
    np.testing.assert_array_equal(S.to_model_input(s3_rows[S.URI], s3_pool.input_shape),
                                  S.to_model_input(local_rows[S.URI], local_pool.input_shape))
    # scoring in Ray workers, which get the endpoint and credentials from the environment
    torch.manual_seed(0)
    spec = model_spec("cnn", (3, SIZE, SIZE), 2, width=4, hidden=8, dropout=0.5)
    save_file(build_model("cnn", (3, SIZE, SIZE), 2, width=4, hidden=8, dropout=0.5)
              .state_dict(), tmp_path / "w.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    args = {"local": str(tmp_path / "idx_local"), "s3": str(tmp_path / "idx_s3"),
            "spec": str(tmp_path / "spec.json"), "weights": str(tmp_path / "w.safetensors")}
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                 "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=child_env,
                          capture_output=True, text=True, timeout=560, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert len(out["s3"]) == 12 and out["s3"].keys() == out["local"].keys()
    for rid, score in out["local"].items():
        assert out["s3"][rid] == score, rid
    assert len(set(out["s3"].values())) > 1  # not all equal by construction


def test_unreachable_s3_object_is_reported(s3_endpoint, monkeypatch) -> None:
    from rayfal.data.images import ImageDecodeError, decode_uris

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rayfal-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rayfal-test-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    with pytest.raises(ImageDecodeError, match=r"row_id 42: s3://no-such-bucket/x\.jpg"):
        decode_uris(["s3://no-such-bucket/x.jpg"], (3, 8, 8), row_ids=np.array([42]))
