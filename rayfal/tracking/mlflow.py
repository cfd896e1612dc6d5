"""MLflow tracking of a job's campaigns (``tracking: {mlflow: {uri, experiment}}``).

Layout in the MLflow experiment (``tracking.mlflow.experiment``, default: the job's name)::

    <job name>                      the job run (tag rayfal.kind=job): the flattened job as params,
    |                               the report (tables, plots) as artefacts under report/
    +-- <campaign>/seed_<s>         one nested run per (variant, campaign, seed) (rayfal.kind=
                                    campaign): params = the (variant's) flattened job + the
                                    campaign's strategy params and training overrides
                                    (campaign.*), metrics = every finite numeric field of each
                                    round record with step = n_labelled

The report compares the campaigns, so it is logged once, on the job run (the parent), not copied
onto every campaign run; in MLflow's UI the campaign runs sit under it.

Tags of a campaign run: ``rayfal.kind``, ``job``, ``campaign``, ``seed``, ``strategy``, ``mode``,
``run_dir`` (absolute), ``variant`` (jobs with ``variants:``) and ``mlflow.parentRunId``.

Only the :class:`~mlflow.tracking.MlflowClient` API is used (every call names its run id): no
fluent ``mlflow.start_run`` state, so nothing leaks between runs, threads or other code that
uses MLflow in the same process.

Resume: the runs are found again by their tags (kind, run_dir, campaign, seed), set back to
RUNNING, and the rounds they already hold (the history of their ``round`` metric, logged in the
same batch as the round's other metrics) are skipped when ``--resume`` replays the recovered
round records, so nothing is logged twice. Params already on a run are not logged again (the
``ray`` section may differ on resume).

Failures of the tracking store are not swallowed: the round that could not be logged is
already committed on disk, so ``--resume`` continues the campaign and logs what is missing.

Ray Tune (:class:`TuneTracking`): one run for the tuning run directory (rayfal.kind=tune), each
trial a run nested under it (rayfal.kind=trial, params = the trial's flattened job) and the
trial's campaign runs nested under the trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("rayfal.tracking")

# MLflow's limits (mlflow.utils.validation)
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

KIND_TAG = "rayfal.kind"
PARENT_TAG = "mlflow.parentRunId"
#: record fields never logged as metrics: identity (a tag) and the per-row lists
NOT_METRICS = frozenset({"seed", "selected", "selected_labels"})
#: the metric whose history tells which rounds a run already holds (resume)
ROUND_METRIC = "round"

_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")


# ----------------------------------------------------------------------------- pure helpers


def mlflow_key(key: str) -> str:
    """``key`` as a valid MLflow param/metric name: characters other than alphanumerics,
    ``_ - . /`` and spaces become ``_``; no leading ``/`` or ``.`` (MLflow treats names as
    paths); at most 250 characters (a longer key keeps a hash of the whole)."""
    out = _BAD_KEY_CHARS.sub("_", str(key)).lstrip("./") or "_"
    out = "/".join(p if p not in (".", "..", "") else "_" for p in out.split("/"))
    if len(out) > MAX_KEY_LENGTH:
        digest = hashlib.sha1(out.encode()).hexdigest()[:8]
        out = f"{out[:MAX_KEY_LENGTH - 9]}-{digest}"
    return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return _truncate(text, MAX_PARAM_VAL_LENGTH)


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested job mapping as MLflow params: dotted keys (``al.query_size``), list items that
    are mappings by index (``campaigns.1.strategy``), other lists and empty mappings as JSON,
    scalars with ``str``; keys made valid and values truncated to MLflow's limits."""
    out: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif (isinstance(node, list | tuple) and node
              and any(isinstance(v, Mapping) for v in node)):
            for i, v in enumerate(node):
                walk(v, f"{key}.{i}" if key else str(i))
        elif key:
            out.setdefault(mlflow_key(key), _param_value(node))

    walk(data, prefix)
    return out


