"""Run a job: every campaign (strategy x seed) on one shared context, with resume checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from rayfal.atomic import atomic_write_text
from rayfal.campaign.campaign import Campaign, job_fingerprint
from rayfal.campaign.context import Context, all_groups, read_eval_set, split_validation
from rayfal.campaign.oracle import AwaitingLabels
from rayfal.campaign.provenance import end_entry, start_entry
from rayfal.campaign.rundir import (
    RunDirError,
    campaign_state,
    check_campaign_state,
    describe_state,
    holds_run_dir_lock,
    read_saved_job,
    remove_stale_files,
)
from rayfal.campaign.schedule import check_schedule, known_pool_rows
from rayfal.config import ConfigError, JobConfig
from rayfal.data.sources import open_dataset
from rayfal.data.sources.adult import initial_row_ids
from rayfal.data.validate import check_pool_labels
from rayfal.ray_env import init_ray

log = logging.getLogger("rayfal")

ROUNDS_CSV = "rounds.csv"
JOB_YAML = "job.yaml"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Round records as a table (without the per-row ``selected`` lists)."""
    skip = ("selected", "selected_labels", "selected_annotators")
    return pd.DataFrame([{k: v for k, v in r.items() if k not in skip} for r in records])


def check_resume(run_dir: Path, resolved: dict, resume: bool) -> None:
    """Refuse to mix two jobs, or two runs of one job, in one run directory.

    Without ``resume`` the directory may hold a ``job.yaml`` and data (a run that stopped
    before any campaign state, or data prepared once) but no campaign state (ledgers, round
    records, round directories, ``rounds.csv``: :func:`~rayfal.campaign.rundir.campaign_state`).
    With ``resume``, campaign state needs the saved ``job.yaml``, which must equal the job in
    every section but ``ray``, and every campaign's state must belong to it (campaign names,
    seeds, consecutive round records of that strategy, a ledger matching them:
    :func:`~rayfal.campaign.rundir.check_campaign_state`). Errors are
    :class:`~rayfal.campaign.rundir.RunDirError` naming the directory or file."""
    state = campaign_state(run_dir)
    saved = run_dir / JOB_YAML
    if not resume:
        if state:
            raise RunDirError(
                f"run directory {run_dir} already holds a run (campaign state: "
                f"{describe_state(run_dir, state)}); pass --resume to continue it or choose "
                "another --run-dir"
            )
        return  # nothing but a job file and data: start (again)
    if not saved.exists():
        if state:
            raise RunDirError(
                f"--resume: run directory {run_dir} holds campaign state "
                f"({describe_state(run_dir, state)}) but no {JOB_YAML}, so which job it belongs "
                "to cannot be checked; choose another --run-dir"
            )
        log.warning("--resume: %s holds no run yet; starting a new one", run_dir)
        return
    old = read_saved_job(saved)
    diff = sorted(k for k in set(old) | set(resolved)
                  if k not in ("ray", "tracking") and old.get(k) != resolved.get(k))
    if diff:
        raise RunDirError(
            f"--resume: the job differs from the one in {saved} in section(s) {diff}; "
            "resume with the same job file and --set values"
        )
    check_campaign_state(run_dir, resolved)


def data_per_seed(cfg: JobConfig) -> bool:
    """Whether each campaign seed draws its own data (``dataset.per_seed``)."""
    return bool(getattr(cfg.dataset, "per_seed", False))


def seed_config(cfg: JobConfig, seed: int | None) -> JobConfig:
    """The job as campaign seed ``seed`` sees it: with ``dataset.per_seed`` the data seed is
    ``dataset.seed + seed`` (glyphs and Colored-MNIST: the rows generated, pool and test;
    Adult: the meta/pool/test split and D0), so seeds are independent draws; the strategies
    of one seed still share its data and initial labels (paired comparisons)."""
    if seed is None:
        return cfg
    data = cfg.dataset.model_copy(update={"seed": cfg.dataset.seed + int(seed)})
    return cfg.model_copy(update={"dataset": data})


