"""Optuna behind Ray Tune: samplers, the define-by-run space, a SQLite study, constraints.

:class:`RayfalOptunaSearch` is a Ray Tune :class:`~ray.tune.search.Searcher` that drives an
Optuna study itself through Optuna's public ask-and-tell interface (``study.ask`` in
:meth:`~RayfalOptunaSearch.suggest`, ``study.tell`` in
:meth:`~RayfalOptunaSearch.on_trial_complete`); it touches no private attribute of Ray's
``OptunaSearch`` or of Optuna.

* Sampler: TPE for one objective, NSGA-II for two (the study's ``directions`` follow the
  objectives' modes). No pruner: early stopping is Ray Tune's ASHA scheduler.
* Constraint ``{metric: m, max: c}``: Optuna's own constrained sampling and best-trial
  selection. Before ``study.tell`` the trial gets the constraint value ``m_last_round - c``
  (``Trial.set_constraint(m, ...)``, Optuna >= 5; on older Optuna the samplers'
  ``constraints_func`` reads the same value from the user attribute ``constraint``); a trial is
  feasible when it is <= 0, which :mod:`rayfal.tune.results` uses too.
* Each Optuna trial carries the user attributes ``trial_dir`` (its campaign directory name,
  kept when an interrupted trial is retried so the campaign resumes at its last round),
  ``rounds_done``, ``constraint`` and the final objective/constraint metrics
  (``metric_<name>``), so the study alone (SQLite, ``optuna.load_study``) tells the whole story.
* A trial stopped early by ASHA is told as ``PRUNED`` (not ``COMPLETE`` with a truncated
  value), so it never counts as a finished point of the front; a trial without finite
  objective values, or one that raised, is told ``FAIL``.
* With one objective each round's value is also reported to the Optuna trial as an
  intermediate value (TPE ranks pruned trials by their last one).
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from rayfal.tune.space import TuneSpec

log = logging.getLogger("rayfal.tune")

STUDY_FILE = "study.sqlite"
STUDY_NAME = "rayfal"
TRIAL_DIR_KEY = "_trial_dir"
TRIAL_NUMBER_KEY = "_trial_number"


def _has_set_constraint() -> bool:
    """Whether Optuna has ``Trial.set_constraint`` (5.0+; ``constraints_func`` is deprecated
    there)."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraint_values(trial) -> list[float]:
    """``constraints_func`` for Optuna < 5: ``[metric - max]`` from the user attribute
    ``constraint`` (<= 0 is feasible; a trial without it is infeasible)."""
    return list(trial.user_attrs.get("constraint", [math.inf]))


def make_sampler(spec: TuneSpec):
    """TPE (one objective) or NSGA-II (two), seeded. A constraint needs no sampler argument
    on Optuna >= 5 (the trials carry it); older Optuna gets :func:`constraint_values`."""
    import optuna

    kwargs = {}
    if spec.constraint and not _has_set_constraint():
        kwargs["constraints_func"] = constraint_values
    startup = spec.startup_trials or max(2, min(10, spec.num_samples // 3))
    if spec.multi:
        population = max(2, min(50, startup))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed,
                                             **kwargs)
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=spec.seed, **kwargs)


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def make_storage(run_dir: Path):
    import optuna

    return optuna.storages.RDBStorage(storage_url(run_dir))


def directions(spec: TuneSpec) -> list[str]:
    """Optuna study directions of the spec's objectives."""
    return ["minimize" if m == "min" else "maximize" for m in spec.modes]


