"""rayfal's public Python API: load a job, run it, write one's own data into a pool.

    import rayfal
    pool = rayfal.write_pool("data/pool", row_id=ids, group=g, features=x, label=y)
    job = rayfal.load_job("jobs/tiny.yaml", overrides={"dataset": {...}})
    result = rayfal.run(job, run_dir="runs/mine")
    result.records  # one row per (campaign, seed, round)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Job:
    """A validated job: the typed config and the resolved mapping (as saved in ``job.yaml``)."""

    config: Any  # rayfal.config.JobConfig
    resolved: dict
    source: str = "<dict>"


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns."""

    run_dir: Path
    records: pd.DataFrame  # one row per (variant, campaign, seed, round)
    report_dir: Path | None = None
    #: campaigns waiting for people's labels: campaign, seed, missing, requested, file
    awaiting: list[dict] = field(default_factory=list)


def _overrides_list(overrides: Any) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        import yaml

        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return [str(o) for o in overrides]


def load_job(job: str | Path | Mapping, overrides: Mapping[str, Any] | list[str] | None = None
             ) -> Job:
    """Load and validate a job from a YAML path or a mapping.

    ``overrides`` are dotted keys, as a mapping (``{"al.query_size": 20}``) or as ``--set``
    strings (``["al.query_size=20"]``). Raises :class:`rayfal.config.ConfigError` with one line
    naming the key, the bad value and what is allowed; nothing is created or started.
    """
    from rayfal.config import load_job as _load

    source = str(job) if not isinstance(job, Mapping) else "<dict>"
    cfg, resolved = _load(copy.deepcopy(dict(job)) if isinstance(job, Mapping) else job,
                          _overrides_list(overrides))
    return Job(cfg, resolved, source)


def run(job: Job | str | Path | Mapping, run_dir: str | Path | None = None, *,
        resume: bool = False, address: str | None = None, progress: bool = True,
        report: bool = True, baseline: str = "uniform",
        accept_partial: bool = False) -> RunResult:
    """Run every campaign of ``job`` (a :class:`Job`, a YAML path or a mapping) on an embedded
    local Ray (``address=None``) or a cluster (``"auto"``, ``"ray://..."``).

    ``run_dir`` defaults to ``runs/<job name>``. With ``resume=True`` a stopped run continues
    from its last committed round. Jobs with ``variants`` run each variant in
    ``run_dir/<variant>``. Returns the round records and, with ``report=True``, writes the
    report (tables, plots, paired differences against the campaign ``baseline``) into
    ``run_dir/report``.

    With an oracle of people (``oracle.kind: files``) a campaign whose query batch is not
    labelled yet stops there: ``result.awaiting`` lists them with the file to fill in; import
    the labels (``rayfal labels import``) and call ``run(..., resume=True)`` again
    (``accept_partial=True``: go on with the rows labelled so far).
    """
    from rayfal.campaign import run_job
    from rayfal.config import expand_variants

    if not isinstance(job, Job):
        job = load_job(job)
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / job.config.name
    tracker = None
    if getattr(job.config, "tracking", None) is not None:  # tracking: {mlflow: {...}}
        from rayfal.tracking import make_tracker

        tracker = make_tracker(job.config, job.resolved, run_dir)
    try:
        frames, dirs = [], []
        for name, sub_cfg, sub_resolved in expand_variants(job.config, job.resolved):
            sub_dir = run_dir / name if name else run_dir
            if name and progress:
                print(f"== variant {name} -> {sub_dir}")
            on_round = tracker.callback(name, sub_resolved, sub_dir) if tracker else None
            frames.append(run_job(sub_cfg, sub_resolved, sub_dir, resume=resume,
                                  address=address, progress=progress, on_round=on_round,
                                  accept_partial=accept_partial))
            dirs.append(sub_dir)
        awaiting = [{**w, **({"variant": n} if n else {})} for f, (n, _, _) in
                    zip(frames, expand_variants(job.config, job.resolved), strict=True)
                    for w in f.attrs.get("awaiting", [])]
        records = pd.concat(frames, ignore_index=True)
        report_dir = None
        if report and len(records):
            from rayfal.report import write_report

            report_dir = run_dir / "report"
            write_report(dirs, report_dir, baseline=baseline)
    except BaseException as exc:
        if tracker is not None:
            from rayfal.tracking import status_of

            try:
                tracker.finish(None, status=status_of(exc))
            except Exception as track_exc:  # keep the job's own error
                import logging

                logging.getLogger("rayfal").warning("MLflow: ending the runs failed: %s",
                                                    track_exc)
        raise
    if tracker is not None:
        tracker.finish(report_dir)
    return RunResult(run_dir, records, report_dir, awaiting)
