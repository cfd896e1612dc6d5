"""The selection step of a round, dispatched on the strategy's declared ``kind``.

* ``per_row``  — the pool is streamed through Ray Data (:func:`rayfal.scoring.per_row.score_pool`),
  the driver keeps a bounded candidate table and the strategy's ``select`` picks from it;
* ``two_pass`` — JIN: the campaign layer trains the auxiliary standard model ``M_S`` (Ray Train,
  same labelled set, initial weights and seed as the campaign's robust ``M_R``), then the pool
  is scored in two passes (:func:`rayfal.scoring.two_pass.score_pool_jin`); the record gets
  JIN's diagnostics (:mod:`rayfal.acquisition.jin_diagnostics`: M_S vs M_R clean test accuracy,
  the picks' share in ``z*`` and Jaccard overlap with G-RAND's pick from the same state,
  Spearman of each score term with M_R's confidence over the scored rows);
* ``whole_pool`` — a :class:`~rayfal.acquisition.view.PoolView` of the round (labelled set,
  model, and what the strategy ``requires``: meta split, fairness set, oracle, a meta-trained
  policy) is handed to ``select_pool``.

Whatever a strategy ``requires`` is computed here and passed in as values: ``worst_group``
(z*, :func:`rayfal.campaign.evaluate.worst_group`), the standard model, the PANDA policy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayfal.acquisition.base import Strategy, make_strategy, select_in_memory, strategy_class
from rayfal.acquisition.jin_diagnostics import (
    chance_jaccard,
    clean_accuracy,
    pick_overlap,
    share_in_group,
    spearman,
)
from rayfal.acquisition.view import LabelledSet, PoolView, check_selection, subsample_ids
from rayfal.campaign.evaluate import worst_group
from rayfal.campaign.warm_start import round_init_state
from rayfal.data import schema as S
from rayfal.models.checkpoint import load_checkpoint
from rayfal.models.predict import deterministic_probs
from rayfal.scoring.per_row import score_pool
from rayfal.scoring.two_pass import score_pool_jin
from rayfal.training.distributed import fit_round

#: campaign-directory file pinning z* to h^0's (``worst_group_from: h0``)
WORST_GROUP_H0 = "worst_group_h0.json"


@dataclass
class Selection:
    """The rows to query this round, with the pool composition and record fields."""

    selected: np.ndarray
    pool_counts: dict[int, int]
    seconds: float = 0.0
    nodes: int = 0
    record: dict[str, Any] = field(default_factory=dict)
    scores: np.ndarray | None = None  # the strategy's scores of the selected rows, if any


@dataclass
class RoundState:
    """What the selection step of round ``r`` needs from the campaign (values only)."""

    r: int
    seed: int
    name: str  # the campaign's name (run names, file names)
    strategy: str
    params: dict
    model: Any  # the round's trained model (eval mode)
    round_dir: Path
    work_dir: Path  # the campaign directory (strategy state such as PANDA's ranking)
    labelled: dict[str, np.ndarray]  # row_id, x (raw), y, group of the labelled rows
    metrics: dict[str, float]
    spec: dict
    init_state: bytes
    training: Any  # the campaign's TrainingConfig
    n_rounds: int
    oracle: Any = None  # row_ids -> labels (whole-pool strategies that ask during selection)


def select_round(ctx, st: RoundState) -> Selection:
    """Run the campaign's strategy for round ``st.r`` (module docstring)."""
    cfg = ctx.cfg
    strategy_cls = strategy_class(st.strategy)
    kwargs = dict(st.params)
    record: dict[str, Any] = {}
    if "worst_group" in strategy_cls.requires:
        pinned = st.work_dir / WORST_GROUP_H0
        if kwargs.get("worst_group_from") == "h0" and st.r > 0 and pinned.is_file():
            info = json.loads(pinned.read_text())  # the group h^0 (round 0's model) is worse on
            z = int(info.pop("worst_group"))
        else:
            z, info = worst_group(cfg.evaluation, ctx.val, st.model, st.metrics, st.seed)
            if kwargs.get("worst_group_from") == "h0" and st.r == 0:
                pinned.write_text(json.dumps({**info, "worst_group": z}, default=float))
        kwargs["worst_group"] = z
        record.update(info, worst_group=z)
    strategy = make_strategy(st.strategy, seed=st.seed, round=st.r, **kwargs)
    if strategy.kind == "whole_pool":
        sel = _select_whole_pool(ctx, st, strategy)
    else:
        budget = cfg.al.query_size
        weights = (st.round_dir / "model.safetensors").read_bytes()
        if strategy.kind == "two_pass":
            res, extra = _score_two_pass(ctx, st, kwargs, weights)
            record.update(extra)
        else:
            res = score_pool(
                ctx.pool, strategy=st.strategy, strategy_params=kwargs, seed=st.seed,
                round=st.r, budget=budget, labelled=st.labelled["row_id"],
                model=(st.spec, weights) if strategy.needs_probs else None, cfg=cfg.scoring,
                use_gpu=st.training.use_gpu, progress=ctx.progress)
        selected = np.asarray(strategy.select(res.candidates, budget), np.int64)
        cand = res.candidates
        by_id = dict(zip(cand.row_id.tolist(), cand.score.tolist(), strict=True))
        sel = Selection(selected, dict(cand.group_counts), res.seconds, res.nodes,
                        scores=np.asarray([by_id.get(int(i), np.nan) for i in selected]))
        if strategy.kind == "two_pass":
            record.update(_jin_pick_fields(ctx, st, kwargs.get("worst_group"), selected, res))
    ids = st.labelled["row_id"]
    if len(np.unique(sel.selected)) != len(sel.selected) or np.isin(sel.selected, ids).any():
        raise RuntimeError(f"strategy '{strategy.name}' selected repeated/labelled rows")
    sel.record = {**record, **sel.record}
    return sel


