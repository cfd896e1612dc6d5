"""One campaign: a (strategy, seed) pair with its own ledger and round records.

Round ``r``: train on the ledger's labelled rows (Ray Train, weights reset to the initial
state) -> evaluate on the held-out test set (:mod:`rayfal.campaign.evaluate`) -> select
``query_size`` rows (:mod:`rayfal.campaign.select`) -> ask the oracle for their labels
(:mod:`rayfal.campaign.oracle`) -> write the round record (atomic) -> commit the labels to the
ledger (they are labelled from round ``r + 1`` on).

Crash safety: the record is written before the ledger commit and holds the selected rows and
their labels, so ``--resume`` re-commits them (a no-op when already there) and continues at the
next round: nothing is lost or repeated. The ledger is the only store of "labelled".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from rayfal.atomic import atomic_write_text
from rayfal.campaign.context import Context
from rayfal.campaign.evaluate import evaluate_round
from rayfal.campaign.oracle import AwaitingLabels
from rayfal.campaign.schedule import group_fracs, initial_selection, schedule
from rayfal.campaign.select import RoundState, select_round
from rayfal.config import CampaignConfig, campaign_training
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.data.sources.adult import initial_row_ids
from rayfal.models.checkpoint import build_from_config, load_checkpoint
from rayfal.training.distributed import fit_round
from rayfal.training.modes import needs_group_head

log = logging.getLogger("rayfal")


class Campaign:
    """One (strategy, seed) labelling campaign with its own ledger and round records."""

    def __init__(self, ctx: Context, campaign: CampaignConfig, seed: int,
                 on_round: Callable[[dict], None] | None = None) -> None:
        self.ctx, self.campaign, self.seed = ctx, campaign, seed
        # called with every round record in order, also those recovered on --resume (tune)
        self.on_round = on_round
        self.dir = ctx.run_dir / "campaigns" / campaign.name / f"seed_{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.training = campaign_training(ctx.cfg, campaign)
        self.ledger = LabelLedger(self.dir / "ledger.sqlite", is_known=ctx.pool.is_known)
        num_groups = int(max(ctx.groups)) + 1 if needs_group_head(self.training.mode) else None
        torch.manual_seed(seed)
        init, self.spec = build_from_config(ctx.cfg.model, ctx.pool.input_shape,
                                            ctx.num_classes, num_groups=num_groups)
        self.init_state = save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()})

    def records(self) -> list[dict]:
        """The round records written so far, in round order."""
        return [json.loads(p.read_text())
                for p in sorted((self.dir / "rounds").glob("round_*.json"))]

    def groups_of(self, row_ids) -> np.ndarray:
        return self.ctx.pool.take(np.asarray(row_ids, dtype=np.int64), [S.GROUP])[S.GROUP]

    def labels_of(self, row_ids: np.ndarray) -> tuple[np.ndarray, str]:
        """The oracle's labels of ``row_ids`` (in order) and their source; raises
        :class:`~rayfal.campaign.oracle.AwaitingLabels` naming the campaign when the oracle
        has not labelled every row yet."""
        answer = self.ctx.oracle.labels_for(row_ids)
        missing = answer.missing(row_ids)
        if len(missing):
            raise AwaitingLabels(len(missing), len(row_ids),
                                 f"campaign {self.campaign.name} seed {self.seed}: ")
        return answer.labels_in_order(row_ids), answer.source

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        """Run (or continue) every round of the campaign; returns all its round records."""
        ctx, cfg = self.ctx, self.ctx.cfg
        pool = ctx.pool
        n_queries = schedule(cfg, pool.num_rows)
        if len(self.ledger) == 0:
            init = initial_row_ids(pool)  # the data's own D0 ('initial' column: adult.py)
            if init is None:
                init = initial_selection(pool.row_ids(), cfg.al.initial_labels, self.seed)
            labels, _ = self.labels_of(init)
            self.ledger.commit(init, labels, round=0, groups=self.groups_of(init),
                               source="initial")
        records = self.records()
        if records and records[-1]["selected"]:  # resume: re-commit (idempotent)
            last = records[-1]
            self.ledger.commit(last["selected"], last["selected_labels"],
                               round=last["round"] + 1, groups=self.groups_of(last["selected"]),
                               source=last.get("label_source", "simulated"))
        start = len(records)
        for rec in records if self.on_round else []:
            self.on_round(rec)
        desc = f"{self.campaign.name} seed={self.seed}"
        with tqdm(total=n_queries + 1, initial=start, desc=desc, unit="round",
                  disable=not ctx.progress) as bar:
            for r in range(start, n_queries + 1):
                rec = self.round(r, query=r < n_queries, n_rounds=n_queries)
                records.append(rec)
                if self.on_round:
                    self.on_round(rec)
                bar.set_postfix(n=rec["n_labelled"], acc=f"{rec['accuracy']:.3f}",
                                dA=f"{rec['predictive_parity']:.3f}")
                bar.update(1)
        return records

    def round(self, r: int, *, query: bool, n_rounds: int) -> dict:
        """Train, evaluate and (when ``query``) select and label for round ``r``."""
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
        metrics = evaluate_round(
            cfg.evaluation, ctx.test, model, seed=self.seed, mode=self.training.mode,
            mode_params=self.training.mode_params, labelled=data, input_shape=pool.input_shape)
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
            sel = select_round(ctx, RoundState(
                r=r, seed=self.seed, name=self.campaign.name, strategy=self.campaign.strategy,
                params=dict(self.campaign.params), model=model, round_dir=round_dir,
                work_dir=self.dir, labelled={"row_id": ids, **data}, metrics=metrics,
                spec=self.spec, init_state=self.init_state, training=self.training,
                n_rounds=n_rounds))
            rec.update(sel.record)
            selected, pool_counts = sel.selected, sel.pool_counts
            score_seconds, score_nodes = sel.seconds, sel.nodes
        if len(selected):
            sel_labels, source = self.labels_of(selected)
            sel_groups = self.groups_of(selected)
        else:
            sel_labels, source = np.zeros(0, np.int64), "simulated"
            sel_groups = np.zeros(0, np.int64)
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
            self.ledger.commit(selected, sel_labels, round=r + 1, groups=sel_groups,
                               source=source)
        return rec
