"""``rayfal tune`` end to end on the session's local Ray (2 CPUs, no dashboard): two concurrent
trials, each a one-round campaign trained with Ray Train inside the trial; a non-dominated
front; then a resume after an interrupted driver that neither repeats finished trials nor
loses the interrupted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rayfal.config import load_job
from rayfal.tune.pareto import non_dominated


def write_job(path: Path, data_dir: Path, num_samples: int) -> Path:
    job = {
        "tracking": {"mlflow": {"uri": f"sqlite:///{path.parent / 'mlflow.db'}",
                                "experiment": "tune_e2e"}},
        "name": "tune_e2e", "seeds": [0],
        "dataset": {"name": "glyphs", "scenario": "sensitive_attribute", "n_pool": 300,
                    "n_test": 120, "seed": 0, "shard_rows": 100, "dir": str(data_dir)},
        "model": {"name": "cnn", "width": 4, "hidden": 16},
        "training": {"mode": "grad", "mode_params": {"lam": 1.0}, "epochs": 1, "min_steps": 3},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 3, "max_frac": None},
        "scoring": {"mc_samples": 2}, "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "bald"}],
        "tune": {
            "space": {"training.mode_params.lam": "loguniform(0.01, 10)"},
            "objectives": [{"metric": "accuracy", "mode": "max"},
                           {"metric": "predictive_parity", "mode": "min"}],
            "num_samples": num_samples, "max_concurrent": 2, "rounds": 0, "seed": 3,
        },
    }
    path.write_text(yaml.safe_dump(job))
    return path


def test_tune_two_trials_front_and_resume(ray_session, glyph_data, tmp_path):
    import optuna

    from rayfal.tune.runner import run_tune
    from rayfal.tune.searcher import STUDY_NAME, DefineByRun, storage_url
    from rayfal.tune.space import validate_spec

    run_dir = tmp_path / "run"
    out = run_tune(write_job(tmp_path / "job.yaml", glyph_data, 2), run_dir, verbose=0)
    assert out["ran"] == 2 and out["concurrent"] == 2
    assert len(out["bundles"]) == 2  # trial process + the Ray Train (local mode) task
    trials = pd.read_csv(run_dir / "results" / "trials.csv")
    assert trials["status"].tolist() == ["COMPLETE", "COMPLETE"], trials
    assert trials["finished"].all() and (trials["rounds_done"] == 1).all()
    assert trials["train_workers"].eq(1).all()  # trained by Ray Train (world size 1)
    assert (run_dir / "results" / "trials.parquet").exists()
    assert (run_dir / "results" / "pareto.png").stat().st_size > 1000
    # every trial reads the data and the pretrained trunks (model.pretrained) of the search's
    # run dir, prepared once, instead of its own copy
    for trial_dir in sorted((run_dir / "trials").glob("trial_*")):
        for name in ("data", "pretrained"):
            assert (trial_dir / name).resolve() == (run_dir / name).resolve(), (trial_dir, name)

    # MLflow: the search is one run, each trial a nested run, each trial's campaign under it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tune_e2e").experiment_id])
    kinds = {r.info.run_id: r.data.tags.get("rayfal.kind") for r in runs}
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    (search,) = [i for i, k in kinds.items() if k == "tune"]
    trial_runs = [i for i, k in kinds.items() if k == "trial"]
    assert len(trial_runs) == 2 and all(parent[t] == search for t in trial_runs)
    campaign_runs = [i for i in kinds if parent[i] in trial_runs]
    assert len(campaign_runs) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    history = client.get_metric_history(campaign_runs[0], "accuracy")
    assert [m.step for m in history] == [20]  # tune.rounds: 0 -> one round of 20 labels

    # the front: non-dominated among the finished trials, and every other trial dominated
    front = pd.read_csv(run_dir / "results" / "pareto.csv")
    pts = trials[["accuracy", "predictive_parity"]].to_numpy(float)
    expect = set(trials["trial"].iloc[non_dominated(pts, ["max", "min"])])
    assert set(front["trial"]) == expect and len(expect) >= 1
    jobs = sorted((run_dir / "results").glob("pareto_*.yaml"))
    assert len(jobs) == len(front)
    cfg, _ = load_job(jobs[0])  # `rayfal run` can reuse it: full job, chosen lambda
    row = front.iloc[0]
    assert cfg.training.mode_params["lam"] == pytest.approx(row["param:training.mode_params.lam"])
    assert cfg.al.rounds == 3 and cfg.tune == {}

    # an interrupted driver leaves a RUNNING trial in the study: simulate exactly that
    storage = storage_url(run_dir)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    job_path = write_job(tmp_path / "job.yaml", glyph_data, 3)
    cfg, resolved = load_job(job_path)
    stale = study.ask()
    DefineByRun(validate_spec(cfg, resolved))(stale)
    stale_lam = stale.params["training.mode_params.lam"]
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("trials/*/campaigns/*/*/rounds/*")}
    assert len(before) == 2

    with pytest.raises(Exception, match="--resume"):
        run_tune(job_path, run_dir, verbose=0)
    out = run_tune(job_path, run_dir, resume=True, verbose=0)
    assert out["finished_before"] == 2 and out["ran"] == 1  # only the interrupted one
    after = {p: p.stat().st_mtime_ns for p in run_dir.glob("trials/*/campaigns/*/*/rounds/*")}
    assert {p: after[p] for p in before} == before  # finished trials untouched
    trials = pd.read_csv(run_dir / "results" / "trials.csv")
    assert trials["status"].tolist() == ["COMPLETE", "COMPLETE", "INTERRUPTED", "COMPLETE"]
    retry = trials.iloc[3]
    assert retry["resume_of"] == 2 and retry["trial_dir"] == "trial_0002"
    assert retry["param:training.mode_params.lam"] == pytest.approx(stale_lam)
    assert len(after) == 3
    # nothing left to do: a second resume runs no trial
    assert run_tune(job_path, run_dir, resume=True, verbose=0)["ran"] == 0
    assert np.isfinite(trials["accuracy"]).all()  # the interrupted row reads its retry's dir