def _score_two_pass(ctx, st: RoundState, kwargs: dict, weights: bytes):
    """JIN (FRAL Algorithm 1, lines 6-8): train ``M_S`` (mode ``standard``) on the round's
    labelled set from the campaign's initial weights and seed, then score with both models.
    ``ms_train_seconds`` is reported apart from ``score_seconds`` (the paper's Table 2)."""
    std_training = st.training.model_copy(update={"mode": "standard", "mode_params": {}})
    ms_dir = st.round_dir / "m_std"
    t0 = time.perf_counter()
    init = round_init_state(st.work_dir, st.r, st.init_state, spec=st.spec, checkpoint="m_std",
                            warm_start=st.training.warm_start)  # M_S fine-tuned like M_R
    fit_round(data={k: st.labelled[k] for k in ("x", "y", "group")}, spec=st.spec,
              init_state=init, training=std_training, seed=st.seed * 1000 + st.r,
              out_dir=ms_dir, storage_path=ctx.run_dir / "_ray_train",
              run_name=f"{st.name}-s{st.seed}-r{st.r}-mstd")
    ms_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = ctx.test  # M_S vs M_R clean accuracy on the reported test set (Eq. 2's premise)
    pred_s = deterministic_probs(load_checkpoint(ms_dir)[0], test.x).argmax(1)
    pred_r = deterministic_probs(st.model, test.x).argmax(1)
    acc = {**clean_accuracy(test.y, pred_s, test.group, "ms_std_"),
           "mr_std_accuracy": clean_accuracy(test.y, pred_r, test.group, "")["accuracy"]}
    ms_eval_seconds = time.perf_counter() - t1
    res = score_pool_jin(
        ctx.pool, strategy=st.strategy, strategy_params=kwargs, seed=st.seed, round=st.r,
        budget=ctx.cfg.al.query_size, labelled=st.labelled["row_id"],
        model_std=(st.spec, (ms_dir / "model.safetensors").read_bytes()),
        model_rob=(st.spec, weights), cfg=ctx.cfg.scoring, use_gpu=st.training.use_gpu,
        progress=ctx.progress)
    extra = {"ms_train_seconds": ms_seconds, "ms_eval_seconds": ms_eval_seconds,
             "jin_rows_scored": int(len(res.scored_row_id)), **acc}
    for name, m in (("std", res.moments_std), ("rob", res.moments_rob)):
        extra[f"jin_I_{name}_mean"] = float(m.mean) if m.count else float("nan")
        extra[f"jin_I_{name}_std"] = m.std if m.count else float("nan")
    # Spearman over the scored rows (z*'s unlabelled rows) of each raw term with M_R's
    # confidence max_c p(x, M_R), which pass 1 computes anyway (no extra model call)
    n = len(res.scored_row_id)
    extra["jin_spearman_rob_conf"] = (spearman(res.scored_i_rob, res.scored_conf_r) if n
                                      else float("nan"))
    extra["jin_spearman_std_conf"] = (spearman(res.scored_i_std, res.scored_conf_r) if n
                                      else float("nan"))
    return res, extra