class DefineByRun:
    """Optuna define-by-run space: suggests every key and tags the trial with its directory.

    Returns the suggested values plus ``_trial_dir`` / ``_trial_number`` (the trial's Ray Tune
    config). A picklable callable (Ray Tune pickles the searcher with its experiment state)."""

    def __init__(self, spec: TuneSpec) -> None:
        self.space = {k: d for k, d in spec.space.items()}

    def __call__(self, trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, dist in self.space.items():
            od = dist.to_optuna()
            if dist.kind == "choice":
                params[key] = trial.suggest_categorical(key, list(od.choices))
            elif dist.kind in ("int", "logint"):
                params[key] = trial.suggest_int(key, od.low, od.high, log=od.log)
            else:
                params[key] = trial.suggest_float(key, od.low, od.high, log=od.log)
        trial_dir = trial.user_attrs.get("trial_dir") or f"trial_{trial.number:04d}"
        trial.set_user_attr("trial_dir", trial_dir)
        return {**params, TRIAL_DIR_KEY: trial_dir, TRIAL_NUMBER_KEY: trial.number}


class RayfalOptunaSearch(Searcher):
    """A Ray Tune searcher over the Optuna study ``STUDY_NAME`` in ``storage`` (created, or
    loaded when it exists: a resumed run continues the same study and sampler history).

    One Tune trial = one ``study.ask()``; its result is told with the state rules of the module
    docstring and the metrics/constraint recorded on the Optuna trial."""

    def __init__(self, spec: TuneSpec, *, max_rounds: int, storage, sampler=None) -> None:
        import optuna

        super().__init__(metric=list(spec.metrics) if spec.multi else spec.metrics[0],
                         mode=list(spec.modes) if spec.multi else spec.modes[0])
        self._spec_metrics = list(spec.metrics)
        self._constraint = spec.constraint
        self._max_rounds = int(max_rounds)
        self._space = DefineByRun(spec)
        self._study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, sampler=sampler or make_sampler(spec),
            pruner=optuna.pruners.NopPruner(), directions=directions(spec), load_if_exists=True)
        self._trials: dict[str, Any] = {}  # Tune trial id -> optuna.Trial (RUNNING)
        self._done: set[str] = set()

    @property
    def study(self):
        """The Optuna study this searcher asks and tells."""
        return self._study

    # ------------------------------------------------------------------ Searcher interface

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._trials:
            self._trials[trial_id] = self._study.ask()
        return self._space(self._trials[trial_id])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._done or trial_id not in self._trials:
            return
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        """The round's objective as the Optuna trial's intermediate value (one objective)."""
        if len(self._spec_metrics) > 1:
            return  # Optuna keeps intermediate values of single-objective studies only
        value = result.get(self._spec_metrics[0])
        step = result.get("training_iteration", result.get("rounds_done"))
        if value is None or step is None or not math.isfinite(float(value)):
            return
        try:  # (a step reported twice: Optuna keeps the first and warns)
            self._trials[trial_id].report(float(value), int(step))
        except Exception as exc:  # never let bookkeeping stop the search
            log.warning("optuna report for %s failed: %s", trial_id, exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._done or trial_id not in self._trials:
            return
        ot_trial = self._trials[trial_id]
        state, value = TrialState.COMPLETE, None
        violation = math.inf  # a trial that reported nothing is infeasible
        if result:
            rounds = int(result.get("rounds_done", 0))
            ot_trial.set_user_attr("rounds_done", rounds)
            names = [*self._spec_metrics, *([self._constraint.metric] if self._constraint else [])]
            for m in dict.fromkeys(names):
                if m in result and result[m] is not None:
                    ot_trial.set_user_attr(f"metric_{m}", float(result[m]))
            if self._constraint and result.get(self._constraint.metric) is not None:
                violation = float(result[self._constraint.metric]) - self._constraint.max
                ot_trial.set_user_attr("constraint", [violation])
            values = [result.get(m) for m in self._spec_metrics]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                state = TrialState.FAIL
            elif rounds < self._max_rounds:
                state = TrialState.PRUNED  # stopped early by the scheduler
                # Tune hands the result that made the scheduler stop the trial to
                # on_trial_complete only (not on_trial_result): report it, or the pruned
                # trial's value (its last intermediate one) would be the round before
                self._report(trial_id, result)
            else:
                value = [float(v) for v in values] if len(values) > 1 else float(values[0])
        else:
            state = TrialState.FAIL if error else TrialState.PRUNED
        if error:
            state, value = TrialState.FAIL, None
        if self._constraint and state != TrialState.FAIL and _has_set_constraint():
            # what constraints_func used to store: COMPLETE/PRUNED only; NaN -> infeasible
            ot_trial.set_constraint(self._constraint.metric,
                                    violation if math.isfinite(violation) else math.inf)
        try:
            self._study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. an already finished trial
            log.warning("optuna tell for %s failed: %s", trial_id, exc)
        self._done.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Ray Tune's experiment checkpoint: the Tune trial -> Optuna trial mapping (the study
        itself lives in its storage; rayfal's is SQLite, so a restored searcher's trials write
        to the same study; an in-memory storage would be copied by the pickle)."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"trials": self._trials, "done": self._done}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._trials.update(state["trials"])
        self._done |= set(state["done"])
