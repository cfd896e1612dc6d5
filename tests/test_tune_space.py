"""rayfal.tune without Ray: search-space parsing and validation, Pareto fronts, best trial,
trial jobs, study recovery after an interrupted driver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rayfal.config import ConfigError, config_from_dict
from rayfal.tune.pareto import best_index, non_dominated
from rayfal.tune.space import best_job, parse_distribution, trial_job, validate_spec


def job(**tune) -> dict:
    raw = {
        "name": "t", "seeds": [0, 1],
        "dataset": {"name": "glyphs", "n_pool": 300, "n_test": 120},
        "training": {"mode": "grad", "mode_params": {"lam": 1.0}, "epochs": 1},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 5, "max_frac": None},
        "campaigns": [{"strategy": "random"},
                      {"strategy": "bald", "label": "bald_grad",
                       "training": {"num_workers": 2}}],
        "tune": {"space": {"training.mode_params.lam": "loguniform(0.01, 10)"},
                 "objectives": [{"metric": "accuracy", "mode": "max"},
                                {"metric": "predictive_parity", "mode": "min"}],
                 **tune},
    }
    return raw


def spec_of(raw: dict):
    cfg = config_from_dict(raw)
    return validate_spec(cfg, cfg.to_dict())


@pytest.mark.parametrize("text, kind, low, high", [
    ("loguniform(0.01, 10)", "loguniform", 0.01, 10.0),
    ("uniform(1,10)", "uniform", 1.0, 10.0),
    (" int( 1 , 5 ) ", "int", 1.0, 5.0),
    ("logint(16, 256)", "logint", 16.0, 256.0),
])
def test_parse_ranges(text, kind, low, high):
    d = parse_distribution(text, "k")
    assert (d.kind, d.low, d.high) == (kind, low, high)
    assert d.contains(low) and d.contains(high) and not d.contains(high * 2)


def test_parse_choice():
    d = parse_distribution("choice([1, 3, 5])", "k")
    assert d.choices == (1, 3, 5) and d.ends() == [1, 3, 5]
    assert d.to_optuna().choices == (1, 3, 5)


@pytest.mark.parametrize("text, message", [
    ("gaussian(0, 1)", "unknown distribution 'gaussian'"),
    ("uniform(3, 1)", "low < high"),
    ("uniform(1, 1)", "low < high"),
    ("loguniform(0, 1)", "log scale"),
    ("int(1.5, 4)", "bounds must be integers"),
    ("uniform(1)", "two numbers"),
    ("uniform(a, b)", "not literals"),
    ("choice([])", "non-empty list"),
    ("choice([1, 1])", "duplicate"),
    ("loguniform(0.01", "quote it"),
    (0.5, "expected a string"),
])
def test_parse_rejects_bad_distributions(text, message):
    with pytest.raises(ConfigError, match="tune.space.training.lr") as exc:
        parse_distribution(text, "training.lr")
    assert message in str(exc.value)


@pytest.mark.parametrize("tune, message", [
    ({"space": {"training.epochz": "int(1, 3)"}}, "tune.space.training.epochz"),
    ({"space": {"training.mode_params.lambda": "uniform(0, 1)"}}, "lambda"),
    ({"space": {"training.mode_params.lam": "uniform(-1, 1)"}}, ">= 0"),
    ({"space": {"campaigns.7.params.temperature": "uniform(0.1, 1)"}}, "list index"),
    ({"space": {"seeds": "choice([0, 1])"}}, "cannot tune this key"),
    ({"objectives": [{"metric": "accuracy", "mode": "up"}]}, "mode must be"),
    ({"objectives": []}, "one or two"),
    ({"constraint": {"metric": "demographic_parity", "max": "low"}}, "tune.constraint"),
    ({"scheduler": "asha"}, "two objectives"),
    ({"num_samples": 0}, "tune.num_samples"),
    ({"campaign": "nope"}, "no campaign named 'nope'"),
    ({"campaign_seed": 9}, "not one of the job's seeds"),
    ({"baselines": [{"training.mode_params.lam": 50.0}]}, "outside loguniform"),
    ({"unknown_key": 1}, "unknown key(s) unknown_key"),
])
def test_validate_rejects_bad_specs(tune, message):
    with pytest.raises(ConfigError) as exc:
        spec_of(job(**tune))
    assert message in str(exc.value)


def test_validate_good_spec_and_scheduler_default():
    spec = spec_of(job(campaign="bald_grad", rounds=1, baselines=[
        {"training.mode_params.lam": 0.5}, {"training.mode_params.lam": 1.0}]))
    assert spec.multi and spec.scheduler == "none" and spec.metrics == ["accuracy",
                                                                         "predictive_parity"]
    single = spec_of(job(objectives=[{"metric": "accuracy", "mode": "max"}],
                         constraint={"metric": "demographic_parity", "max": 0.04}))
    assert not single.multi and single.scheduler == "asha" and single.constraint.max == 0.04


def test_trial_job_narrows_and_best_job_keeps_everything():
    raw = job(campaign="bald_grad", rounds=1, campaign_seed=1)
    cfg = config_from_dict(raw)
    spec = validate_spec(cfg, cfg.to_dict())
    params = {"training.mode_params.lam": 0.25}
    t = config_from_dict(trial_job(cfg.to_dict(), spec, params))
    assert [c.name for c in t.campaigns] == ["bald_grad"] and t.seeds == [1]
    assert t.al.rounds == 1 and t.training.num_workers == 0
    assert "num_workers" not in t.campaigns[0].training  # train_workers wins
    assert t.training.mode_params == {"lam": 0.25} and t.tune == {}
    b = config_from_dict(best_job(cfg.to_dict(), params))
    assert len(b.campaigns) == 2 and b.seeds == [0, 1] and b.al.rounds == 5
    assert b.training.mode_params == {"lam": 0.25} and b.tune == {}


# ----------------------------------------------------------------------------- Pareto / best


def brute_front(pts: np.ndarray, modes: list[str]) -> set[int]:
    sign = np.array([-1 if m == "max" else 1 for m in modes])
    q = pts * sign
    return {i for i in range(len(q)) if not any(
        np.all(q[j] <= q[i]) and np.any(q[j] < q[i]) for j in range(len(q)))}


def test_non_dominated_hand_made():
    # (accuracy max, dA min)
    pts = np.array([[0.90, 0.10],   # front
                    [0.85, 0.05],   # front
                    [0.80, 0.05],   # dominated by 1
                    [0.90, 0.20],   # dominated by 0
                    [0.70, 0.01],   # front
                    [0.85, 0.05],   # duplicate of 1: kept
                    [np.nan, 0.0]])  # NaN: never on the front
    assert non_dominated(pts, ["max", "min"]).tolist() == [0, 1, 4, 5]
    assert non_dominated(pts[:, ::-1], ["min", "max"]).tolist() == [0, 1, 4, 5]
    assert non_dominated(pts[:6], ["min", "min"]).tolist() == [4]  # (0.70, 0.01) beats all


def test_non_dominated_float_ties():
    # dA = max - min of accuracies: 1/150 computed two ways differs in the last bits
    pts = np.array([[0.5033333333333333, 0.00666666666666671],
                    [0.5, 0.006666666666666654]])
    assert non_dominated(pts, ["max", "min"]).tolist() == [0]
    assert non_dominated(pts, ["max", "min"], atol=0.0).tolist() == [0, 1]


def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    for modes in itertools.product(["max", "min"], repeat=2):
        pts = rng.integers(0, 6, size=(40, 2)).astype(float)  # many ties
        assert set(non_dominated(pts, list(modes)).tolist()) == brute_front(pts, list(modes))


def test_non_dominated_bad_shape():
    with pytest.raises(ValueError, match="points must be"):
        non_dominated(np.zeros((3, 3)), ["max", "min"])


def test_best_index_with_constraint():
    acc = np.array([0.9, 0.95, 0.8, np.nan])
    viol = np.array([0.01, 0.02, -0.01, -1.0])  # only row 2 (and the NaN row) are feasible
    assert best_index(acc, "max") == 1
    assert best_index(acc, "max", viol) == 2
    assert best_index(acc, "min") == 2
    assert best_index(acc, "max", np.array([0.03, 0.02, 0.05, 0.0])) == 1  # least violation
    assert best_index(np.array([np.nan]), "max") is None


# ----------------------------------------------------------------------------- the searcher


def raw_spec(objectives, constraint=None):
    """A TuneSpec straight from a ``tune:`` mapping (no job checks: no campaign factories)."""
    from rayfal.tune.space import parse_tune

    raw = {"space": {"training.mode_params.lam": "loguniform(0.01, 10)",
                     "training.epochs": "int(1, 3)"},
           "objectives": [{"metric": m, "mode": d} for m, d in objectives], "seed": 1}
    if constraint:
        raw["constraint"] = {"metric": constraint[0], "max": constraint[1]}
    return parse_tune(raw)


MULTI = [("accuracy", "max"), ("predictive_parity", "min")]


def searcher_for(spec, max_rounds=3, storage=None):
    optuna = pytest.importorskip("optuna")
    from rayfal.tune.searcher import RayfalOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return RayfalOptunaSearch(spec, max_rounds=max_rounds,
                              storage=storage or optuna.storages.InMemoryStorage())


def test_searcher_tells_complete_pruned_failed_through_public_optuna_api(tmp_path):
    from optuna.trial import TrialState

    from rayfal.tune.searcher import STUDY_NAME, make_storage

    spec = raw_spec(MULTI, ("demographic_parity", 0.05))
    searcher = searcher_for(spec, storage=make_storage(tmp_path))
    configs = {tid: searcher.suggest(tid) for tid in "abcdef"}
    assert [c["_trial_dir"] for c in configs.values()] == [f"trial_{i:04d}" for i in range(6)]
    assert all(0.01 <= c["training.mode_params.lam"] <= 10 and c["training.epochs"] in (1, 2, 3)
               for c in configs.values())
    full = {"accuracy": 0.8, "predictive_parity": 0.1, "demographic_parity": 0.02,
            "rounds_done": 3}
    searcher.on_trial_complete("a", full)
    searcher.on_trial_complete("a", {**full, "accuracy": 0.1})  # a second completion: ignored
    searcher.on_trial_complete("b", {**full, "rounds_done": 2})  # stopped early (ASHA)
    searcher.on_trial_complete("c", {**full, "accuracy": float("nan")})
    searcher.on_trial_complete("d", None, error=True)
    searcher.on_trial_complete("e", {**full, "demographic_parity": 0.2})
    searcher.on_trial_complete("unknown", full)  # never suggested: ignored
    # a new searcher on the same storage continues the same study (resume); its trials follow
    again = searcher_for(spec, storage=make_storage(tmp_path))
    assert again.study.study_name == STUDY_NAME and len(again.study.trials) == 6
    t = again.study.trials
    assert [x.state for x in t] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                    TrialState.FAIL, TrialState.COMPLETE, TrialState.RUNNING]
    assert t[0].values == [0.8, 0.1] and t[1].values is None
    assert t[0].user_attrs["metric_demographic_parity"] == 0.02
    assert t[0].user_attrs["rounds_done"] == 3 and t[1].user_attrs["rounds_done"] == 2
    assert t[0].user_attrs["constraint"] == [pytest.approx(-0.03)]
    if hasattr(t[0], "constraints"):  # Optuna >= 5: Optuna's own constraint record
        assert t[0].constraints == {"demographic_parity": pytest.approx(-0.03)}
        assert t[4].constraints == {"demographic_parity": pytest.approx(0.15)}
    assert [x.number for x in again.study.best_trials] == [0]  # trial 4 is infeasible
    assert again.study.directions[0].name == "MAXIMIZE"


def test_searcher_single_objective_reports_rounds_and_survives_save_restore(tmp_path):
    import pickle

    from rayfal.tune.searcher import make_storage

    spec = raw_spec([("f_score", "max")], ("panda_dp", 0.04))
    searcher = searcher_for(spec, max_rounds=2, storage=make_storage(tmp_path))  # as rayfal
    searcher.suggest("a")
    searcher.suggest("b")
    for step, f in ((1, 0.4), (2, 0.5)):
        searcher.on_trial_result("a", {"f_score": f, "training_iteration": step,
                                       "rounds_done": step})
    searcher.on_trial_complete("a", {"f_score": 0.5, "panda_dp": 0.01, "rounds_done": 2})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = pickle.loads(pickle.dumps(searcher))  # Ray Tune pickles the searcher
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("b", {"f_score": 0.9, "panda_dp": 0.5, "rounds_done": 2})
    trials = restored.study.trials
    assert trials[0].intermediate_values == {1: 0.4, 2: 0.5}
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert restored.study.best_trial.number == 0  # trial 1 scores higher but is infeasible


# ----------------------------------------------------------------------------- pareto.py vs Optuna


def _hand_made_study(spec, rows, tmp_path):
    """Drive the searcher with hand-made results (rows of metric dicts, None = error)."""
    searcher = searcher_for(spec, max_rounds=3)
    for k, result in enumerate(rows):
        searcher.suggest(str(k))
        searcher.on_trial_complete(str(k), result, error=result is None)
    return searcher.study


@pytest.mark.parametrize("modes", [("max", "min"), ("min", "min"), ("max", "max")])
def test_pareto_front_agrees_with_optuna_best_trials(tmp_path, modes):
    """rayfal's front (results.select over trials_frame, i.e. pareto.non_dominated) is Optuna's
    ``study.best_trials`` on the same trials: COMPLETE and feasible, exact dominance; ties,
    duplicates, pruned, failed and infeasible trials included."""
    from rayfal.tune.results import select, trials_frame

    spec = raw_spec(list(zip(("accuracy", "predictive_parity"), modes, strict=True)),
                    ("demographic_parity", 0.3))
    rng = np.random.default_rng(7)
    rows = []
    for k in range(40):
        acc, dpp = (rng.integers(0, 6, 2) / 5).tolist()  # many ties and duplicates
        rows.append(None if k % 11 == 5 else {
            "accuracy": acc, "predictive_parity": dpp,
            "demographic_parity": float(rng.choice([0.1, 0.2, 0.3, 0.5])),
            "rounds_done": 2 if k % 7 == 3 else 3})
    study = _hand_made_study(spec, rows, tmp_path)
    expect = {t.number for t in study.best_trials}
    assert len(expect) >= 2
    df = trials_frame(study, tmp_path, spec, max_rounds=3)
    assert set(select(df, spec)["trial"]) == expect
    ok = df[df["finished"] & df["feasible"]]  # pareto.py directly, with and without tolerance
    pts = ok[spec.metrics].to_numpy(float)
    for atol in (0.0, 1e-9):
        assert set(ok["trial"].iloc[non_dominated(pts, spec.modes, atol=atol)]) == expect
    for t in study.trials:  # the feasibility rule is Optuna's: every constraint value <= 0
        if t.state.name == "COMPLETE" and hasattr(t, "constraints"):
            row = df[df["trial"] == t.number].iloc[0]
            assert bool(row["feasible"]) == all(v <= 0 for v in t.constraints.values())


def test_best_index_agrees_with_optuna_best_trial(tmp_path):
    """One objective with a constraint: rayfal's best trial is Optuna's ``study.best_trial``
    when a feasible trial exists; when none is, Optuna raises and rayfal (intentionally)
    returns the least violating trial."""
    from rayfal.tune.results import select, trials_frame

    spec = raw_spec([("f_score", "max")], ("panda_dp", 0.04))
    rng = np.random.default_rng(3)
    rows = [{"f_score": float(f), "panda_dp": float(dp), "rounds_done": 3 - (k % 5 == 2)}
            for k, (f, dp) in enumerate(zip(rng.permutation(30) / 30, rng.random(30) * 0.08,
                                            strict=True))]
    study = _hand_made_study(spec, rows, tmp_path)
    df = trials_frame(study, tmp_path, spec, max_rounds=3)
    assert int(select(df, spec)["trial"].iloc[0]) == study.best_trial.number
    done = df[df["finished"]]
    viol = (done["panda_dp"] - 0.04).to_numpy(float)
    assert int(done["trial"].iloc[best_index(done["f_score"].to_numpy(float), "max", viol)]) \
        == study.best_trial.number

    infeasible = _hand_made_study(spec, [{**r, "panda_dp": r["panda_dp"] + 0.1} for r in rows],
                                  tmp_path)
    with pytest.raises(ValueError):
        infeasible.best_trial  # noqa: B018
    df = trials_frame(infeasible, tmp_path, spec, max_rounds=3)
    chosen = select(df, spec).iloc[0]
    assert not chosen["feasible"]
    assert chosen["panda_dp"] == df[df["finished"]]["panda_dp"].min()


# ----------------------------------------------------------------------------- study recovery


def test_recover_study_retries_interrupted_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from rayfal.tune.runner import recover_study
    from rayfal.tune.searcher import STUDY_NAME, DefineByRun, make_storage

    spec = spec_of(job())
    storage = make_storage(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                directions=["maximize", "minimize"])
    space = DefineByRun(spec)
    done = study.ask()
    space(done)
    study.tell(done, [0.8, 0.1])
    stale = study.ask()  # the driver died while this trial ran
    params = space(stale)
    assert params["_trial_dir"] == "trial_0001"
    assert recover_study(storage, spec) == (1, 1)
    assert study.trials[1].state == TrialState.FAIL
    retry = study.ask()  # the next ask pops the enqueued retry: same values, same directory
    assert space(retry)["_trial_dir"] == "trial_0001"
    assert retry.params == stale.params
    assert retry.user_attrs["resume_of"] == 1
    assert recover_study(storage, spec) == (1, 1)  # the retry died too: retried again
    assert recover_study(storage, spec) == (1, 1)  # idempotent: nothing enqueued twice
    assert study.trials[-1].user_attrs["trial_dir"] == "trial_0001"


# ----------------------------------------------------------------------------- resources, trial


def test_plan_resources_leaves_a_cpu_for_scoring():
    from rayfal.tune.runner import plan_resources

    raw = job(campaign="bald_grad", max_concurrent=2)
    spec = spec_of(raw)
    cfg = config_from_dict(trial_job(raw, spec, {"training.mode_params.lam": 1.0}))
    bundles, cpus, n = plan_resources(spec, cfg, 2.0)
    assert n == 2 and cpus == bundles[1]["CPU"]
    assert 2.0 - n * sum(b["CPU"] for b in bundles) >= 1.0 - 1e-9  # one CPU for Ray Data
    spec.train_workers = 1  # Train worker groups: concurrency capped so they fit
    bundles, _, n = plan_resources(spec, cfg, 2.0)
    assert n == 1 and cfg.training.cpus_per_worker + sum(b["CPU"] for b in bundles) <= 2.0
    assert plan_resources(spec, cfg, 8.0)[2] == 2
    spec.train_workers = 3
    with pytest.raises(ConfigError, match="exceed the cluster's 2 CPUs"):
        plan_resources(spec, cfg, 2.0)


def test_trial_metrics_and_missing_objective():
    from rayfal.tune.trial import check_metrics, numeric_metrics

    rec = {"round": 2, "accuracy": 0.5, "campaign": "bald", "selected": [1, 2], "flag": True,
           "nll": float("inf")}
    out = numeric_metrics(rec)
    assert out["rounds_done"] == 3.0 and out["accuracy"] == 0.5 and "campaign" not in out
    assert "selected" not in out and np.isnan(out["nll"])
    with pytest.raises(KeyError, match=r"\['f_score'\] are not in the round record"):
        check_metrics(rec, ["accuracy", "f_score"])


@pytest.mark.parametrize("dps, best, feasible", [([0.11, 0.12], 0, False),
                                                 ([0.11, 0.03], 1, True)])
def test_best_trial_flags_an_unmet_constraint(tmp_path, dps, best, feasible):
    optuna = pytest.importorskip("optuna")
    import json

    from rayfal.tune.results import write_results
    from rayfal.tune.searcher import STUDY_NAME, make_storage

    raw = job(objectives=[{"metric": "f_score", "mode": "max"}],
              constraint={"metric": "panda_dp", "max": 0.04})
    spec = spec_of(raw)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=make_storage(tmp_path),
                                direction="maximize")
    for k, (f, dp) in enumerate(zip([0.56, 0.53], dps, strict=True)):
        t = study.ask({"training.mode_params.lam": optuna.distributions.FloatDistribution(
            0.01, 10, log=True)})
        for key, v in (("metric_f_score", f), ("metric_panda_dp", dp), ("rounds_done", 5),
                       ("trial_dir", f"trial_{k:04d}")):
            t.set_user_attr(key, v)
        study.tell(t, f)
    paths = write_results(study, tmp_path, spec, config_from_dict(raw).to_dict(), max_rounds=5)
    text = paths["best"].read_text()
    assert ("No finished trial meets panda_dp <= 0.04" in text) == (not feasible)
    (chosen,) = json.loads((tmp_path / "results" / "summary.json").read_text())["best"]
    assert chosen["trial"] == best and chosen["feasible"] is feasible
