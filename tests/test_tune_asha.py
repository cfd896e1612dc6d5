"""``rayfal tune`` with one objective, ASHA and a constraint, end to end on the session's local
Ray: a trial is stopped early by ASHA, recorded as PRUNED in the Optuna study and left out of
the best trial; the constraint makes the trial with the best objective infeasible, so the best
trial is the feasible one.

The outcome is made deterministic by tuning ``al.query_size`` with ``n_labelled`` (labels after
each round: 20 + round x query_size) as the objective, and running three fixed points
(``tune.baselines``) one at a time. With 3 rounds per trial, ``grace_rounds: 1`` and
``reduction_factor: 2`` ASHA has rungs at 1 and 2 rounds done:

* trial 0, query_size 10: n_labelled 20, 30, 40 (first at every rung: continues) -> COMPLETE
* trial 1, query_size 5: 25 at rung 2 is below the cutoff 30 -> stopped, PRUNED
* trial 2, query_size 15: 35 at rung 2 beats the cutoff (median of 30, 25) -> 50, COMPLETE,
  but infeasible for ``constraint: {metric: n_labelled, max: 45}``

so the best trial is trial 0 (not trial 2, the best objective; not trial 1, stopped early).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from rayfal.config import load_job


def _job(path: Path, data_dir: Path) -> Path:
    job = {
        "name": "tune_asha", "seeds": [0],
        "dataset": {"name": "glyphs", "scenario": "sensitive_attribute", "n_pool": 300,
                    "n_test": 120, "seed": 0, "shard_rows": 100, "dir": str(data_dir)},
        "model": {"name": "cnn", "width": 4, "hidden": 16},
        "training": {"epochs": 1, "min_steps": 2},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 2, "max_frac": None},
        "scoring": {"mc_samples": 2}, "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "random"}],
        "tune": {
            "space": {"al.query_size": "choice([5, 10, 15])"},
            "objectives": [{"metric": "n_labelled", "mode": "max"}],
            "constraint": {"metric": "n_labelled", "max": 45},
            "scheduler": "asha", "grace_rounds": 1, "reduction_factor": 2,
            "baselines": [{"al.query_size": 10}, {"al.query_size": 5}, {"al.query_size": 15}],
            "num_samples": 3, "max_concurrent": 1, "seed": 0,
        },
    }
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.ray
@pytest.mark.timeout(900)  # ~1 min on an idle 2-core machine; generous under load
def test_asha_prunes_a_trial_and_the_constraint_picks_the_feasible_best(
        ray_session, glyph_data, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from rayfal.tune.runner import run_tune
    from rayfal.tune.searcher import STUDY_NAME, storage_url

    run_dir = tmp_path / "run"
    out = run_tune(_job(tmp_path / "job.yaml", glyph_data), run_dir, verbose=0)
    assert out["ran"] == 3 and out["max_rounds"] == 3 and out["concurrent"] == 1

    # the Optuna study (the record of the search) has the states and the constraint values
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_url(run_dir))
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.params["al.query_size"] for t in trials] == [10, 5, 15]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE]
    assert [t.user_attrs["rounds_done"] for t in trials] == [3, 2, 3]
    assert trials[0].value == 40 and trials[2].value == 50
    # the pruned trial's intermediate values stop at the round ASHA stopped it, and its value
    # (Optuna: the last intermediate one, which TPE ranks it by) is that round's
    assert trials[1].intermediate_values == {1: 20.0, 2: 25.0} and trials[1].value == 25
    assert [t.user_attrs["constraint"] for t in trials] == [[-5.0], [-20.0], [5.0]]
    # the pruned trial's campaign was not run on: no third round record
    rounds = sorted((run_dir / "trials" / trials[1].user_attrs["trial_dir"]).glob(
        "campaigns/*/seed_*/rounds/round_*.json"))
    assert len(rounds) == 2

    # results: the best trial is the finished, feasible one
    df = pd.read_csv(run_dir / "results" / "trials.csv")
    assert df["status"].tolist() == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert df["finished"].tolist() == [True, False, True]
    assert df["feasible"].tolist() == [True, True, False]
    assert df["n_labelled"].tolist() == [40, 25, 50]
    best = pd.read_csv(run_dir / "results" / "best.csv")
    assert best["trial"].tolist() == [0]
    cfg, _ = load_job(run_dir / "results" / "best_job.yaml")
    assert cfg.al.query_size == 10 and cfg.tune == {}


def test_the_round_that_stopped_a_trial_is_its_last_intermediate_value() -> None:
    """Ray Tune hands the result on which ASHA stops a trial to ``on_trial_complete`` only;
    the searcher reports it before telling PRUNED, so the pruned trial's Optuna value is the
    round it was stopped at (not the round before). A finished trial is COMPLETE."""
    import optuna
    from optuna.trial import TrialState

    from rayfal.config.tune_section import parse_tune
    from rayfal.tune.searcher import RayfalOptunaSearch

    spec = parse_tune({"space": {"al.query_size": "choice([5, 10])"},
                       "objectives": [{"metric": "n_labelled", "mode": "max"}],
                       "constraint": {"metric": "n_labelled", "max": 45}})
    search = RayfalOptunaSearch(spec, max_rounds=3,
                                storage=optuna.storages.InMemoryStorage())
    for tid in ("a", "b"):
        assert set(search.suggest(tid)) == {"al.query_size", "_trial_dir", "_trial_number"}
    search.on_trial_result("a", {"n_labelled": 20, "training_iteration": 1})
    search.on_trial_complete("a", {"n_labelled": 25, "training_iteration": 2, "rounds_done": 2})
    for step, n in ((1, 20), (2, 30)):
        search.on_trial_result("b", {"n_labelled": n, "training_iteration": step})
    search.on_trial_complete("b", {"n_labelled": 50, "training_iteration": 3, "rounds_done": 3})
    a, b = search.study.trials
    assert a.state == TrialState.PRUNED and a.intermediate_values == {1: 20.0, 2: 25.0}
    assert a.value == 25 and a.user_attrs["rounds_done"] == 2
    assert b.state == TrialState.COMPLETE and b.value == 50
    assert a.user_attrs["constraint"] == [-20.0] and b.user_attrs["constraint"] == [5.0]
    # Optuna's best trial: b is infeasible, and a (feasible) is PRUNED, so there is none
    with pytest.raises(ValueError, match="No feasible trials are completed"):
        search.study.best_trial  # noqa: B018
