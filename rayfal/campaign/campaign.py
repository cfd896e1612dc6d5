"""One campaign: a (strategy, seed) pair with its own ledger and round records.

Round ``r``: train on the ledger's labelled rows (Ray Train, from the initial weights, or
from round ``r - 1``'s with ``training.warm_start``) -> evaluate on the held-out test set
(:mod:`rayfal.campaign.evaluate`) -> select ``query_size`` rows (:mod:`rayfal.campaign.select`) -> ask the oracle for their labels
(:mod:`rayfal.campaign.oracle`) -> write the round record (atomic) -> commit the labels to the
ledger (they are labelled from round ``r + 1`` on).

Crash safety: the record is written before the ledger commit and holds the selected rows and
their labels, so ``--resume`` re-commits them (a no-op when already there) and continues at the
next round: nothing is lost or repeated. The ledger is the only store of "labelled".

Labels from people: when the oracle cannot answer a batch yet, the query (with the round's
record) is kept in ``pending.json`` (:mod:`rayfal.campaign.pending`), the batch is handed to
the oracle (query files), and :class:`~rayfal.campaign.oracle.AwaitingLabels` ends this
campaign's run; ``--resume`` picks the query up without retraining once the labels are in
(``accept_partial``: go on with the rows labelled so far).
"""

from __future__ import annotations

import hashlib
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
from rayfal.campaign.oracle import AwaitingLabels, LabelAnswer
from rayfal.campaign.oracles import make_oracle
from rayfal.campaign.pending import PendingQuery, clear_pending, read_pending, write_pending
from rayfal.campaign.pretrain import ensure_pretrained_trunk
from rayfal.campaign.rundir import check_round_records
from rayfal.campaign.schedule import group_fracs, initial_selection, schedule
from rayfal.campaign.select import RoundState, select_round
from rayfal.campaign.warm_start import round_init_state
from rayfal.config import CampaignConfig, campaign_training
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.data.sources.adult import initial_row_ids
from rayfal.labelling.batches import QueryBatch
from rayfal.models.checkpoint import build_from_config, load_checkpoint
from rayfal.training.compose import inference_model
from rayfal.training.distributed import fit_round
from rayfal.training.modes import needs_group_head

log = logging.getLogger("rayfal")


