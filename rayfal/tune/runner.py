"""``rayfal tune``: Ray Tune ``Tuner`` + ``OptunaSearch`` over a job's ``tune:`` space.

Layout of ``RUN_DIR``::

    tune_job.yaml         the resolved job (compared on --resume)
    study.sqlite          the Optuna study ``rayfal`` (optuna.load_study(study_name="rayfal",
                          storage="sqlite:///RUN_DIR/study.sqlite"))
    data/                 the data set, prepared once and shared by every trial
    pretrained/           the pretrained trunk (model.pretrained), built once, shared likewise
    trials/trial_NNNN/    one AL campaign per Optuna trial (rayfal run's layout)
    tune/session_NNN/     Ray Tune's experiment of each invocation
    results/              trials.csv/.parquet, best.* or pareto.*, PNG, best_job.yaml | pareto_*.yaml

Resume (``--resume``): the Optuna study is the record of what ran. Finished trials (COMPLETE,
PRUNED, FAIL) are never re-run; a trial left RUNNING by an interrupted driver is told FAIL
and enqueued again with its parameters and its directory, so its campaign continues from the
last committed round. The new session runs ``num_samples - finished`` trials (so raising
``tune.num_samples`` extends a search).

Resources (2-core safe). Train V2 creates the Train workers' placement group from its
controller, outside any trial placement group (a placement group cannot nest), so a trial's
``PlacementGroupFactory`` cannot hand its bundles to Train. Hence:

Every trial reserves a STRICT_PACK placement group of two bundles: ``{CPU: 0.05}`` for the
trial process (it only relays reports) and ``{CPU: c}`` for the campaign, which runs in a task
captured by that bundle (:mod:`rayfal.tune.trial`). One CPU stays free for the pool-scoring
Ray Data tasks (they use their own ``SPREAD`` strategy, outside the trial's group).

* ``tune.train_workers: 0`` (default): ``c = trial_cpus`` (auto: ``(CPUs - 1 - 0.05 *
  max_concurrent) / max_concurrent``, at most 1) and each round's Ray Train run is local mode
  inside the campaign task, on the trial's reserved CPUs. No Train placement group exists, so
  an ASHA stop cannot leak one (RAY_NOTES: the leak of a stopped trial's Train placement group
  with the dashboard off): Tune removes the trial's own group and the task dies with it.
* ``tune.train_workers: N >= 1``: ``c = 0.2`` (evaluation, scoring driver) and concurrency is
  capped so that the concurrent trials' Train groups (N x cpus_per_worker each) plus one CPU for
  scoring fit in the cluster (no deadlock). Early stopping would kill the trial while Train holds
  its placement group, which Train's cleaner frees only through the State API (dashboard); so
  ASHA is refused unless the State API answers.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from rayfal.atomic import atomic_write_text
from rayfal.config import ConfigError, config_from_dict, load_job
from rayfal.tune.results import write_results
from rayfal.tune.searcher import STUDY_NAME, RayfalOptunaSearch, make_storage
from rayfal.tune.space import TuneSpec, spec_summary, trial_job, validate_spec
from rayfal.tune.trial import DATA_LINK, run_trial

log = logging.getLogger("rayfal.tune")

TUNE_JOB = "tune_job.yaml"


def _trial_job_for(spec: TuneSpec, base: dict, params: dict) -> dict:
    return trial_job(base, spec, params)


def _check_resume(run_dir: Path, resolved: dict, resume: bool) -> None:
    saved = run_dir / TUNE_JOB
    if not saved.exists():
        if resume:
            log.warning("--resume: %s holds no tuning run yet; starting a new one", run_dir)
        return
    if not resume:
        raise ConfigError(f"{run_dir} already holds a tuning run; pass --resume to continue it "
                          "or choose another --run-dir")
    old = yaml.safe_load(saved.read_text())
    # num_samples / max_concurrent may change on resume (extend a search); nothing else
    relaxed = ("num_samples", "max_concurrent")
    diff = sorted(k for k in set(old) | set(resolved) if k not in ("ray", "tune")
                  and old.get(k) != resolved.get(k))
    ot, nt = dict(old.get("tune") or {}), dict(resolved.get("tune") or {})
    diff += [f"tune.{k}" for k in sorted(set(ot) | set(nt))
             if k not in relaxed and ot.get(k) != nt.get(k)]
    if diff:
        raise ConfigError(f"--resume: the job differs from {saved} in {diff}; resume with the "
                          "same job (only tune.num_samples / tune.max_concurrent may change)")


def recover_study(storage, spec: TuneSpec) -> tuple[int, int]:
    """Prepare an existing study for a new session: stale RUNNING trials -> FAIL + enqueued
    again (same params and directory); on a fresh study, enqueue the baselines.
    Returns ``(finished, waiting)`` trial counts."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        study = None
    if study is None or not study.trials:
        if spec.baselines:
            study = study or optuna.create_study(
                study_name=STUDY_NAME, storage=storage,
                directions=["minimize" if m == "min" else "maximize" for m in spec.modes])
            for point in spec.baselines:
                study.enqueue_trial(dict(point), user_attrs={"baseline": True})
            return 0, len(spec.baselines)
        return 0, 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = {"resume_of": t.number, "trial_dir": t.user_attrs.get("trial_dir",
                                                                       f"trial_{t.number:04d}")}
        if t.user_attrs.get("baseline"):
            attrs["baseline"] = True
        study.enqueue_trial(dict(t.params), user_attrs=attrs, skip_if_exists=False)
        study.tell(t.number, state=TrialState.FAIL)
        log.warning("trial %d was interrupted; it is retried in %s", t.number, attrs["trial_dir"])
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("resume_of") for t in trials} - {None}
    finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and t.number not in retried))
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return finished, waiting