def _jin_pick_fields(ctx, st: RoundState, z: int | None, selected: np.ndarray, res
                     ) -> dict[str, Any]:
    """JIN's pick against G-RAND's from the same state (labelled set, ``z*``, seed, round):
    the share of JIN's picks in ``z*`` (1 for G-RAND when ``z*`` has >= B unlabelled rows),
    G-RAND's share, their Jaccard overlap (G-RAND's own seeded uniform keys, in memory on the
    pool's row_id/group index: no model call) and the mean M_R confidence of JIN's picks vs
    all scored rows."""
    ids, groups = ctx.pool.row_ids(), ctx.pool.groups()
    by_id = dict(zip(ids.tolist(), groups.tolist(), strict=True))
    picked_groups = np.asarray([by_id[int(i)] for i in selected], np.int64)
    grand = select_in_memory(
        make_strategy("group_random", seed=st.seed, round=st.r, worst_group=z), ids, groups,
        len(selected), labelled=np.asarray(st.labelled["row_id"], np.int64))
    grand_groups = np.asarray([by_id[int(i)] for i in grand], np.int64)
    conf = dict(zip(res.scored_row_id.tolist(), res.scored_conf_r.tolist(), strict=True))
    picked_conf = [conf[int(i)] for i in selected if int(i) in conf]
    nan = float("nan")
    return {
        "jin_pick_share_zstar": share_in_group(picked_groups, z) if z is not None else nan,
        "grand_pick_share_zstar": share_in_group(grand_groups, z) if z is not None else nan,
        "jin_grand_jaccard": pick_overlap(selected, grand),
        # the same for two independent uniform picks from z*'s unlabelled rows (JIN's scope)
        "jin_grand_jaccard_chance": chance_jaccard(len(res.scored_row_id), len(selected),
                                                   len(grand)),
        "jin_pick_conf_r_mean": float(np.mean(picked_conf)) if picked_conf else nan,
        "jin_scored_conf_r_mean": (float(np.mean(res.scored_conf_r))
                                   if len(res.scored_conf_r) else nan),
    }


def _sample_split(split, size: int | None, seed: int, salt: int) -> LabelledSet:
    ids = subsample_ids(split.row_ids(), size, seed, salt)
    rows = split.take(ids, [split.feature_column, S.LABEL, S.GROUP])
    return LabelledSet(ids, S.to_model_input(rows[split.feature_column], split.input_shape),
                       rows[S.LABEL].astype(np.int64), rows[S.GROUP].astype(np.int64))


def _meta_split(cfg, run_dir: Path):
    """The data's pre-existing labelled split D (PANDA's meta data; FairAL's fairness set)."""
    if cfg.dataset.name != "adult":
        return None
    from rayfal.data.sources.adult import open_split

    return open_split(cfg.dataset, run_dir, "meta")


