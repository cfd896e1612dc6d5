"""The labelling-round loop. The only place that knows about rounds.

Per campaign (strategy x seed), round r:
  train on the ledger's labelled rows (Ray Train, weights reset to the initial state)
  -> evaluate on the held-out test set -> score the unlabelled pool (Ray Data)
  -> select ``query_size`` rows -> the simulated oracle reveals their labels
  -> write the round record (atomic) -> commit the labels to the ledger (round r + 1).

Crash safety: the record is written before the ledger commit and holds the selected rows and
their labels, so ``--resume`` re-commits them (a no-op when already there) and continues at the
next round: nothing is lost or repeated. The ledger is the only store of "labelled".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from rayfal.acquisition import (
    STRATEGIES,
    make_strategy,
    row_uniform,
    select_in_memory,
)
from rayfal.acquisition.pool_level import select_round
from rayfal.atomic import atomic_write_text
from rayfal.config import CampaignConfig, ConfigError, JobConfig, TrainingConfig
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.data.pool import Pool
from rayfal.data.sources import open_dataset
from rayfal.data.sources.adult import initial_row_ids
from rayfal.evaluation import evaluate_model
from rayfal.fairness.bias import read_bias_aligned, round_bias_metrics
from rayfal.models import build_model
from rayfal.models.checkpoint import load_checkpoint, model_spec
from rayfal.robust_eval import apply_validation_split, robust_round_metrics, round_worst_group
from rayfal.scoring.jin_scoring import jin_round_query
from rayfal.scoring.pool_scoring import score_pool
from rayfal.training.distributed import fit_round
from rayfal.training.fairlearn_mode import round_metrics as fairlearn_round_metrics
from rayfal.training.modes import make_loss, needs_group_head

log = logging.getLogger("rayfal")

ROUNDS_CSV = "rounds.csv"
JOB_YAML = "job.yaml"


def schedule(cfg: JobConfig, pool_size: int) -> int:
    """Number of queries R (rounds 0..R train; rounds 0..R-1 query)."""
    al = cfg.al
    if al.rounds is not None:
        return al.rounds
    target = math.floor(al.max_frac * pool_size + 1e-9)
    return max(0, (target - al.initial_labels) // al.query_size)


def initial_selection(pool: Pool, n: int, seed: int) -> np.ndarray:
    """The initial labelled set: ``n`` uniform rows, a function of the seed only (so every
    strategy of a seed starts from the same labels: paired comparisons)."""
    ids = pool.row_ids()
    key = row_uniform(ids, seed, 0x1417)
    return ids[np.lexsort((ids, -key))[: min(n, len(ids))]]


def campaign_training(cfg: JobConfig, campaign: CampaignConfig) -> TrainingConfig:
    """The job's training section with the campaign's overrides applied (validated on load)."""
    return dataclasses.replace(cfg.training, **campaign.training)


def group_fracs(prefix: str, groups: np.ndarray | dict[int, int], all_groups: list[int]) -> dict:
    if isinstance(groups, dict):
        counts = {g: groups.get(g, 0) for g in all_groups}
    else:
        counts = {g: int(np.sum(groups == g)) for g in all_groups}
    total = sum(counts.values())
    return {f"{prefix}_frac_group_{g}": (c / total if total else float("nan")) for g, c in counts.items()}


@dataclass
class Context:
    """What every campaign of a job shares."""

    cfg: JobConfig
    run_dir: Path
    pool: Pool
    test_x: torch.Tensor
    test_y: np.ndarray
    test_group: np.ndarray
    test_row_id: np.ndarray
    groups: list[int]
    scenario: str
    progress: bool
    # (row_id, 0/1) when the test set has a bias_aligned column (rayfal/fairness/bias.py)
    test_bias_aligned: tuple[np.ndarray, np.ndarray] | None = None
    # validation split for z* (evaluation.val_fraction > 0; rayfal/robust_eval.py)
    val: Any = None


class Campaign:
    """One (strategy, seed) labelling campaign with its own ledger and round records."""

    def __init__(self, ctx: Context, campaign: CampaignConfig, seed: int,
                 on_round: Callable[[dict], None] | None = None) -> None:
        self.ctx, self.campaign, self.seed = ctx, campaign, seed
        # called with every round record in order, also those recovered on --resume (rayfal tune)
        self.on_round = on_round
        self.dir = ctx.run_dir / "campaigns" / campaign.name / f"seed_{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.training = campaign_training(ctx.cfg, campaign)
        self.ledger = LabelLedger(self.dir / "ledger.sqlite", is_known=ctx.pool.is_known)
        make_strategy(campaign.strategy, seed=seed, **campaign.params)  # validate early
        make_loss(self.training.mode, **self.training.mode_params)
        pool = ctx.pool
        self.num_classes = self._num_classes()
        mcfg = ctx.cfg.model
        kwargs: dict[str, Any] = {"dropout": mcfg.dropout, "hidden": mcfg.hidden}
        name = mcfg.name if mcfg.name != "auto" else ("cnn" if len(pool.input_shape) == 3 else "mlp")
        if name == "cnn":
            kwargs["width"] = mcfg.width
        if needs_group_head(self.training.mode):  # GRAD / GBA: a group head on the trunk
            kwargs["num_groups"] = int(max(ctx.groups)) + 1
        self.spec = model_spec(name, pool.input_shape, self.num_classes, **kwargs)
        torch.manual_seed(seed)
        init = build_model(name, pool.input_shape, self.num_classes, **kwargs)
        self.init_state = save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()})

    def _num_classes(self) -> int:
        return int(max(self.ctx.test_y.max(), 1)) + 1

    def records(self) -> list[dict]:
        out = []
        for p in sorted((self.dir / "rounds").glob("round_*.json")):
            out.append(json.loads(p.read_text()))
        return out

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        ctx, cfg = self.ctx, self.ctx.cfg
        pool = ctx.pool
        n_queries = schedule(cfg, pool.num_rows)
        if len(self.ledger) == 0:
            init = initial_row_ids(pool)  # the data's own D0 ('initial' column: adult.py)
            if init is None:
                init = initial_selection(pool, cfg.al.initial_labels, self.seed)
            self.ledger.commit(init, self._oracle(init), round=0, groups=self._groups(init),
                               source="initial")
        records = self.records()
        if records and records[-1]["selected"]:  # resume: re-commit (idempotent)
            last = records[-1]
            self.ledger.commit(last["selected"], last["selected_labels"],
                               round=last["round"] + 1, groups=self._groups(last["selected"]))
        start = len(records)
        for rec in records if self.on_round else []:
            self.on_round(rec)
        desc = f"{self.campaign.name} seed={self.seed}"
        with tqdm(total=n_queries + 1, initial=start, desc=desc, unit="round",
                  disable=not ctx.progress) as bar:
            for r in range(start, n_queries + 1):
                rec = self.round(r, query=r < n_queries)
                records.append(rec)
                if self.on_round:
                    self.on_round(rec)
                bar.set_postfix(n=rec["n_labelled"], acc=f"{rec['accuracy']:.3f}",
                                dA=f"{rec['predictive_parity']:.3f}")
                bar.update(1)
        return records

    def _oracle(self, row_ids: np.ndarray) -> np.ndarray:
        """Simulated oracle: reveal the hidden labels of these rows."""
        if not self.ctx.pool.has_labels:
            raise ConfigError("the pool has no hidden 'label' column: a simulated campaign needs one")
        return self.ctx.pool.take(row_ids, [S.LABEL])[S.LABEL]

    def _groups(self, row_ids) -> np.ndarray:
        return self.ctx.pool.take(np.asarray(row_ids, dtype=np.int64), [S.GROUP])[S.GROUP]

    def round(self, r: int, *, query: bool) -> dict:
        ctx, cfg, pool = self.ctx, self.ctx.cfg, self.ctx.pool
        labels = self.ledger.to_frame()
        ids = labels["row_id"].to_numpy(np.int64)
        rows = pool.take(ids, [pool.feature_column, S.GROUP])
        data = {"x": rows[pool.feature_column], "y": labels["label"].to_numpy(np.int64),
                "group": rows[S.GROUP]}
        round_dir = self.dir / f"round_{r:03d}"
        t0 = time.perf_counter()
        train_logs = fit_round(
            data=data, spec=self.spec, init_state=self.init_state, training=self.training,
            seed=self.seed * 1000 + r, out_dir=round_dir,
            storage_path=ctx.run_dir / "_ray_train",
            run_name=f"{self.campaign.name}-s{self.seed}-r{r}",
        )
        t1 = time.perf_counter()
        model, _ = load_checkpoint(round_dir)
        metrics = evaluate_model(
            model, ctx.test_x, ctx.test_y, ctx.test_group,
            mc_samples=cfg.evaluation.mc_samples, batch_size=cfg.evaluation.batch_size,
            seed=self.seed, row_keys=ctx.test_row_id,
        )
        metrics.update(round_bias_metrics(ctx, model, self.seed))  # GBA Tables 1/4 columns
        metrics.update(robust_round_metrics(ctx, model, self.seed))  # FRAL Eq. 1 (robust: true)
        metrics = fairlearn_round_metrics(self, model, data, metrics)  # PANDA F/DP/EB; fairlearn
        t2 = time.perf_counter()
        rec: dict[str, Any] = {
            "scenario": ctx.scenario, "campaign": self.campaign.name,
            "strategy": self.campaign.strategy, "mode": self.training.mode,
            "seed": self.seed, "round": r, "n_labelled": int(len(ids)),
            "frac_labelled": len(ids) / pool.num_rows,
            **metrics,
            **group_fracs("labelled", data["group"], ctx.groups),
            "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
            "train_loss": float(train_logs.get("train_ce", float("nan"))),
            "train_workers": int(train_logs.get("world_size", 1)),
            "train_nodes": len(str(train_logs.get("train_nodes", "")).split(",")),
        }
        selected = np.zeros(0, np.int64)
        pool_counts: dict[int, int] = {}
        score_seconds, score_nodes = 0.0, 0
        if query:
            params = dict(self.campaign.params)
            if getattr(STRATEGIES.get(self.campaign.strategy), "needs_worst_group", False):
                # FRAL Algorithm 1: z* = the group with the lowest accuracy this round
                # (on the validation split when evaluation.val_fraction > 0)
                params["worst_group"], z_info = round_worst_group(ctx, model, metrics, self.seed)
                rec.update(z_info, worst_group=params["worst_group"])
            strategy = make_strategy(self.campaign.strategy, seed=self.seed, round=r, **params)
            weights = (round_dir / "model.safetensors").read_bytes()
            if getattr(strategy, "needs_robust_pair", False):  # JIN: M_S + two-pass scoring
                res, jin_info = jin_round_query(self, r, data=data, ids=ids,
                                                round_dir=round_dir, params=params)
                rec.update(jin_info)
            elif getattr(strategy, "pool_level", False):  # coreset/badge/fairal/panda
                res = select_round(self, strategy, r, ids, data, round_dir)
            else:
                res = score_pool(
                    pool, strategy=self.campaign.strategy, strategy_params=params,
                    seed=self.seed, round=r, budget=cfg.al.query_size, labelled=ids,
                    model=(self.spec, weights) if strategy.needs_probs else None,
                    cfg=cfg.scoring, use_gpu=self.training.use_gpu, progress=ctx.progress,
                )
            selected = strategy.select(res.candidates, cfg.al.query_size)
            if len(np.unique(selected)) != len(selected) or np.isin(selected, ids).any():
                raise RuntimeError(f"strategy '{strategy.name}' selected repeated/labelled rows")
            pool_counts = dict(res.candidates.group_counts)
            score_seconds, score_nodes = res.seconds, res.nodes
        sel_labels = self._oracle(selected) if len(selected) else np.zeros(0, np.int64)
        sel_groups = self._groups(selected) if len(selected) else np.zeros(0, np.int64)
        rec.update(group_fracs("query", sel_groups, ctx.groups) if query else
                   {f"query_frac_group_{g}": float("nan") for g in ctx.groups})
        rec.update(group_fracs("pool", pool_counts, ctx.groups) if query else
                   group_fracs("pool", pool.group_counts(exclude=ids), ctx.groups))
        rec.setdefault("ms_train_seconds", 0.0)  # JIN's M_S training (FRAL Table 2)
        rec.update({"n_queried": int(len(selected)), "score_seconds": score_seconds,
                    "score_nodes": score_nodes,
                    "selected": selected.tolist(), "selected_labels": sel_labels.tolist()})
        atomic_write_text(self.dir / "rounds" / f"round_{r:03d}.json", json.dumps(rec))
        if len(selected):
            self.ledger.commit(selected, sel_labels, round=r + 1, groups=sel_groups)
        return rec


def records_frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("selected", "selected_labels")}
                       for r in records])
    return df


def init_ray(cfg: JobConfig, address: str | None) -> None:
    """Connect to ``address`` (``auto``, ``ray://...``) or start an embedded local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    address = address or cfg.ray.address
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(  # "local": always a new embedded Ray, even if a cluster runs on this host
            address="local",
            num_cpus=cfg.ray.num_cpus,
            object_store_memory=cfg.ray.object_store_memory,
            include_dashboard=cfg.ray.include_dashboard,
            **kwargs,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False


def _check_resume(run_dir: Path, resolved: dict, resume: bool) -> None:
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
    _check_resume(run_dir, resolved, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / JOB_YAML, yaml.safe_dump(resolved, sort_keys=False))
    pool, test = open_dataset(cfg.dataset, run_dir / "data")
    if cfg.al.initial_labels > pool.num_rows:
        raise ConfigError(
            f"al.initial_labels={cfg.al.initial_labels} exceeds the pool's {pool.num_rows} rows"
        )
    test_rows = test.read_all([S.ROW_ID, test.feature_column, S.LABEL, S.GROUP])
    groups = sorted(set(np.unique(pool.groups()).tolist()) | set(np.unique(test_rows[S.GROUP]).tolist()))
    if len(groups) < 2:
        log.warning("only one group (%s) in the data: every disparity metric is 0", groups)
    init_ray(cfg, address)
    ctx = Context(
        cfg=cfg, run_dir=run_dir, pool=pool,
        test_x=torch.from_numpy(S.to_model_input(test_rows[test.feature_column], test.input_shape)),
        test_y=test_rows[S.LABEL].astype(np.int64), test_group=test_rows[S.GROUP].astype(np.int64),
        test_row_id=test_rows[S.ROW_ID].astype(np.int64),
        groups=groups, scenario=cfg.dataset.scenario if cfg.dataset.name == "glyphs" else cfg.dataset.name,
        progress=progress,
    )
    ctx.test_bias_aligned = read_bias_aligned(test)
    apply_validation_split(ctx)  # evaluation.val_fraction > 0: z* from a validation split
    all_records: list[dict] = []
    for campaign in cfg.campaigns:
        for seed in cfg.seeds:
            all_records += Campaign(ctx, campaign, seed, on_round=on_round).run()
            df = records_frame(all_records)
            atomic_write_text(run_dir / ROUNDS_CSV, df.to_csv(index=False))
    return records_frame(all_records)


__all__ = ["Campaign", "run_job", "select_in_memory", "schedule", "initial_selection"]