def record_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a round record: every numeric field (numpy scalars and bools included)
    except ``seed``, with NaN and infinities left out (MLflow would store them, but they break
    its charts); lists and strings are skipped."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k in NOT_METRICS or not isinstance(v, numbers.Real):
            continue
        x = float(v)
        if math.isfinite(x):
            out[mlflow_key(k)] = x
    return out


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def default_artifact_location(uri: str) -> str | None:
    """Where artefacts of an experiment created here go when ``artifact_location`` is not set:
    for ``sqlite:///DIR/x.db`` the folder ``DIR/mlartifacts`` (MLflow's own default would be
    ``./mlruns`` in the working directory); otherwise MLflow's default (file store: inside it;
    server: the server's artefact root)."""
    db = _sqlite_path(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def _quoted(value: str) -> str | None:
    """``value`` as a search-filter string literal (``None``: it holds both quote kinds)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _filter(tags: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """A search filter on ``tags`` (the ones that can be quoted) and the rest, to check in
    Python."""
    parts, rest = [], {}
    for k, v in tags.items():
        q = _quoted(v)
        if q is None:
            rest[k] = v
        else:
            parts.append(f"tags.`{k}` = {q}")
    return " and ".join(parts), rest


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- the tracker


@dataclass
class _Run:
    run_id: str
    rounds: set[int] = field(default_factory=set)  # rounds already logged (resume)


class MlflowTracker:
    """Logs a job's round records to MLflow (see the module docstring for the layout).

    ``tracker.on_round`` is the :func:`rayfal.campaign.run_job` callback of the job itself;
    :meth:`callback` binds one for a variant (its resolved job and run directory). Runs start
    lazily with the first round record of each (variant, campaign, seed). :meth:`finish` logs
    the report directory on the job run and ends every run (``FINISHED``, or the status given:
    ``FAILED``/``KILLED``).

    ``parent_run_id`` nests the job run under another run (a Tune trial under the tuning run);
    ``kind`` is the job run's ``rayfal.kind`` tag (``job``, ``trial``, ``tune``).
    """

    def __init__(self, uri: str, experiment: str, job_resolved: Mapping[str, Any],
                 run_dir: str | Path, *, run_name_prefix: str | None = None,
                 artifact_location: str | None = None, parent_run_id: str | None = None,
                 kind: str = "job", job_run_name: str | None = None,
                 extra_tags: Mapping[str, str] | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.job = dict(job_resolved)
        self.run_dir = Path(run_dir).resolve()
        self.prefix = run_name_prefix or ""
        self.parent_run_id = parent_run_id
        self.kind = kind
        self.job_name = str(self.job.get("name") or "job")
        self.job_run_name = job_run_name or self.prefix + self.job_name
        self.extra_tags = {k: str(v) for k, v in (extra_tags or {}).items()}
        db = _sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment, artifact_location)
        self._lock = threading.RLock()
        self._job_run: _Run | None = None
        self._runs: dict[tuple[str, str, int], _Run] = {}
        self._finished = False

    # ------------------------------------------------------------------ store access
    def _experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=artifact_location or default_artifact_location(
                        self.uri))
            except MlflowException:  # created meanwhile by another process
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise RuntimeError(
                f"MLflow experiment {name!r} at {self.uri} is deleted; restore it "
                "(mlflow experiments restore) or set tracking.mlflow.experiment to another name")
        return exp.experiment_id

    def _find_run(self, tags: Mapping[str, str]) -> str | None:
        """The newest active run of the experiment carrying every one of ``tags``."""
        from mlflow.entities import ViewType

        flt, rest = _filter(tags)
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=flt, run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
            for run in page:
                if all(run.data.tags.get(k) == v for k, v in {**tags, **rest}.items()):
                    return run.info.run_id
            token = page.token
            if not token:
                return None

    def _open_run(self, tags: dict[str, str], run_name: str, params: dict[str, str]) -> _Run:
        """Find the run with ``tags`` (resume: back to RUNNING, only the missing params are
        logged, the rounds it holds are remembered) or create it."""
        from mlflow.entities import Param

        key_tags = {k: v for k, v in tags.items() if k != PARENT_TAG}
        run_id = self._find_run(key_tags)
        if run_id is None:
            run_id = self.client.create_run(
                self.experiment_id, run_name=run_name,
                tags={k: _truncate(v, MAX_TAG_VAL_LENGTH) for k, v in tags.items()}).info.run_id
            run = _Run(run_id)
            missing = params
        else:
            existing = self.client.get_run(run_id)
            if existing.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            run = _Run(run_id, {int(m.value) for m in
                                self.client.get_metric_history(run_id, ROUND_METRIC)})
            missing = {k: v for k, v in params.items() if k not in existing.data.params}
            log.info("mlflow: resuming run %s (%s, %d round(s) logged)", run_id, run_name,
                     len(run.rounds))
        for chunk in _chunks([Param(k, v) for k, v in missing.items()], PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        return run

    def _ensure_job_run(self) -> _Run:
        with self._lock:
            if self._job_run is None:
                tags = {KIND_TAG: self.kind, "job": self.job_name, "run_dir": str(self.run_dir),
                        **self.extra_tags}
                if self.parent_run_id:
                    tags[PARENT_TAG] = self.parent_run_id
                self._job_run = self._open_run(tags, self.job_run_name,
                                               flatten_params(self.job))
            return self._job_run

    @property
    def job_run_id(self) -> str:
        """The id of the job run (created when needed)."""
        return self._ensure_job_run().run_id

    def _campaign_run(self, record: Mapping[str, Any], variant: str,
                      job: Mapping[str, Any], run_dir: Path) -> _Run:
        campaign, seed = str(record["campaign"]), int(record["seed"])
        key = (variant, campaign, seed)
        run = self._runs.get(key)
        if run is not None:
            return run
        parent = self._ensure_job_run()
        tags = {KIND_TAG: "campaign", "job": self.job_name, "campaign": campaign,
                "seed": str(seed), "run_dir": str(run_dir),
                "strategy": str(record.get("strategy", "")), "mode": str(record.get("mode", "")),
                PARENT_TAG: parent.run_id, **self.extra_tags}
        if variant:
            tags["variant"] = variant
        params = flatten_params(job)
        conf = next((c for c in job.get("campaigns") or []
                     if (c.get("label") or c.get("strategy")) == campaign), None)
        if conf is not None:
            params.update(flatten_params({
                "campaign": {"name": campaign, "strategy": conf.get("strategy"),
                             "params": conf.get("params") or {},
                             "training": conf.get("training") or {}}}))
        name = f"{self.prefix}{variant + '/' if variant else ''}{campaign}/seed_{seed}"
        run = self._runs[key] = self._open_run(tags, name, params)
        return run

    # ------------------------------------------------------------------ callbacks
    def log_record(self, record: Mapping[str, Any], *, variant: str = "",
                   job: Mapping[str, Any] | None = None, run_dir: str | Path | None = None
                   ) -> bool:
        """Log one round record (step = ``n_labelled``); ``False`` when its round is already
        on the run (a record replayed on resume)."""
        from mlflow.entities import Metric

        with self._lock:
            if self._finished:
                raise RuntimeError("MlflowTracker.finish() was called; no more records")
            run = self._campaign_run(record, variant, self.job if job is None else job,
                                     self.run_dir if run_dir is None else
                                     Path(run_dir).resolve())
            r = int(record["round"])
            if r in run.rounds:
                return False
            step, ts = int(record["n_labelled"]), int(time.time() * 1000)
            metrics = [Metric(k, v, ts, step) for k, v in record_metrics(record).items()]
            metrics.append(Metric(ROUND_METRIC, float(r), ts, step))  # the resume marker
            for chunk in _chunks(metrics, METRICS_PER_BATCH):
                self.client.log_batch(run.run_id, metrics=chunk, synchronous=True)
            run.rounds.add(r)
            return True

    def on_round(self, record: dict) -> None:
        """The ``on_round`` callback of :func:`rayfal.campaign.run_job` for the job itself."""
        self.log_record(record)

    def callback(self, variant: str, job_resolved: Mapping[str, Any], run_dir: str | Path
                 ) -> Callable[[dict], None]:
        """An ``on_round`` callback for one variant of the job (its resolved job and run
        directory); ``variant=""``: the job itself."""
        job, rd = dict(job_resolved), Path(run_dir).resolve()

        def on_round(record: dict) -> None:
            self.log_record(record, variant=variant, job=job, run_dir=rd)

        return on_round

    # ------------------------------------------------------------------ the end
    def finish(self, report_dir: str | Path | None = None, *, status: str = "FINISHED") -> None:
        """Log ``report_dir``'s files under ``report/`` on the job run (when a round was
        logged, i.e. the job run exists) and end every run with ``status`` (``FINISHED``,
        ``FAILED``, ``KILLED``). Calling it again does nothing."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            try:
                if (report_dir is not None and self._job_run is not None
                        and Path(report_dir).is_dir()):
                    self.client.log_artifacts(self._job_run.run_id, str(report_dir), "report")
            finally:
                for run in self._runs.values():
                    self.client.set_terminated(run.run_id, status)
                if self._job_run is not None:
                    self.client.set_terminated(self._job_run.run_id, status)

    def end_running_children(self, run_id: str, status: str = "KILLED") -> int:
        """End the runs nested (at any depth) under ``run_id`` that are still RUNNING (a Tune
        trial stopped by its scheduler dies without finishing its runs); returns how many."""
        from mlflow.entities import ViewType

        ended, todo = 0, [run_id]
        while todo:
            parent = todo.pop()
            token = None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
                    run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
                for run in page:
                    todo.append(run.info.run_id)
                    if run.info.status == "RUNNING":
                        self.client.set_terminated(run.info.run_id, status)
                        ended += 1
                token = page.token
                if not token:
                    break
        return ended


