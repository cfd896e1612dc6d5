"""Label Studio: the task/export formats (no server) and the client against a real server.

The real-server test runs only where ``RAYFAL_LABEL_STUDIO_BIN`` names a ``label-studio``
executable (``make test-labelstudio`` installs one in ``.venv-labelstudio`` and sets it). It
starts Label Studio on 127.0.0.1 with its SQLite default and every file under the test's tmp
dir, labels through the REST API as an annotator would, and stops the server at the end.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from rayfal.labelling.label_studio import (
    Annotation,
    LabelStudioAPIError,
    LabelStudioClient,
    LabelStudioConnectionError,
    annotations_by_annotator,
    batch_to_tasks,
    label_config,
    labels_for_rows,
    parse_export,
    tasks_to_json,
)

CLASSES = ["circle", "square", "triangle"]


def _glyphs(n: int, size: int = 8, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)


def _decode_png(uri: str) -> np.ndarray:
    from PIL import Image

    head, b64 = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _batch(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"row_id": np.arange(10, 10 + n, dtype=np.int64),
                         "group": np.arange(n) % 2,
                         "score": np.linspace(1.0, 0.5, n),
                         "rank": np.arange(1, n + 1)})


def _task(task_id, row_id, *anns, data=None):
    return {"id": task_id, "data": data if data is not None else {"row_id": row_id, "image": "x"},
            "annotations": list(anns)}


def _ann(ann_id, choice, *, user=1, cancelled=False, created="2026-01-01T00:00:00Z"):
    result = [] if choice is None else [{
        "from_name": "label", "to_name": "image", "type": "choices",
        "value": {"choices": choice if isinstance(choice, list) else [choice]}}]
    return {"id": ann_id, "completed_by": user, "result": result, "was_cancelled": cancelled,
            "created_at": created}


# ------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------


def test_image_batch_inlines_png_and_keeps_ids():
    imgs = _glyphs(3)
    tasks = batch_to_tasks(_batch(), kind="image", images=imgs)
    assert [t["data"]["row_id"] for t in tasks] == [10, 11, 12]
    assert [t["data"]["group"] for t in tasks] == [0, 1, 0]
    assert [t["data"]["rank"] for t in tasks] == [1, 2, 3]
    assert tasks[0]["data"]["score"] == pytest.approx(1.0)
    for t, img in zip(tasks, imgs, strict=True):
        np.testing.assert_array_equal(_decode_png(t["data"]["image"]), img[..., 0])
    text = tasks_to_json(tasks)
    assert json.loads(text) == tasks
    assert isinstance(tasks[0]["data"]["row_id"], int)  # plain ints, not numpy


def test_image_batch_flat_pixels_bytes_and_rgb():
    rgb = _glyphs(2, size=4, channels=3)
    flat = {"row_id": np.array([1, 2]), "image": rgb.reshape(2, -1)}
    tasks = batch_to_tasks(flat, kind="image", image_shape=(4, 4, 3))
    np.testing.assert_array_equal(_decode_png(tasks[1]["data"]["image"]), rgb[1])
    with pytest.raises(ValueError, match="image_shape"):
        batch_to_tasks(flat, kind="image")

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb[0]).save(buf, format="PNG")
    df = pd.DataFrame({"row_id": [7, 8], "image": [buf.getvalue(), b"not an image"]})
    with pytest.raises(ValueError, match="row_id 8"):
        batch_to_tasks(df, kind="image")
    ok = batch_to_tasks(df.iloc[:1], kind="image")
    assert ok[0]["data"]["image"].startswith("data:image/png;base64,")


def test_image_batch_uris():
    df = pd.DataFrame({"row_id": [1, 2, 3],
                       "image_uri": ["https://example.org/a.png", "s3://bucket/b.png",
                                     "/srv/images/c d.png"]})
    with pytest.raises(ValueError, match="row_id 3.*local path"):
        batch_to_tasks(df, kind="image")
    tasks = batch_to_tasks(df, kind="image", local_files_root="/srv")
    assert [t["data"]["image"] for t in tasks] == [
        "https://example.org/a.png", "s3://bucket/b.png", "/data/local-files/?d=images/c%20d.png"]
    assert "image_uri" not in tasks[0]["data"]
    with pytest.raises(ValueError, match="row_id 3.*not under"):
        batch_to_tasks(df, kind="image", local_files_root="/elsewhere")


def test_tabular_batch_as_text():
    rows = {"row_id": np.array([5, 6]), "group": np.array([1, 0]),
            "score": np.array([np.nan, 0.25]),
            "features": np.array([[1.0, -0.5, 1e-7], [2.0, 3.25, 100.0]], np.float32)}
    tasks = batch_to_tasks(rows, kind="text")
    assert tasks[0]["data"]["text"] == "f0=1, f1=-0.5, f2=1e-07"
    assert tasks[1]["data"]["text"] == "f0=2, f1=3.25, f2=100"
    assert tasks[0]["data"]["score"] is None  # NaN is not JSON
    tasks_to_json(tasks)  # allow_nan=False would raise on a NaN left in
    named = batch_to_tasks(rows, kind="text", feature_names=["age", "hours", "gain"])
    assert named[1]["data"]["text"] == "age=2, hours=3.25, gain=100"
    rows["features"][1, 0] = np.nan
    with pytest.raises(ValueError, match="row_id 6"):
        batch_to_tasks(rows, kind="text")


def test_bad_batches_are_named():
    with pytest.raises(ValueError, match="repeated row_id 3"):
        batch_to_tasks({"row_id": np.array([3, 3]), "text": ["a", "b"]}, kind="text")
    with pytest.raises(ValueError, match="no row_id"):
        batch_to_tasks({"text": ["a"]}, kind="text")
    with pytest.raises(ValueError, match="'features' or 'text'"):
        batch_to_tasks({"row_id": np.array([1])}, kind="text")
    with pytest.raises(ValueError, match="kind must be"):
        batch_to_tasks({"row_id": np.array([1])}, kind="audio")
    with pytest.raises(ValueError, match="2 images for 3 rows"):
        batch_to_tasks(_batch(), kind="image", images=_glyphs(2))


def test_label_config_lists_classes_in_order():
    cfg = label_config(["a&b", 'say "hi"', "c"], kind="text")
    assert '<Text name="text" value="$text"' in cfg
    assert 'toName="text"' in cfg and 'name="label"' in cfg
    assert cfg.index("a&amp;b") < cfg.index("say &quot;hi&quot;") < cfg.index('"c"')
    with pytest.raises(ValueError, match="repeated class"):
        label_config(["a", "a"], kind="image")


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------


def test_parse_export_known_answers():
    export = [
        _task(1, 10, _ann(100, "square", user={"id": 1, "email": "ann@x.org"})),
        _task(2, 11, _ann(101, None)),  # empty: nothing chosen
        _task(3, 12, _ann(102, "circle", cancelled=True)),  # skipped
        _task(4, 13, _ann(103, "triangle", user=2), _ann(104, "triangle", user=1)),
        _task(5, 14),  # not annotated yet
        {"id": 6, "data": {"row_id": 15}},  # exported with all tasks, no annotations key
    ]
    anns = parse_export(json.dumps(export), CLASSES, users={1: "ann@x.org"})
    assert [(a.row_id, a.label, a.annotator, a.task_id) for a in anns] == [
        (10, 1, "ann@x.org", 1), (13, 2, "user-2", 4), (13, 2, "ann@x.org", 4)]
    assert anns[0] == Annotation(10, 1, "ann@x.org", "2026-01-01T00:00:00Z", 1, 100)
    assert parse_export(json.dumps(export).encode(), CLASSES)[1].annotator == "user-2"
    by = annotations_by_annotator(anns)
    assert {k: (v[0].tolist(), v[1].tolist()) for k, v in by.items()} == {
        "ann@x.org": ([10, 13], [1, 2]), "user-2": ([13], [2])}
    ids, labels = labels_for_rows(anns, [14, 13, 10])
    assert ids.tolist() == [13, 10] and labels.tolist() == [2, 1]


def test_parse_export_other_controls_and_string_row_ids():
    comment = {"from_name": "note", "to_name": "image", "type": "textarea",
               "value": {"text": ["blurry"]}}
    ann = _ann(1, "circle")
    ann["result"].append(comment)
    anns = parse_export([_task(9, None, ann, data={"row_id": "42"})], CLASSES)
    assert [(a.row_id, a.label) for a in anns] == [(42, 0)]


def test_parse_export_rejects_bad_entries_naming_ids():
    export = [
        _task(1, 10, _ann(100, "dog")),
        _task(2, None, _ann(101, "circle"), data={"image": "x"}),
        _task(3, 12, _ann(102, ["circle", "square"])),
        _task(4, 13, _ann(103, "circle")),  # fine, but the whole export is refused
        "junk",
    ]
    with pytest.raises(ValueError) as err:
        parse_export(export, CLASSES)
    msg = str(err.value)
    assert "4 unreadable" in msg
    assert "task 1 (row_id 10): unknown class 'dog'" in msg
    assert "task 2: no integer data.row_id" in msg
    assert "task 3 (row_id 12)" in msg and "2 classes" in msg
    assert "entry 5 is not a task" in msg
    assert "\n" not in msg
    with pytest.raises(ValueError, match="not JSON"):
        parse_export("[{", CLASSES)
    with pytest.raises(ValueError, match="list of tasks"):
        parse_export("3", CLASSES)


def test_disagreeing_annotators_are_an_error_for_the_oracle():
    anns = parse_export([_task(1, 10, _ann(1, "circle", user=1), _ann(2, "square", user=2))],
                        CLASSES)
    with pytest.raises(ValueError, match=r"row_id 10: labels \[0, 1\]"):
        labels_for_rows(anns, [10])
    # the same annotator changing their mind: the later annotation counts
    later = parse_export([_task(1, 10, _ann(1, "circle", created="2026-01-01"),
                                _ann(2, "square", created="2026-01-02"))], CLASSES)
    assert labels_for_rows(later, [10])[1].tolist() == [1]


def test_hand_made_project_with_another_control_name():
    ann = _ann(1, "square")
    ann["result"][0]["from_name"] = "shape"
    assert [a.label for a in parse_export([_task(1, 10, ann)], CLASSES)] == [1]
    # where our control is there, other choice controls (e.g. a quality flag) are not the label
    both = _ann(2, "circle")
    both["result"].append({"from_name": "quality", "to_name": "image", "type": "choices",
                           "value": {"choices": ["blurry"]}})
    assert [a.label for a in parse_export([_task(1, 10, both)], CLASSES)] == [0]


def test_key_kinds():
    jwt = ".".join(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
                   for p in ({"alg": "HS256", "typ": "JWT"}, {"token_type": "refresh"}))
    assert LabelStudioClient("http://127.0.0.1:1", jwt + ".c2ln").auth_scheme == (
        "personal-access-token")
    assert LabelStudioClient("http://127.0.0.1:1", "ab" * 20).auth_scheme == "legacy-token"
    with pytest.raises(ValueError, match="empty API key"):
        LabelStudioClient("http://127.0.0.1:1", " ")


def test_client_errors_name_url_not_key():
    with pytest.raises(ValueError, match="http"):
        LabelStudioClient("localhost:8080", "k")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "0123456789abcdef0123456789abcdef01234567"
    client = LabelStudioClient(f"http://127.0.0.1:{port}", key, timeout=5)
    with pytest.raises(LabelStudioConnectionError) as err:
        client.version()
    assert f"127.0.0.1:{port}" in str(err.value) and "GET /api/version" in str(err.value)
    assert key not in str(err.value)
    assert isinstance(err.value, ConnectionError)
    pat = ".".join(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
                   for p in ({"alg": "HS256"}, {"jti": "x"}, {"sig": 1}))
    with pytest.raises(LabelStudioConnectionError, match="POST /api/token/refresh/") as err:
        LabelStudioClient(f"http://127.0.0.1:{port}", pat, timeout=5).version()
    assert pat not in str(err.value)


# ------------------------------------------------------------------------------------------
# a real Label Studio server
# ------------------------------------------------------------------------------------------

LS_BIN = os.path.abspath(os.environ["RAYFAL_LABEL_STUDIO_BIN"]) if os.environ.get(
    "RAYFAL_LABEL_STUDIO_BIN") else ""
needs_server = pytest.mark.skipif(
    not (LS_BIN and os.path.isfile(LS_BIN) and os.access(LS_BIN, os.X_OK)),
    reason="RAYFAL_LABEL_STUDIO_BIN does not name a label-studio executable "
           "(make test-labelstudio)")
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group, then kill it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A Label Studio server on 127.0.0.1 (SQLite, all files in the tmp dir): yields
    ``(url, legacy token, admin email, start-up seconds)``."""
    import requests

    root = tmp_path_factory.mktemp("label-studio")
    data, home = root / "data", root / "home"
    home.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    email, token = "annotator@example.org", secrets.token_hex(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO"))}
    env.update({
        "HOME": str(home), "XDG_DATA_HOME": str(home / "share"),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "PYTHONUNBUFFERED": "1",
        # Label Studio runs `git describe --dirty` in its package dir, which lies inside this
        # repository when .venv-labelstudio does: keep git (and its index refresh) out of it
        "GIT_DIR": str(root / "no-git"), "GIT_CEILING_DIRECTORIES": str(root),
    })
    cmd = [LS_BIN, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--host", url, "--data-dir", str(data), "--username", email,
           "--password", secrets.token_urlsafe(12), "--user-token", token,
           "--enable-legacy-api-token", "--log-level", "WARNING"]
    log_path = root / "server.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode}:\n"
                            + log_path.read_text(errors="replace")[-3000:])
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"label-studio did not answer {url}/health within "
                            f"{START_TIMEOUT_S} s:\n"
                            + log_path.read_text(errors="replace")[-3000:])
            time.sleep(1.0)
        startup = time.monotonic() - t0
        print(f"\nlabel-studio up at {url} after {startup:.1f} s")
        yield url, token, email, startup
    finally:
        _stop(proc)
        assert proc.poll() is not None


