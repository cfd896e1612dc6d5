"""Optuna behind Ray Tune: samplers, the define-by-run space, a SQLite study, constraints.

* Sampler: TPE for one objective, NSGA-II for two (``OptunaSearch`` passes a list of
  metrics/modes to the study as ``directions``).
* Constraint ``{metric: m, max: c}``: handled by Optuna's own constrained sampling
  (``constraints_func`` of TPE / NSGA-II): the trial's user attribute ``constraint`` =
  ``[m_last_round - c]`` is set before ``study.tell``; a trial is feasible when it is <= 0.
  Best-trial / front selection in :mod:`rayfal.tune.results` uses the same rule.
* Each Optuna trial carries the user attributes ``trial_dir`` (its campaign directory name,
  kept when an interrupted trial is retried so the campaign resumes at its last round),
  ``rounds_done`` and the final objective/constraint metrics, so the study alone (SQLite,
  ``optuna.load_study``) tells the whole story.
* A trial stopped early by ASHA is told as ``PRUNED`` (not ``COMPLETE`` with a truncated
  value), so it never counts as a finished point of the front.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from rayfal.tune.space import TuneSpec

log = logging.getLogger("rayfal.tune")

STUDY_FILE = "study.sqlite"
STUDY_NAME = "rayfal"
TRIAL_DIR_KEY = "_trial_dir"
TRIAL_NUMBER_KEY = "_trial_number"


def constraint_values(trial) -> list[float]:
    """Optuna ``constraints_func``: ``[metric - max]`` (<= 0 is feasible)."""
    return list(trial.user_attrs.get("constraint", [math.inf]))


def make_sampler(spec: TuneSpec):
    """TPE (one objective) or NSGA-II (two), seeded, constrained if the spec has a constraint."""
    import optuna

    cons = constraint_values if spec.constraint else None
    startup = spec.startup_trials or max(2, min(10, spec.num_samples // 3))
    if spec.multi:
        population = max(2, min(50, startup))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed,
                                             constraints_func=cons)
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=spec.seed,
                                      constraints_func=cons)


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def make_storage(run_dir: Path):
    import optuna

    return optuna.storages.RDBStorage(storage_url(run_dir))


class DefineByRun:
    """Optuna define-by-run space: suggests every key and tags the trial with its directory.

    A picklable callable (Ray Tune pickles the searcher with its experiment state)."""

    def __init__(self, spec: TuneSpec) -> None:
        self.space = {k: d for k, d in spec.space.items()}

    def __call__(self, trial) -> dict[str, Any]:
        for key, dist in self.space.items():
            od = dist.to_optuna()
            if dist.kind == "choice":
                trial.suggest_categorical(key, list(od.choices))
            elif dist.kind in ("int", "logint"):
                trial.suggest_int(key, od.low, od.high, log=od.log)
            else:
                trial.suggest_float(key, od.low, od.high, log=od.log)
        trial_dir = trial.user_attrs.get("trial_dir") or f"trial_{trial.number:04d}"
        trial.set_user_attr("trial_dir", trial_dir)
        return {TRIAL_DIR_KEY: trial_dir, TRIAL_NUMBER_KEY: trial.number}


class RayfalOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records metrics/constraints on the Optuna trial and tells ASHA-
    stopped trials as pruned."""

    def __init__(self, spec: TuneSpec, *, max_rounds: int, storage, **kwargs) -> None:
        self._spec_metrics = spec.metrics
        self._constraint = spec.constraint
        self._max_rounds = int(max_rounds)
        super().__init__(
            space=DefineByRun(spec),
            metric=spec.metrics if spec.multi else spec.metrics[0],
            mode=spec.modes if spec.multi else spec.modes[0],
            sampler=make_sampler(spec),
            study_name=STUDY_NAME,
            storage=storage,
            **kwargs,
        )

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        state, value = TrialState.COMPLETE, None
        if result:
            rounds = int(result.get("rounds_done", 0))
            ot_trial.set_user_attr("rounds_done", rounds)
            for m in {*self._spec_metrics, *( [self._constraint.metric] if self._constraint else [])}:
                if m in result and result[m] is not None:
                    ot_trial.set_user_attr(f"metric_{m}", float(result[m]))
            if self._constraint and self._constraint.metric in result:
                ot_trial.set_user_attr(
                    "constraint", [float(result[self._constraint.metric]) - self._constraint.max])
            values = [result.get(m) for m in self._spec_metrics]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                state = TrialState.FAIL
            elif rounds < self._max_rounds:
                state = TrialState.PRUNED  # stopped early by the scheduler
            else:
                value = [float(v) for v in values] if len(values) > 1 else float(values[0])
        else:
            state = TrialState.FAIL if error else TrialState.PRUNED
        if error:
            state, value = TrialState.FAIL, None
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. an already finished trial
            log.warning("optuna tell for %s failed: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