def status_of(exc: BaseException | None) -> str:
    """The MLflow run status for a job that ended with ``exc`` (``None``: success)."""
    if exc is None:
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


# ----------------------------------------------------------------------------- Ray Tune


class TuneTracking:
    """MLflow tracking of a ``rayfal tune`` run: the tuning run directory is one run
    (rayfal.kind=tune; the base job as params, ``results/`` as artefacts), every trial a run
    nested under it (rayfal.kind=trial, tag ``trial``; params = the trial's job, the sampled
    values included) and the trial's campaign runs nested under the trial run, logged by the
    same :class:`MlflowTracker` as ``rayfal run`` (step = n_labelled; a retried trial resumes
    its runs, found by the trial directory).

    Picklable (only strings): the driver makes it, each trial's campaign task calls
    :meth:`trial_tracker`. Why not Ray's ``MLflowLoggerCallback``: it logs Tune's result dicts
    with ``step = training_iteration``, starts a new MLflow run for a retried trial (its
    recovered rounds would be logged twice) and sets MLflow's global tracking URI.
    """

    def __init__(self, uri: str, experiment: str, resolved: Mapping[str, Any],
                 run_dir: str | Path, *, run_name_prefix: str | None = None,
                 artifact_location: str | None = None) -> None:
        self.uri, self.experiment = uri, experiment
        self.prefix = run_name_prefix or ""
        self.run_dir = str(Path(run_dir).resolve())
        self.artifact_location = artifact_location
        self._tracker: MlflowTracker | None = MlflowTracker(
            uri, experiment, resolved, self.run_dir, run_name_prefix=run_name_prefix,
            artifact_location=artifact_location, kind="tune")
        self.parent_run_id = self._tracker.job_run_id  # eager: the trials need it

    @classmethod
    def from_job(cls, cfg: Any, resolved: Mapping[str, Any], run_dir: str | Path
                 ) -> TuneTracking | None:
        """The tracking of the job ``cfg`` (``None`` without ``tracking.mlflow``)."""
        ml = getattr(getattr(cfg, "tracking", None), "mlflow", None)
        if ml is None:
            return None
        return cls(ml.uri, ml.experiment or cfg.name, resolved, run_dir,
                   run_name_prefix=ml.run_name_prefix, artifact_location=ml.artifact_location)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None}

    def trial_tracker(self, trial_job: Mapping[str, Any], trial_dir: str | Path
                      ) -> MlflowTracker:
        """The tracker of one trial's campaign (``run_job(..., on_round=tracker.on_round)``,
        then ``tracker.finish()``), nested under the tuning run."""
        trial = Path(trial_dir).name
        return MlflowTracker(self.uri, self.experiment, trial_job, trial_dir,
                             run_name_prefix=f"{self.prefix}{trial}/", parent_run_id=
                             self.parent_run_id, kind="trial",
                             job_run_name=f"{self.prefix}{trial}", extra_tags={"trial": trial})

    def finish(self, results_dir: str | Path | None = None, *, status: str = "FINISHED"
               ) -> None:
        """Driver side, after ``Tuner.fit``: runs of trials that were stopped (ASHA) or died
        are ended as KILLED, ``results_dir`` is logged under ``report/`` and the tuning run
        ends with ``status``."""
        if self._tracker is None:
            raise RuntimeError("TuneTracking.finish() runs in the driver that made it")
        self._tracker.end_running_children(self.parent_run_id, "KILLED")
        self._tracker.finish(results_dir, status=status)


__all__ = [
    "MlflowTracker",
    "TuneTracking",
    "default_artifact_location",
    "flatten_params",
    "mlflow_key",
    "record_metrics",
    "status_of",
]