def _select_whole_pool(ctx, st: RoundState, strategy: Strategy) -> Selection:
    cfg = ctx.cfg
    t0 = time.perf_counter()
    labelled = LabelledSet(
        np.asarray(st.labelled["row_id"], np.int64),
        S.to_model_input(st.labelled["x"], ctx.pool.input_shape),
        np.asarray(st.labelled["y"], np.int64), np.asarray(st.labelled["group"], np.int64))
    meta = fairness = None
    meta_split = _meta_split(cfg, ctx.run_dir)
    if meta_split is not None:
        if "meta" in strategy.requires or "policy" in strategy.requires:
            meta = _sample_split(meta_split, strategy.meta_rows(), 0, 0x3E7A)
        if "fairness" in strategy.requires:
            fairness = _sample_split(meta_split, strategy.fairness_rows(), st.seed, 0xFA1)
    info: dict[str, Any] = {}
    policy = None
    if "policy" in strategy.requires:
        policy, meta_seconds = _policy_for(ctx, strategy, meta, st.n_rounds, st.seed)
        if meta_seconds is not None:
            info["meta_train_seconds"] = meta_seconds
    view = PoolView(
        pool=ctx.pool, labelled=labelled, model=st.model, budget=cfg.al.query_size,
        seed=st.seed, round=st.r, n_rounds=max(1, st.n_rounds), fairness=fairness, meta=meta,
        oracle=st.oracle,
        policy=policy, work_dir=st.work_dir, mc_samples=cfg.scoring.mc_samples, info=info)
    from rayfal.acquisition.fairal import FairALStrategy
    from rayfal.scoring.fairal_refits import ray_refit_scorer, use_ray_refits

    if isinstance(strategy, FairALStrategy) and use_ray_refits(cfg.scoring, ctx.pool.num_rows):
        import ray  # FairAL's refits as a Ray Data job (the driver keeps the candidate table)

        strategy.use_refit_scorer(*ray_refit_scorer(cfg.scoring, ray.cluster_resources()))
    selected = check_selection(strategy, view, strategy.select_pool(view, cfg.al.query_size),
                               cfg.al.query_size)
    if view.info:
        (st.round_dir / "selection_info.json").write_text(json.dumps(view.info, default=float))
    # PANDA's meta-training (before round 0) is not selection time: reported separately
    seconds = time.perf_counter() - t0 - float(view.info.get("meta_train_seconds", 0.0))
    counts = dict(sorted(ctx.pool.group_counts(exclude=labelled.row_id).items()))
    return Selection(selected, counts, seconds, 1)


def _policy_for(ctx, strategy: Strategy, meta: LabelledSet | None, n_rounds: int, seed: int):
    """PANDA: the meta-trained policy the strategy needs (Algorithm 1 on the data's meta split
    D), trained once per settings and cached in ``run_dir/panda/policy-<hash>`` (shared by the
    job's campaigns, and by its seeds unless ``dataset.per_seed``: then each campaign seed
    meta-trains its own policy on its own D, with meta-training seed ``train.seed + seed``);
    ``(None, None)`` when the strategy loads its own checkpoint. Ray Train workers:
    ``params.workers``. Next to the policy: ``meta_training.csv`` (the per-step log) and
    ``heldout.csv`` (policy vs random picks on held-out tasks of D,
    :mod:`rayfal.acquisition.panda.diagnose`)."""
    from rayfal.acquisition.panda import load_policy, policy_dir_name, train_policy

    settings = strategy.meta_training_settings(ctx.cfg.al.query_size * max(1, n_rounds))
    if settings is None:
        return None, None
    if meta is None:
        raise ValueError(f"strategy '{strategy.name}' without a 'policy' checkpoint meta-trains "
                         "on the data's 'meta' split (dataset 'adult'); this data set has none")
    key = dict(settings)
    if getattr(ctx.cfg.dataset, "per_seed", False):
        settings = {**settings, "seed": int(settings.get("seed", 0)) + int(seed)}
        key = {**settings, "data_seed": int(ctx.cfg.dataset.seed)}
    t0 = time.perf_counter()
    out = ctx.run_dir / "panda" / policy_dir_name(key)
    path = train_policy((meta.x, meta.y, meta.group), settings, out, resume=True,
                        num_workers=int(getattr(strategy.params, "workers", 0)), progress=False)
    policy = load_policy(path)[0]
    heldout = out / "heldout.csv"
    n_tasks = int(getattr(strategy.params, "heldout_tasks", 0))
    if n_tasks and not heldout.is_file():
        import pandas as pd

        from rayfal.acquisition.panda import PandaSettings, as_metadata
        from rayfal.acquisition.panda.diagnose import heldout_diagnostics

        tr = ctx.cfg.training
        rows = heldout_diagnostics(
            policy, as_metadata((meta.x, meta.y, meta.group)), PandaSettings.from_dict(settings),
            n_tasks=n_tasks, training={"lr": tr.lr, "batch_size": tr.batch_size,
                                       "epochs": tr.epochs, "min_steps": tr.min_steps})
        pd.DataFrame(rows).to_csv(heldout, index=False)
    return policy, time.perf_counter() - t0