def build_context(cfg: JobConfig, run_dir: Path, *, progress: bool,
                  accept_partial: bool = False) -> Context:
    """Open (or generate) the data and read the held-out sets."""
    pool, test_split = open_dataset(cfg.dataset, run_dir / "data")
    init = initial_row_ids(pool)  # the data's own D0 (adult), else al.initial_labels
    check_schedule(cfg, pool.num_rows, initial=None if init is None else len(init))
    if pool.has_labels:
        check_pool_labels(pool, test_split)
    if not test_split.has_labels:
        raise ConfigError(f"dataset.test: {test_split.files[0]}: the test set has no 'label' "
                          "column; evaluation needs a labelled test set")
    if cfg.oracle.kind == "simulated" and not pool.has_labels:
        raise ConfigError(f"dataset.pool: {pool.files[0]}: the pool has no 'label' column, "
                          "which the simulated oracle reveals; set oracle.kind: files to have "
                          "people label the queries")
    test, val = split_validation(read_eval_set(test_split), cfg.evaluation.val_fraction)
    return Context(
        cfg=cfg, run_dir=run_dir, pool=pool, test=test, val=val,
        groups=all_groups(pool, test),
        scenario=cfg.dataset.scenario if cfg.dataset.name == "glyphs" else cfg.dataset.name,
        progress=progress, accept_partial=accept_partial,
    )


@holds_run_dir_lock  # the run directory's lock and pool-check cache for the whole call
def run_job(
    cfg: JobConfig,
    resolved: dict,
    run_dir: str | Path,
    *,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    on_round: Callable[[dict], None] | None = None,
    accept_partial: bool = False,
) -> pd.DataFrame:
    """Run every campaign (strategy x seed) of a job; returns all round records.

    A campaign whose oracle is waiting for people's labels stops there (its query is kept on
    disk) and the others go on; the waiting ones are listed in the result's
    ``attrs["awaiting"]`` (campaign, seed, missing, requested, file)."""
    # (run_dir's lock is held and the pools' row checks are cached in it: @holds_run_dir_lock)
    run_dir = Path(run_dir)
    check_resume(run_dir, resolved, resume)
    check_schedule(cfg, known_pool_rows(cfg.dataset))  # pool size known from the job file
    remove_stale_files(run_dir)  # temp files and Ray Train scratch of a killed run
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / JOB_YAML, yaml.safe_dump(resolved, sort_keys=False))
    entry = start_entry(run_dir, job_fingerprint(cfg))
    status = "failed"
    try:
        df = _run_campaigns(cfg, run_dir, address=address, progress=progress,
                            on_round=on_round, accept_partial=accept_partial)
        status = "awaiting labels" if df.attrs["awaiting"] else "finished"
        return df
    finally:
        end_entry(run_dir, entry, status)


def _run_campaigns(cfg: JobConfig, run_dir: Path, *, address: str | None, progress: bool,
                   on_round: Callable[[dict], None] | None, accept_partial: bool
                   ) -> pd.DataFrame:
    contexts: dict[int | None, Context] = {}

    def context_for(seed: int) -> Context:
        """The shared context, or with ``dataset.per_seed`` the seed's own data draw."""
        key = seed if data_per_seed(cfg) else None
        if key not in contexts:
            contexts[key] = build_context(seed_config(cfg, key), run_dir, progress=progress,
                                          accept_partial=accept_partial)
        return contexts[key]

    context_for(cfg.seeds[0])  # data errors before Ray starts
    init_ray(address or cfg.ray.address, num_cpus=cfg.ray.num_cpus,
             object_store_memory=cfg.ray.object_store_memory,
             include_dashboard=cfg.ray.include_dashboard)
    all_records: list[dict] = []
    awaiting: list[dict] = []
    for campaign in cfg.campaigns:
        for seed in cfg.seeds:
            camp = Campaign(context_for(seed), campaign, seed, on_round=on_round)
            try:
                all_records += camp.run()
            except AwaitingLabels as wait:
                log.warning("%s", wait)
                all_records += camp.records()
                awaiting.append({"campaign": campaign.name, "seed": seed,
                                 "missing": wait.missing, "requested": wait.requested,
                                 "file": wait.files})
            if all_records:
                atomic_write_text(run_dir / ROUNDS_CSV,
                                  records_frame(all_records).to_csv(index=False))
    df = records_frame(all_records)
    df.attrs["awaiting"] = awaiting
    return df
