"""Run a job: every campaign (strategy x seed) on one shared context, with resume checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from rayfal.atomic import atomic_write_text
from rayfal.campaign.campaign import Campaign
from rayfal.campaign.context import Context, all_groups, read_eval_set, split_validation
from rayfal.campaign.oracle import make_oracle
from rayfal.config import ConfigError, JobConfig
from rayfal.data.sources import open_dataset
from rayfal.ray_env import init_ray

log = logging.getLogger("rayfal")

ROUNDS_CSV = "rounds.csv"
JOB_YAML = "job.yaml"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Round records as a table (without the per-row ``selected`` lists)."""
    return pd.DataFrame([{k: v for k, v in r.items() if k not in ("selected", "selected_labels")}
                         for r in records])


def check_resume(run_dir: Path, resolved: dict, resume: bool) -> None:
    """Refuse to mix two jobs in one run directory; ``--resume`` needs the same job."""
    saved = run_dir / JOB_YAML
    started = any(run_dir.glob("campaigns/*/seed_*/rounds/round_*.json"))
    if saved.exists() and not started and not resume:
        return  # a run that failed before its first round: start it again
    if saved.exists():
        if not resume:
            raise ConfigError(
                f"run directory {run_dir} already holds a run; pass --resume to continue it "
                "or choose another --run-dir"
            )
        old = yaml.safe_load(saved.read_text())
        diff = sorted(k for k in set(old) | set(resolved)
                      if k != "ray" and old.get(k) != resolved.get(k))
        if diff:
            raise ConfigError(
                f"--resume: the job differs from the one in {saved} in section(s) {diff}; "
                "resume with the same job file and --set values"
            )
    elif resume:
        log.warning("--resume: %s holds no run yet; starting a new one", run_dir)


def build_context(cfg: JobConfig, run_dir: Path, *, progress: bool) -> Context:
    """Open (or generate) the data, read the held-out sets and make the oracle."""
    pool, test_split = open_dataset(cfg.dataset, run_dir / "data")
    if cfg.al.initial_labels > pool.num_rows:
        raise ConfigError(
            f"al.initial_labels={cfg.al.initial_labels} exceeds the pool's {pool.num_rows} rows"
        )
    test, val = split_validation(read_eval_set(test_split), cfg.evaluation.val_fraction)
    oracle_kind = getattr(getattr(cfg, "oracle", None), "kind", "simulated")
    return Context(
        cfg=cfg, run_dir=run_dir, pool=pool, test=test, val=val,
        groups=all_groups(pool, test),
        scenario=cfg.dataset.scenario if cfg.dataset.name == "glyphs" else cfg.dataset.name,
        progress=progress, oracle=make_oracle(oracle_kind, pool),
    )


def run_job(
    cfg: JobConfig,
    resolved: dict,
    run_dir: str | Path,
    *,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    on_round: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Run every campaign (strategy x seed) of a job; returns all round records."""
    run_dir = Path(run_dir)
    check_resume(run_dir, resolved, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / JOB_YAML, yaml.safe_dump(resolved, sort_keys=False))
    ctx = build_context(cfg, run_dir, progress=progress)
    init_ray(address or cfg.ray.address, num_cpus=cfg.ray.num_cpus,
             object_store_memory=cfg.ray.object_store_memory,
             include_dashboard=cfg.ray.include_dashboard)
    all_records: list[dict] = []
    for campaign in cfg.campaigns:
        for seed in cfg.seeds:
            all_records += Campaign(ctx, campaign, seed, on_round=on_round).run()
            atomic_write_text(run_dir / ROUNDS_CSV, records_frame(all_records).to_csv(index=False))
    return records_frame(all_records)
