"""One Ray Tune trial = one (truncated) AL campaign, reporting its metrics after every round.

The campaign (:func:`rayfal.campaign.run_job` on ``RUN_DIR/trials/trial_NNNN``: ledger, round
records, ``job.yaml``) runs in a Ray *streaming-generator task* that the trial's placement
group captures (its second bundle); the trial process only relays each round record to
``tune.report``. Why not in the trial process: Ray 2.60 refuses ``ray.train.get_context`` (and
so Ray Train's local mode, also used by PANDA's meta-training) in a process that holds a Tune
session. The task keeps the campaign's CPUs inside the trial's own reservation: when Tune stops
the trial (ASHA) the task dies with its owner and Tune removes the trial's placement group, so
with local-mode training nothing can leak.

Pacing: after each round the campaign waits for the trial's acknowledgement (a
``ray.util.queue.Queue``), which the trial sends only once ``tune.report`` has returned, i.e.
once Tune wants the next round. A trial that Tune stops is therefore never a round ahead (no
wasted round, no record Tune never saw).

An interrupted trial retried with the same directory resumes at its last committed round;
records recovered that way are re-reported first (``Campaign(on_round=...)`` replays them), so
ASHA's rungs stay aligned.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayfal.models.pretrain import PRETRAINED_DIR
from rayfal.tune.searcher import TRIAL_DIR_KEY, TRIAL_NUMBER_KEY

DATA_LINK = "data"


def numeric_metrics(rec: dict) -> dict[str, float]:
    """The numeric scalars of a round record (+ ``rounds_done`` = round + 1, Tune's time)."""
    out: dict[str, float] = {}
    for k, v in rec.items():
        if isinstance(v, bool | int | float):
            out[k] = float(v) if math.isfinite(float(v)) else float("nan")
    out["rounds_done"] = float(int(rec["round"]) + 1)
    return out


def check_metrics(rec: dict, names: list[str]) -> None:
    missing = [m for m in names if m not in rec]
    if missing:
        available = sorted(k for k, v in rec.items() if isinstance(v, int | float))
        raise KeyError(f"tune objective/constraint metric(s) {missing} are not in the round "
                       f"record; available: {available}")


def campaign_stream(raw: dict, trial_dir: str, source: str, acks=None,
                    tracking=None) -> Iterator[dict]:
    """Run the trial's job and yield its round records (recovered ones first) as they come;
    with ``acks`` (a queue) each round waits for one acknowledgement before the next starts.
    ``tracking`` (:class:`rayfal.tracking.mlflow.TuneTracking`) logs the trial's campaign as
    MLflow runs nested under the search's run."""
    from rayfal.campaign import run_job
    from rayfal.config import config_from_dict

    cfg = config_from_dict(raw, source=source)
    tracker = None if tracking is None else tracking.trial_tracker(cfg.to_dict(), trial_dir)
    records: queue.Queue = queue.Queue()
    failure: list[BaseException] = []
    done = object()

    def on_round(rec: dict) -> None:
        if tracker is not None:
            tracker.on_round(rec)
        records.put(rec)
        if acks is not None:
            acks.get()  # blocks until the trial has reported this round to Tune

    def work() -> None:
        try:
            run_job(cfg, cfg.to_dict(), trial_dir, resume=(Path(trial_dir) / "job.yaml").exists(),
                    progress=False, on_round=on_round)
        except BaseException as exc:  # re-raised in the generator below
            failure.append(exc)
        finally:
            if tracker is not None:
                from rayfal.tracking.mlflow import status_of

                tracker.finish(None, status=status_of(failure[0] if failure else None))
            records.put(done)

    thread = threading.Thread(target=work, name="rayfal-campaign", daemon=True)
    thread.start()
    while (rec := records.get()) is not done:
        yield {k: v for k, v in rec.items() if k not in ("selected", "selected_labels")}
    thread.join()
    if failure:
        raise failure[0]


def run_trial(config: dict[str, Any], *, base: dict, run_dir: str, metrics: list[str],
              trial_job_fn, campaign_cpus: float, tracking=None) -> None:
    """Ray Tune function trainable (``tune.with_parameters`` binds everything but ``config``)."""
    import ray
    from ray import tune

    params = {k: v for k, v in config.items() if not k.startswith("_")}
    trial_dir = Path(run_dir) / "trials" / str(config[TRIAL_DIR_KEY])
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "params.json").write_text(json.dumps(
        {"optuna_number": config.get(TRIAL_NUMBER_KEY), "params": params}, indent=1))
    # every trial reads the data (and the pretrained trunks) prepared once by the tune driver
    for name in (DATA_LINK, PRETRAINED_DIR):
        link = trial_dir / name
        if not link.exists():
            (Path(run_dir).resolve() / name).mkdir(exist_ok=True)
            try:
                os.symlink(Path(run_dir).resolve() / name, link, target_is_directory=True)
            except FileExistsError:
                pass
    raw = trial_job_fn(base, params)
    from ray.util.queue import Queue

    acks = Queue(actor_options={"num_cpus": 0})
    stream = ray.remote(num_cpus=campaign_cpus, max_retries=0, num_returns="streaming")(
        campaign_stream)
    for ref in stream.remote(raw, str(trial_dir), f"tune trial {config[TRIAL_DIR_KEY]}", acks,
                             tracking):
        rec = ray.get(ref)
        check_metrics(rec, metrics)
        tune.report(numeric_metrics(rec))  # returns when Tune wants the next round
        acks.put(True)