def state_api_available() -> bool:
    """Whether Ray's State API (dashboard) answers, which Train's placement-group cleaner needs."""
    try:
        from ray.util.state import list_actors

        list_actors(limit=1, timeout=5, raise_on_missing_output=False)
        return True
    except Exception:
        return False


HEAD_CPU = 0.05
CAMPAIGN_CPU_WITH_WORKERS = 0.2


def plan_resources(spec: TuneSpec, cfg, total_cpu: float) -> tuple[list[dict], float, int]:
    """``(trial bundles, CPUs of the campaign task, concurrent trials)``; see the module
    docstring."""
    mc = spec.max_concurrent
    if spec.train_workers == 0:
        if spec.trial_cpus != "auto":
            train = float(spec.trial_cpus)
        else:
            train = min(1.0, max(0.1, (total_cpu - 1.0 - HEAD_CPU * mc) / mc))
        train = round(train, 3)
        fit = max(1, math.floor(max(total_cpu - 1.0, train + HEAD_CPU) / (train + HEAD_CPU) + 1e-9))
        return [{"CPU": HEAD_CPU}, {"CPU": train}], train, max(1, min(mc, fit))
    need = spec.train_workers * cfg.training.cpus_per_worker
    head = HEAD_CPU + (CAMPAIGN_CPU_WITH_WORKERS if spec.trial_cpus == "auto"
                       else float(spec.trial_cpus))
    if need + head > total_cpu:
        raise ConfigError(
            f"tune.train_workers={spec.train_workers} x training.cpus_per_worker="
            f"{cfg.training.cpus_per_worker:g} (+{head:g} for the trial) exceed the cluster's "
            f"{total_cpu:g} CPUs")
    fit = max(1, math.floor((total_cpu - 1.0) / (need + head) + 1e-9))
    campaign = round(head - HEAD_CPU, 3)
    return [{"CPU": HEAD_CPU}, {"CPU": campaign}], campaign, max(1, min(mc, fit))


def run_tune(job: str | Path, run_dir: str | Path, *, overrides: list[str] | None = None,
             resume: bool = False, address: str | None = None, verbose: int = 1
             ) -> dict[str, Any]:
    """Run (or continue) a search; returns a summary with the result paths. The run
    directory is locked for the whole search (a second ``rayfal tune`` on it is refused)."""
    from rayfal.campaign.rundir import run_dir_lock

    with run_dir_lock(Path(run_dir).resolve(), "tune --resume" if resume else "tune"):
        return _run_tracked(job, run_dir, overrides=overrides, resume=resume,
                            address=address, verbose=verbose)