def job_fingerprint(cfg) -> str:
    """A hash of the job's settings that decide a campaign's rounds (not ``ray`` or
    ``tracking``): a ledger written under another job is refused."""
    raw = {k: v for k, v in cfg.to_dict().items() if k not in ("ray", "tracking")}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        self.ledger.bind_identity({"job": job_fingerprint(ctx.cfg), "campaign": campaign.name,
                                   "seed": str(seed), "pool": ctx.pool_fingerprint})
        self.oracle = make_oracle(ctx.cfg.oracle, ctx.pool, ledger=self.ledger,
                                  queries_dir=ctx.run_dir / "queries" / campaign.name /
                                  f"seed_{seed}", num_classes=ctx.num_classes)
        num_groups = int(max(ctx.groups)) + 1 if needs_group_head(self.training.mode) else None
        torch.manual_seed(seed)
        trunk = None
        if ctx.cfg.model.pretrained is not None:  # pretrained once per run dir (cached)
            trunk = ensure_pretrained_trunk(ctx.cfg.model, ctx.pool.input_shape, ctx.run_dir)
        init, self.spec = build_from_config(ctx.cfg.model, ctx.pool.input_shape,
                                            ctx.num_classes, num_groups=num_groups,
                                            run_dir=ctx.run_dir, trunk_dir=trunk)
        self.init_state = save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()})

    def records(self) -> list[dict]:
        """The round records written so far, in round order."""
        paths = sorted((self.dir / "rounds").glob("round_*.json"),
                       key=lambda p: int(p.stem.removeprefix("round_")))
        return [json.loads(p.read_text()) for p in paths]

    def groups_of(self, row_ids) -> np.ndarray:
        return self.ctx.pool.take(np.asarray(row_ids, dtype=np.int64), [S.GROUP])[S.GROUP]

    # ------------------------------------------------------------------ asking for labels
    def ask(self, pending: PendingQuery) -> LabelAnswer:
        """The oracle's labels for the pending query's rows, in query order. When some are
        missing the query is kept on disk and handed to the oracle, and
        :class:`AwaitingLabels` is raised, unless ``accept_partial`` and some are labelled."""
        ids = np.asarray(pending.row_id, np.int64)
        answer = self.oracle.labels_for(ids, pending.round + 1)
        missing = answer.missing(ids)
        if len(missing) == 0:
            return answer.subset(ids)
        if self.ctx.accept_partial and len(missing) < len(ids):
            log.warning("campaign %s seed %s: going on with %d of %d labels (--accept-partial)",
                        self.campaign.name, self.seed, len(ids) - len(missing), len(ids))
            return answer.subset(ids)
        write_pending(self.dir, pending)  # before the request: a crash re-asks on --resume
        files = self.oracle.request(QueryBatch(
            self.campaign.name, self.seed, pending.round, ids, np.asarray(pending.group),
            None if pending.score is None else np.asarray(pending.score)))
        if files and not pending.files:
            pending.files = {k: str(v) for k, v in files.items()}
            write_pending(self.dir, pending)
        where = f"campaign {self.campaign.name} seed {self.seed}: "
        if answer.ties:
            where += f"annotators tie on row_id {answer.ties[:10]}; "
        raise AwaitingLabels(len(missing), len(ids), where,
                             pending.files.get("csv", "") if pending.files else "")

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        """Run (or continue) every round of the campaign; returns all its round records."""
        ctx, cfg = self.ctx, self.ctx.cfg
        pool = ctx.pool
        n_queries = schedule(cfg, pool.num_rows)
        check_round_records(self.dir)  # no gaps or foreign records before resuming
        records = self.records()
        pending = read_pending(self.dir)
        if pending is not None and (len(self.ledger) if pending.round < 0
                                    else pending.round < len(records)):
            clear_pending(self.dir)  # the round it asked for is already recorded
            pending = None
        if len(self.ledger) == 0:
            init = initial_row_ids(pool)  # the data's own D0 ('initial' column: adult.py)
            if init is None:
                init = initial_selection(pool.row_ids(), cfg.al.initial_labels, self.seed)
            answer = self.ask(PendingQuery(-1, init.tolist(), self.groups_of(init).tolist(),
                                           ctx.num_classes))
            source = "initial" if answer.source == "simulated" else answer.source
            self.ledger.commit(answer.row_id, answer.label, round=0,
                               groups=self.groups_of(answer.row_id), source=source,
                               annotator=answer.annotator or None)
            clear_pending(self.dir)
            pending = None
        if records and records[-1]["selected"]:  # resume: re-commit (idempotent)
            last = records[-1]
            self.ledger.commit(last["selected"], last["selected_labels"],
                               round=last["round"] + 1, groups=self.groups_of(last["selected"]),
                               source=last.get("label_source", "simulated"),
                               annotator=last.get("selected_annotators"))
        start = len(records)
        for rec in records if self.on_round else []:
            self.on_round(rec)
        desc = f"{self.campaign.name} seed={self.seed}"
        with tqdm(total=n_queries + 1, initial=start, desc=desc, unit="round",
                  disable=not ctx.progress) as bar:
            for r in range(start, n_queries + 1):
                t0 = time.perf_counter()
                if pending is not None and pending.round == r and pending.record is not None:
                    rec = self.finish_round(r, pending.record, pending)
                    pending = None
                else:
                    rec = self.round(r, query=r < n_queries, n_rounds=n_queries)
                records.append(rec)
                if self.on_round:
                    self.on_round(rec)
                log.info("campaign %s seed %d round %d: %d labels, accuracy %.4f, dA %.4f, "
                         "%.1f s", self.campaign.name, self.seed, r, rec["n_labelled"],
                         rec["accuracy"], rec["predictive_parity"], time.perf_counter() - t0)
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
            data=data, spec=self.spec,
            init_state=round_init_state(self.dir, r, self.init_state, spec=self.spec,
                                        warm_start=self.training.warm_start),
            training=self.training,
            seed=self.seed * 1000 + r, out_dir=round_dir,
            storage_path=ctx.run_dir / "_ray_train",
            run_name=f"{self.campaign.name}-s{self.seed}-r{r}",
        )
        t1 = time.perf_counter()
        # the model as it predicts under its mode (GBA's test-time mask; else itself)
        model = inference_model(self.training.mode, self.training.mode_params,
                                load_checkpoint(round_dir)[0])
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
        if not query:
            rec.update({f"query_frac_group_{g}": float("nan") for g in ctx.groups})
            rec.update(group_fracs("pool", pool.group_counts(exclude=ids), ctx.groups))
            rec.update({"pool_counts": None, "n_queried": 0, "score_seconds": 0.0,
                        "score_nodes": 0})
            return self.finish_round(r, rec, None)
        sel = select_round(ctx, RoundState(
            r=r, seed=self.seed, name=self.campaign.name, strategy=self.campaign.strategy,
            params=dict(self.campaign.params), model=model, round_dir=round_dir,
            work_dir=self.dir, labelled={"row_id": ids, **data}, metrics=metrics,
            spec=self.spec, init_state=self.init_state, training=self.training,
            n_rounds=n_rounds,
            oracle=lambda ids: self.oracle.labels_for(ids).labels_in_order(ids)))
        rec.update(sel.record)
        rec.update(group_fracs("pool", sel.pool_counts, ctx.groups))
        rec.update({"score_seconds": sel.seconds, "score_nodes": sel.nodes})
        pending = PendingQuery(r, sel.selected.tolist(), self.groups_of(sel.selected).tolist(),
                               ctx.num_classes, None if sel.scores is None else
                               [float(v) for v in sel.scores], rec)
        return self.finish_round(r, rec, pending)

    def finish_round(self, r: int, rec: dict, pending: PendingQuery | None) -> dict:
        """Label the round's query (``pending``; ``None``: no query), write the round record,
        then commit the labels (the record first: ``--resume`` re-commits from it)."""
        rec = {k: v for k, v in rec.items() if k != "pool_counts"}
        if pending is None or not pending.row_id:
            selected, sel_labels = np.zeros(0, np.int64), np.zeros(0, np.int64)
            sel_groups, answer = np.zeros(0, np.int64), None
        else:
            answer = self.ask(pending)
            selected, sel_labels = answer.row_id, answer.label
            sel_groups = self.groups_of(selected)
        if pending is not None:
            rec.update(group_fracs("query", sel_groups, self.ctx.groups))
        rec.setdefault("ms_train_seconds", 0.0)  # JIN's M_S training (FRAL Table 2)
        rec.update({"n_queried": int(len(selected)), "selected": selected.tolist(),
                    "selected_labels": sel_labels.tolist()})
        if answer is not None and answer.source != "simulated":
            rec.update(label_source=answer.source, selected_annotators=list(answer.annotator))
        atomic_write_text(self.dir / "rounds" / f"round_{r:03d}.json", json.dumps(rec))
        if len(selected):
            self.ledger.commit(selected, sel_labels, round=r + 1, groups=sel_groups,
                               source=answer.source, annotator=answer.annotator or None)
        clear_pending(self.dir)
        return rec
