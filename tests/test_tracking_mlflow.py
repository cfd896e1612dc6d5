"""MLflow tracking (rayfal/tracking/mlflow.py) against a real local MLflow tracking store: an
SQLite database and an artefact folder under tmp_path, read back with MLflow's own client (no
mock, no server). A 2-round campaign of jobs/tiny.yaml end to end, then ``resume=True`` logs
nothing twice; the flattening/skipping helpers, resume after a crash, variants and the Tune
nesting on hand-made round records (no Ray)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import rayfal
from rayfal.config import ConfigError
from rayfal.tracking import MlflowTracker, TuneTracking, flatten_params, record_metrics
from rayfal.tracking.mlflow import default_artifact_location, mlflow_key

ROOT = Path(__file__).resolve().parents[1]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str, kind: str | None = None) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    flt = f"tags.`rayfal.kind` = '{kind}'" if kind else ""
    return list(client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000))


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


# ----------------------------------------------------------------------------- pure helpers


def test_flatten_params_dotted_lists_and_limits() -> None:
    job = {"name": "tiny", "seeds": [0, 1], "al": {"query_size": 10, "max_frac": None},
           "model": {"kwargs": {}, "target": None},
           "campaigns": [{"strategy": "random", "params": {}},
                         {"strategy": "bald", "params": {"eps": 0.1}}],
           "scoring": {"actor_resources": {"my res!": 1.0}},
           "tune": {"space": {"training.lr": {"loguniform": [1e-4, 1e-2]}}},
           "long": "x" * 7000, "k" * 300: 1, "use_gpu": False}
    p = flatten_params(job)
    assert p["al.query_size"] == "10" and p["al.max_frac"] == "None"
    assert p["seeds"] == "[0, 1]" and p["name"] == "tiny" and p["use_gpu"] == "False"
    assert p["model.kwargs"] == "{}" and p["model.target"] == "None"
    assert p["campaigns.0.strategy"] == "random" and p["campaigns.1.params.eps"] == "0.1"
    assert p["campaigns.0.params"] == "{}"
    assert p["scoring.actor_resources.my res_"] == "1.0"  # '!' is not allowed in MLflow names
    assert p["tune.space.training.lr.loguniform"] == "[0.0001, 0.01]"
    assert len(p["long"]) == 6000 and p["long"].endswith("...")
    long_keys = [k for k in p if k.startswith("kkk")]
    assert len(long_keys) == 1 and len(long_keys[0]) <= 250
    assert all(v is not None and isinstance(v, str) for v in p.values())
    assert flatten_params({"a": 1}, prefix="campaign") == {"campaign.a": "1"}


def test_mlflow_key_is_valid_for_mlflow() -> None:
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    for raw in ["al.query_size", "a:b", "../x", "/abs", "a//b", "é ü", "x" * 400, "", "a/./b"]:
        key = mlflow_key(raw)
        assert validate_param_and_metric_name(key) and not path_not_unique(key), (raw, key)
        assert len(key) <= 250


def test_record_metrics_skips_nan_inf_lists_strings_and_seed() -> None:
    rec = {"campaign": "bald", "strategy": "bald", "mode": "standard", "seed": 3, "round": 1,
           "n_labelled": 30, "accuracy": np.float64(0.75), "n_queried": np.int64(10),
           "predictive_parity": float("nan"), "score_seconds": float("inf"),
           "neg": -float("inf"), "flag": True, "selected": [1, 2], "selected_labels": [0, 1],
           "frac_labelled": 0.075}
    m = record_metrics(rec)
    assert m == {"round": 1.0, "n_labelled": 30.0, "accuracy": 0.75, "n_queried": 10.0,
                 "flag": 1.0, "frac_labelled": 0.075}
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())


def test_default_artifact_location_next_to_the_database(tmp_path: Path) -> None:
    assert default_artifact_location(f"sqlite:///{tmp_path}/db/m.db") == \
        (tmp_path / "db" / "mlartifacts").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000") is None
    assert default_artifact_location("file:///tmp/mlruns") is None


@pytest.mark.parametrize("uri, fragment", [
    ("postgres://db/x", "not an MLflow tracking URI"),
    ("mlruns", "not an MLflow tracking URI"),
    ("sqlite://m.db", "names a database file"),
    ("sqlite:///", "names a database file"),
    ("https://", "needs a host"),
    ("file:///tmp/mlruns", "set MLFLOW_ALLOW_FILE_STORE=true"),
])
def test_tracking_uri_checked_at_load(uri: str, fragment: str, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=fragment) as info:
        rayfal.load_job(ROOT / "jobs" / "tiny.yaml", overrides=[f"tracking.mlflow.uri={uri}"])
    assert "tracking.mlflow.uri" in str(info.value)


def test_tracking_config_defaults(tmp_path: Path, monkeypatch) -> None:
    job = rayfal.load_job(ROOT / "jobs" / "tiny.yaml")
    assert job.config.tracking is None and job.resolved["tracking"] is None
    job = rayfal.load_job(ROOT / "jobs" / "tiny.yaml",
                          overrides=[f"tracking.mlflow.uri={_uri(tmp_path)}"])
    ml = job.config.tracking.mlflow
    assert (ml.uri, ml.experiment, ml.run_name_prefix) == (_uri(tmp_path), None, None)
    for uri in ("http://127.0.0.1:5000", "https://mlflow.example/x"):
        job = rayfal.load_job(ROOT / "jobs" / "tiny.yaml", overrides=[f"tracking.mlflow.uri={uri}"])
        assert job.config.tracking.mlflow.uri == uri
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    job = rayfal.load_job(ROOT / "jobs" / "tiny.yaml",
                          overrides=["tracking.mlflow.uri=file:///tmp/mlruns"])
    assert job.config.tracking.mlflow.uri == "file:///tmp/mlruns"
    with pytest.raises(ConfigError, match="tracking.mlflow.uri: required"):
        rayfal.load_job(ROOT / "jobs" / "tiny.yaml", overrides=["tracking.mlflow.experiment=x"])


# ----------------------------------------------------------------------------- tracker, no Ray


def _record(campaign: str, seed: int, r: int, *, strategy: str | None = None) -> dict:
    return {"scenario": "sensitive_attribute", "campaign": campaign,
            "strategy": strategy or campaign, "mode": "standard", "seed": seed, "round": r,
            "n_labelled": 20 + 10 * r, "accuracy": 0.5 + 0.1 * r,
            "predictive_parity": float("nan") if r == 0 else 0.1, "selected": [r, r + 1],
            "selected_labels": [0, 1]}


JOB = {"name": "hand", "seeds": [0], "al": {"query_size": 10},
       "campaigns": [{"strategy": "random", "label": None, "params": {}, "training": {}},
                     {"strategy": "bald", "label": "bald_x", "params": {"k": 3},
                      "training": {"epochs": 1}}]}


def test_tracker_resume_after_a_crash_logs_nothing_twice(tmp_path: Path) -> None:
    uri, run_dir = _uri(tmp_path), tmp_path / "run"
    t = MlflowTracker(uri, "hand", JOB, run_dir, run_name_prefix="p-")
    for r in (0, 1):
        t.on_round(_record("random", 0, r))
    t.on_round(_record("bald_x", 0, 0, strategy="bald"))
    t.finish(None, status="FAILED")  # the job died here
    t.finish(None)  # a second finish does nothing
    client = _client(uri)
    assert {r.info.status for r in _runs(client, "hand")} == {"FAILED"}

    # --resume: the recovered rounds are replayed, then the missing ones come
    t2 = MlflowTracker(uri, "hand", {**JOB, "ray": {"address": "auto"}}, run_dir,
                       run_name_prefix="p-")
    logged = [t2.log_record(_record("random", 0, r)) for r in (0, 1, 2)]
    assert logged == [False, False, True]
    for r in (0, 1, 2):
        t2.on_round(_record("bald_x", 0, r, strategy="bald"))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "table1.md").write_text("| a |\n")
    t2.finish(tmp_path / "report")

    campaigns = {r.data.tags["campaign"]: r for r in _runs(client, "hand", "campaign")}
    assert sorted(campaigns) == ["bald_x", "random"]
    (job_run,) = _runs(client, "hand", "job")
    assert job_run.info.run_name == "p-hand" and job_run.info.status == "FINISHED"
    assert job_run.data.params["al.query_size"] == "10"
    assert job_run.data.params["ray.address"] == "auto"  # a new param is added on resume
    assert [f.path for f in client.list_artifacts(job_run.info.run_id, "report")] == \
        ["report/table1.md"]
    for name, run in campaigns.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"p-{name}/seed_0"
        assert run.data.tags["mlflow.parentRunId"] == job_run.info.run_id
        assert run.data.tags["run_dir"] == str(run_dir.resolve())
        assert _steps(client, run.info.run_id, "accuracy") == [20, 30, 40]
        assert _steps(client, run.info.run_id, "round") == [20, 30, 40]
        assert _steps(client, run.info.run_id, "predictive_parity") == [30, 40]  # NaN skipped
        assert "selected" not in run.data.metrics and "seed" not in run.data.metrics
    bald = campaigns["bald_x"].data
    assert bald.tags["strategy"] == "bald" and bald.tags["seed"] == "0"
    assert bald.params["campaign.strategy"] == "bald"
    assert bald.params["campaign.params.k"] == "3"
    assert bald.params["campaign.training.epochs"] == "1"
    assert bald.params["campaigns.1.label"] == "bald_x"


def test_tracker_variants_and_experiment_reuse(tmp_path: Path) -> None:
    uri = _uri(tmp_path)
    t = MlflowTracker(uri, "exp", JOB, tmp_path / "run")
    for variant in ("a", "b"):
        cb = t.callback(variant, {**JOB, "al": {"query_size": 5}}, tmp_path / "run" / variant)
        cb(_record("random", 0, 0))
    t.finish(None)
    client = _client(uri)
    runs = _runs(client, "exp", "campaign")
    assert sorted(r.data.tags["variant"] for r in runs) == ["a", "b"]
    assert sorted(r.info.run_name for r in runs) == ["a/random/seed_0", "b/random/seed_0"]
    assert {r.data.params["al.query_size"] for r in runs} == {"5"}
    # a second job in the same experiment (another run dir) gets its own runs
    t2 = MlflowTracker(uri, "exp", JOB, tmp_path / "other")
    t2.on_round(_record("random", 0, 0))
    t2.finish(None)
    assert len(_runs(client, "exp", "job")) == 2 and len(_runs(client, "exp", "campaign")) == 3
    art = client.get_experiment_by_name("exp").artifact_location
    assert art == (tmp_path / "mlflow" / "mlartifacts").as_uri()


def test_tune_trials_nested_under_the_tuning_run(tmp_path: Path) -> None:
    import pickle

    uri = _uri(tmp_path)
    tracking = TuneTracking(uri, "tune", JOB, tmp_path / "tune")
    tracking = pickle.loads(pickle.dumps(tracking))  # as the trials' tasks get it
    for n, rounds in ((0, 3), (1, 1)):  # trial 1 is stopped (ASHA) after one round
        trial_job = {**JOB, "training": {"lr": 10.0 ** -(n + 2)}}
        tr = tracking.trial_tracker(trial_job, tmp_path / "tune" / "trials" / f"trial_000{n}")
        for r in range(rounds):
            tr.on_round(_record("random", 0, r))
        if n == 0:
            tr.finish(None)
    driver = TuneTracking(uri, "tune", JOB, tmp_path / "tune")  # found again, not duplicated
    assert driver.parent_run_id == tracking.parent_run_id
    driver.finish(None)
    client = _client(uri)
    (parent,) = _runs(client, "tune", "tune")
    trials = {r.data.tags["trial"]: r for r in _runs(client, "tune", "trial")}
    assert parent.info.status == "FINISHED"
    assert {t: r.info.status for t, r in trials.items()} == {"trial_0000": "FINISHED",
                                                             "trial_0001": "KILLED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials.values()} == {parent.info.run_id}
    assert trials["trial_0001"].data.params["training.lr"] == "0.001"
    camp = {r.data.tags["trial"]: r for r in _runs(client, "tune", "campaign")}
    assert camp["trial_0001"].info.status == "KILLED"
    assert camp["trial_0000"].info.run_name == "trial_0000/random/seed_0"
    for t, r in camp.items():
        assert r.data.tags["mlflow.parentRunId"] == trials[t].info.run_id
    assert _steps(client, camp["trial_0000"].info.run_id, "accuracy") == [20, 30, 40]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_two_round_campaign_read_back_from_mlflow(ray_session, tmp_path: Path) -> None:
    uri = _uri(tmp_path)
    job = rayfal.load_job(ROOT / "jobs" / "tiny.yaml", overrides=[f"tracking.mlflow.uri={uri}"])
    run_dir = tmp_path / "run"
    result = rayfal.run(job, run_dir, progress=False)
    client = _client(uri)

    def check() -> dict:
        runs = _runs(client, "tiny", "campaign")
        assert len(runs) == 2, [r.info.run_name for r in runs]
        (job_run,) = _runs(client, "tiny", "job")
        assert len(_runs(client, "tiny")) == 3
        assert job_run.info.status == "FINISHED"
        arts = {f.path for f in client.list_artifacts(job_run.info.run_id, "report")}
        assert {"report/table1.md", "report/curves.png"} <= arts, arts
        out = {}
        for run in runs:
            tags, rid = run.data.tags, run.info.run_id
            assert run.info.status == "FINISHED"
            assert tags["mlflow.parentRunId"] == job_run.info.run_id
            assert tags["run_dir"] == str(run_dir.resolve()) and tags["seed"] == "0"
            assert tags["mode"] == "standard" and tags["strategy"] == tags["campaign"]
            assert run.data.params["al.query_size"] == "10"
            assert run.data.params["tracking.mlflow.uri"] == uri
            assert run.data.params["campaign.strategy"] == tags["campaign"]
            recs = result.records[result.records["campaign"] == tags["campaign"]]
            hist = sorted(client.get_metric_history(rid, "accuracy"), key=lambda m: m.step)
            assert [m.step for m in hist] == [20, 30, 40] == recs["n_labelled"].tolist()
            assert np.allclose([m.value for m in hist], recs["accuracy"].to_numpy())
            assert _steps(client, rid, "train_seconds") == [20, 30, 40]
            out[tags["campaign"]] = (rid, sorted(run.data.metrics))
        assert sorted(out) == ["bald", "random"]
        return out

    first = check()
    rayfal.run(job, run_dir, progress=False, resume=True)  # replays the recovered records
    assert check() == first  # same runs, same metrics, no step logged twice