def _run_tracked(job: str | Path, run_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`_run_tune` with the job's MLflow tracking (``tracking.mlflow``): the search is
    one run, each trial a nested run, each trial's campaign nested under it."""
    cfg, resolved = load_job(job, kwargs.get("overrides"))
    if getattr(cfg, "tracking", None) is None:
        return _run_tune(job, run_dir, tracking=None, **kwargs)
    from rayfal.tracking.mlflow import TuneTracking, status_of

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    tracking = TuneTracking.from_job(cfg, resolved, run_dir)
    try:
        out = _run_tune(job, run_dir, tracking=tracking, **kwargs)
    except BaseException as exc:
        tracking.finish(status=status_of(exc))
        raise
    tracking.finish(run_dir / "results")
    return out


def _run_tune(job: str | Path, run_dir: str | Path, *, overrides: list[str] | None = None,
             resume: bool = False, address: str | None = None, verbose: int = 1,
             tracking: Any = None) -> dict[str, Any]:
    """Run (or continue) a search; returns a summary with the result paths."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from rayfal.campaign.schedule import check_schedule, schedule
    from rayfal.data.sources import open_dataset
    from rayfal.ray_env import init_ray

    cfg, resolved = load_job(job, overrides)
    spec = validate_spec(cfg, resolved, source=str(job))
    run_dir = Path(run_dir).resolve()
    _check_resume(run_dir, resolved, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / TUNE_JOB, yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(run_dir / "tune_spec.yaml",
                      yaml.safe_dump(spec_summary(spec), sort_keys=False))

    # the data set once, before any trial (trials link RUN_DIR/data)
    first = {k: d.ends()[0] for k, d in spec.space.items()}
    trial_cfg = config_from_dict(trial_job(resolved, spec, first), source=str(job))
    pool, _ = open_dataset(trial_cfg.dataset, run_dir / DATA_LINK)
    check_schedule(trial_cfg, pool.num_rows)
    max_rounds = schedule(trial_cfg, pool.num_rows) + 1

    storage = make_storage(run_dir)
    finished, waiting = recover_study(storage, spec)
    to_run = max(0, spec.num_samples - finished)
    bundles, campaign_cpus, concurrent = [], 0.0, 0
    if to_run:  # nothing to run: only the results are (re)written, no Ray needed
        init_ray(address or cfg.ray.address, num_cpus=cfg.ray.num_cpus,
                 object_store_memory=cfg.ray.object_store_memory,
                 include_dashboard=cfg.ray.include_dashboard)
        bundles, campaign_cpus, concurrent = plan_resources(
            spec, trial_cfg, float(ray.cluster_resources().get("CPU", 1)))
        if trial_cfg.model.pretrained:  # once, before any trial (trials link RUN_DIR/pretrained)
            from rayfal.campaign.pretrain import ensure_pretrained_trunk

            ensure_pretrained_trunk(trial_cfg.model, pool.input_shape, run_dir)
    scheduler = None
    if spec.scheduler == "asha" and to_run:
        if spec.train_workers > 0 and not state_api_available():
            raise ConfigError(
                "tune.scheduler: asha with tune.train_workers >= 1 needs Ray's State API "
                "(include_dashboard: true): a stopped trial's Train placement group is only "
                "freed through it. Use train_workers: 0 or scheduler: none.")
        scheduler = ASHAScheduler(
            time_attr="rounds_done", metric=spec.metrics[0], mode=spec.modes[0],
            max_t=max_rounds, grace_period=min(spec.grace_rounds, max_rounds),
            reduction_factor=spec.reduction_factor)
    sessions = sorted((run_dir / "tune").glob("session_*")) if (run_dir / "tune").exists() else []
    session = f"session_{len(sessions):03d}"
    log.info("tune: %d finished, %d to run (%d waiting/retried), %d concurrent x %s, "
             "%d rounds per trial, scheduler=%s -> %s", finished, to_run, waiting, concurrent,
             bundles, max_rounds, spec.scheduler, session)
    if to_run:
        searcher = RayfalOptunaSearch(spec, max_rounds=max_rounds, storage=storage)
        trainable = tune.with_parameters(
            run_trial, base=resolved, run_dir=str(run_dir),
            metrics=[*spec.metrics, *([spec.constraint.metric] if spec.constraint else [])],
            trial_job_fn=functools.partial(_trial_job_for, spec), campaign_cpus=campaign_cpus,
            tracking=tracking)
        tuner = tune.Tuner(
            tune.with_resources(trainable, tune.PlacementGroupFactory(bundles,
                                                                      strategy="STRICT_PACK")),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=to_run, max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name=session, storage_path=str(run_dir / "tune"),
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      verbose=verbose),
        )
        grid = tuner.fit()
        for res in grid:
            if res.error:
                log.warning("trial %s failed: %s", res.path, str(res.error).splitlines()[-1:])
    import optuna

    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    paths = write_results(study, run_dir, spec, resolved, max_rounds)
    return {"run_dir": run_dir, "session": session if to_run else None, "ran": to_run,
            "finished_before": finished, "paths": paths, "max_rounds": max_rounds,
            "concurrent": concurrent, "bundles": bundles}