def _post_annotation(url: str, token: str, task_id: int, choice: str | None,
                     cancelled: bool = False) -> dict:
    """What the labelling UI sends when an annotator submits (or skips) a task."""
    import requests

    result = [] if choice is None else [{
        "from_name": "label", "to_name": "image", "type": "choices", "origin": "manual",
        "value": {"choices": [choice]}}]
    resp = requests.post(f"{url}/api/tasks/{task_id}/annotations/",
                         headers={"Authorization": f"Token {token}"}, timeout=30,
                         json={"result": result, "was_cancelled": cancelled,
                               "ground_truth": False, "lead_time": 2.5})
    assert resp.status_code == 201, resp.text
    return resp.json()


@needs_server
@pytest.mark.timeout(600)
def test_real_server_round_trip(label_studio):
    import requests

    url, token, email, _ = label_studio
    t0 = time.monotonic()
    legacy = LabelStudioClient(url, token)
    assert legacy.auth_scheme == "legacy-token"
    version = legacy.version()
    assert version[0].isdigit(), version
    print(f"label-studio version {version}")

    # a personal access token (JWT), as the UI creates it: the client refreshes it itself
    resp = requests.post(f"{url}/api/token/", headers={"Authorization": f"Token {token}"},
                         timeout=30)
    assert resp.status_code == 201, resp.text
    pat = resp.json()["token"]
    client = LabelStudioClient(url, pat)
    assert client.auth_scheme == "personal-access-token"
    assert client.whoami()["email"] == email

    pid = client.ensure_project("rayfal glyphs s0", CLASSES, kind="image")
    assert legacy.ensure_project("rayfal glyphs s0", CLASSES, kind="image") == pid
    with pytest.raises(ValueError, match=f"project {pid}"):
        client.ensure_project("rayfal glyphs s0", CLASSES[:2], kind="image")
    assert client.ensure_project("rayfal glyphs", CLASSES, kind="image") != pid  # exact title

    tasks = batch_to_tasks(_batch(5), kind="image", images=_glyphs(5))
    first = client.import_tasks(pid, tasks)
    assert len(set(first)) == 5
    assert client.import_tasks(pid, tasks) == first  # nothing new
    assert client.import_tasks(pid, tasks[3:] + tasks[:1]) == first[3:] + first[:1]
    assert client.task_ids(pid) == {10 + i: first[i] for i in range(5)}
    assert client.annotations(pid, CLASSES) == []  # nobody has labelled yet

    # an annotator labels three rows and skips a fourth
    answers = {0: "triangle", 2: "circle", 4: "square"}
    for i, choice in answers.items():
        _post_annotation(url, token, first[i], choice)
    _post_annotation(url, token, first[1], None, cancelled=True)

    anns = client.annotations(pid, CLASSES)
    assert sorted((a.row_id, a.label) for a in anns) == [(10, 2), (12, 0), (14, 1)]
    assert {a.annotator for a in anns} == {email}
    assert {a.row_id: a.task_id for a in anns} == {10: first[0], 12: first[2], 14: first[4]}
    assert all(a.created_at for a in anns)
    ids, labels = labels_for_rows(anns, np.arange(10, 15))
    assert ids.tolist() == [10, 12, 14] and labels.tolist() == [2, 0, 1]
    # Label Studio's own JSON export (what a team downloads and moves by hand) reads the same
    resp = requests.get(f"{url}/api/projects/{pid}/export", params={"exportType": "JSON"},
                        headers={"Authorization": f"Token {token}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert parse_export(resp.content, CLASSES, users=client.users()) == anns

    # tabular rows as text, in their own project
    tid = client.ensure_project("rayfal adult s0", ["<=50K", ">50K"], kind="text")
    rows = {"row_id": np.array([1, 2]), "group": np.array([0, 1]),
            "features": np.array([[0.5, 1.0], [2.0, -1.0]], np.float32)}
    text_ids = client.import_tasks(tid, batch_to_tasks(rows, kind="text"))
    task = requests.get(f"{url}/api/tasks/{text_ids[1]}/",
                        headers={"Authorization": f"Token {token}"}, timeout=30).json()
    assert task["data"]["text"] == "f0=2, f1=-1"

    # refusals are one line naming the URL and the server's answer, never the key
    bad = LabelStudioClient(url, "f" * 40)
    with pytest.raises(LabelStudioAPIError) as err:
        bad.ensure_project("xyz", CLASSES, kind="image")
    assert err.value.status == 401 and url in str(err.value) and "f" * 40 not in str(err.value)
    with pytest.raises(LabelStudioAPIError) as err:
        client.import_tasks(987654, tasks)
    assert err.value.status == 404 and "987654" in str(err.value) and pat not in str(err.value)

    # an organization that turned legacy tokens off: the legacy key is refused with a hint,
    # the personal access token goes on working
    resp = requests.post(f"{url}/api/jwt/settings", headers={"Authorization": f"Token {token}"},
                         json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": False},
                         timeout=30)
    assert resp.status_code in (200, 201), resp.text
    with pytest.raises(LabelStudioAPIError, match="legacy tokens are disabled") as err:
        legacy.annotations(pid, CLASSES)
    assert token not in str(err.value)
    assert len(client.annotations(pid, CLASSES)) == 3
    # leave the shared server as the module's other tests expect it: legacy tokens on again
    access = requests.post(f"{url}/api/token/refresh/", json={"refresh": pat},
                           timeout=30).json()["access"]
    resp = requests.post(f"{url}/api/jwt/settings",
                         headers={"Authorization": f"Bearer {access}"},
                         json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True},
                         timeout=30)
    assert resp.status_code in (200, 201), resp.text
    assert len(legacy.annotations(pid, CLASSES)) == 3  # the legacy key works again
    print(f"client round trip {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- a campaign


def _annotate(url: str, token: str, task_id: int, choice: str, to_name: str) -> None:
    import requests

    resp = requests.post(
        f"{url}/api/tasks/{task_id}/annotations/", timeout=30,
        headers={"Authorization": f"Token {token}"},
        json={"result": [{"from_name": "label", "to_name": to_name, "type": "choices",
                          "origin": "manual", "value": {"choices": [choice]}}],
              "was_cancelled": False, "ground_truth": False, "lead_time": 1.0})
    assert resp.status_code == 201, resp.text


@needs_server
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_campaign_labelled_in_label_studio(label_studio, ray_session, tmp_path, monkeypatch,
                                           capsys):
    """A 2-round campaign on an unlabelled pool whose batches go to a real Label Studio: the
    test labels them through the API as an annotator would, syncs, resumes, and the ledger
    ends with exactly the annotated labels (source label_studio, the annotator's email)."""
    import rayfal
    from rayfal.cli import main
    from rayfal.data.ledger import LabelLedger

    url, token, email, _ = label_studio
    monkeypatch.setenv("RAYFAL_TEST_LS_TOKEN", token)
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    g = (rng.random(n) < 0.4).astype(np.int64)
    x = (rng.normal(size=(n, 4)) + 1.5 * y[:, None]).astype(np.float32)
    truth = dict(zip(range(n), y.tolist(), strict=True))
    pool = rayfal.write_pool(tmp_path / "pool", row_id=np.arange(n), group=g, features=x)
    yt = rng.integers(0, 2, 100)
    test = rayfal.write_pool(tmp_path / "test", row_id=np.arange(1000, 1100),
                             group=(rng.random(100) < 0.4).astype(np.int64),
                             features=(rng.normal(size=(100, 4)) + 1.5 * yt[:, None]),
                             label=yt)
    job = rayfal.load_job({
        "name": "ls", "seeds": [0],
        "dataset": {"name": "parquet", "pool": str(pool), "test": str(test)},
        "model": {"name": "mlp", "hidden": 16},
        "training": {"epochs": 2, "min_steps": 20, "batch_size": 16},
        "al": {"initial_labels": 10, "query_size": 6, "rounds": 1, "max_frac": None},
        "scoring": {"mc_samples": 4}, "evaluation": {"mc_samples": 4},
        "oracle": {"kind": "label_studio", "url": url, "project": "rayfal campaign test",
                   "api_key_env": "RAYFAL_TEST_LS_TOKEN"},
        "campaigns": [{"strategy": "bald"}]})
    run = tmp_path / "run"
    client = LabelStudioClient(url, token)

    def label_everything() -> None:
        pid = client.ensure_project("rayfal campaign test", ["0", "1"], kind="text")
        done = {a.row_id for a in client.annotations(pid, ["0", "1"])}
        for row_id, task_id in client.task_ids(pid).items():
            if row_id not in done:
                _annotate(url, token, task_id, str(truth[row_id]), "text")

    out = rayfal.run(job, run, progress=False, report=False)
    assert out.awaiting and out.awaiting[0]["missing"] == 10
    label_everything()
    assert main(["labels", "sync", str(run)]) == 0  # explicit sync
    assert "10 of 10 rows labelled, 0 remaining" in capsys.readouterr().out
    out = rayfal.run(job, run, resume=True, progress=False, report=False)
    assert out.awaiting and out.awaiting[0]["missing"] == 6
    label_everything()
    out = rayfal.run(job, run, resume=True, progress=False, report=False)  # syncs by itself
    assert out.awaiting == [] and len(out.records) == 2
    ledger = LabelLedger(run / "campaigns/bald/seed_0/ledger.sqlite").to_frame()
    assert len(ledger) == 16 and ledger["round"].value_counts().to_dict() == {0: 10, 1: 6}
    assert all(truth[int(r)] == int(lab) for r, lab in zip(ledger["row_id"], ledger["label"],
                                                           strict=True))
    assert set(ledger["source"]) == {"label_studio"} and set(ledger["annotator"]) == {email}
