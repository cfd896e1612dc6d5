"""Experiment tracking of campaigns (``tracking:`` in the job file).

Only MLflow for now (:mod:`rayfal.tracking.mlflow`); :func:`make_tracker` builds the tracker a
job asks for (``None`` when tracking is off). MLflow itself is imported only when a tracker is
made, so ``import rayfal`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayfal.tracking.mlflow import (
    MlflowTracker,
    TuneTracking,
    flatten_params,
    record_metrics,
    status_of,
)


def make_tracker(cfg: Any, resolved: dict, run_dir: str | Path) -> MlflowTracker | None:
    """The tracker of the job ``cfg`` (a :class:`rayfal.config.JobConfig`) for ``run_dir``, or
    ``None`` when the job has no ``tracking:`` section."""
    tracking = getattr(cfg, "tracking", None)
    ml = getattr(tracking, "mlflow", None) if tracking is not None else None
    if ml is None:
        return None
    return MlflowTracker(ml.uri, ml.experiment or cfg.name, resolved, run_dir,
                         run_name_prefix=ml.run_name_prefix,
                         artifact_location=ml.artifact_location)


__all__ = [
    "MlflowTracker",
    "TuneTracking",
    "flatten_params",
    "make_tracker",
    "record_metrics",
    "status_of",
]
