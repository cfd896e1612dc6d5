"""Two-pass pool scoring on Ray Data: JIN (FRAL Algorithm 1, lines 6-8; the maths is in
:mod:`rayfal.acquisition.jin`), the strategies of kind ``two_pass``.

Pass 1 (Ray Data, actor or task pool): every batch of the pool drops labelled rows; for the
unlabelled rows of the worst group ``z*`` only, the worker runs the standard model ``M_S`` and
the robust model ``M_R`` on the benign input, attacks ``M_R`` with batched L-inf PGD
(:func:`rayfal.attacks.pgd_row_keyed`, random start keyed by row_id) and returns the raw
inconsistencies ``I_std`` (Eq. 2) and ``I_rob`` (Eq. 3) per row, with the robust model's
confidence ``max_c p(x, M_R)`` (a by-product, kept for the round's diagnostics). The driver
folds each output batch into mergeable :class:`~rayfal.acquisition.jin.RunningMoments` (Chan's
parallel merge), giving the *global* mean/std over every scored row of every shard (Eq. 4).

Pass 2 (driver-side finalisation): ``I = N(I_std) + N(I_rob)`` with the global moments, for
every scored row. The top-``B`` of a sum of two z-scores is not determined by per-term top-k
lists, so the driver keeps ``(row_id, I_std, I_rob, conf_R)`` for every scored (unlabelled,
``z*``) row: O(rows of z*) memory, 32 bytes a row (a 10^7-row worst group = 320 MB; beyond
that a second Ray Data pass over spilled per-row terms would be needed). Rows outside ``z*`` are not scored
(no model call); they go through a bounded :class:`CandidateReducer` with a constant score so
that a query can be filled uniformly at random when ``z*`` has fewer than ``B`` unlabelled rows.
The result is exactly the in-memory reference (:func:`rayfal.acquisition.select_in_memory`)
on the same inputs, whatever the shard split or batch size (tested).

Probabilities are those of the deterministic network (MC dropout off): the paper's models have
no MC dropout, and the attack differentiates that network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from rayfal.acquisition import CandidateReducer, make_strategy
from rayfal.acquisition.jin import (
    OUTSIDE_SCORE,
    JinStrategy,
    RunningMoments,
    inconsistency_rob,
    inconsistency_std,
)
from rayfal.attacks import AttackSpec, pgd_row_keyed
from rayfal.config import ScoringConfig
from rayfal.data import schema as S
from rayfal.data.pool import Pool
from rayfal.models.predict import deterministic_probs
from rayfal.scoring.per_row import (
    ScoringResult,
    actor_pool_size,
    map_batches_args,
    scoring_device,
    use_actor_pool,
)


def attack_seed(seed: int, round: int) -> int:
    """Seed of the row-keyed PGD random starts of one campaign round."""
    return int(seed) * 1_000_003 + int(round) * 7 + 0x1A


def jin_batch_terms(
    m_s: torch.nn.Module, m_r: torch.nn.Module, x: torch.Tensor, row_id: np.ndarray, *,
    attack: AttackSpec, seed: int, return_conf: bool = False,
) -> tuple[np.ndarray, ...]:
    """``(I_std, I_rob)`` for one batch (Eq. 2, 3). ``attack.loss == "ce"`` attacks the robust
    model's predicted label (the rows are unlabelled). With ``return_conf`` a third array, the
    robust model's confidence ``max_c p(x, M_R)`` on the benign input (a by-product kept for
    the round's diagnostics)."""
    p_s = deterministic_probs(m_s, x)
    p_r = deterministic_probs(m_r, x)
    y = torch.from_numpy(p_r.argmax(1)) if attack.loss == "ce" else None
    x_adv = pgd_row_keyed(m_r, x, y, row_keys=row_id, seed=seed, attack=attack)
    p_adv = deterministic_probs(m_r, x_adv)
    terms = (inconsistency_std(p_s, p_r), inconsistency_rob(p_r, p_adv))
    if return_conf:
        return (*terms, np.asarray(p_r, np.float64).max(axis=1))
    return terms


class JinScorer:
    """Ray Data callable (pass 1): raw JIN inconsistencies of the unlabelled rows of ``z*``."""

    def __init__(self, *, labelled_ref, models_ref, worst_group: int | None, attack: dict,
                 seed: int, feature_column: str, input_shape: tuple[int, ...], threads: int,
                 use_gpu: bool) -> None:
        import ray
        from safetensors.torch import load as load_safetensors

        from rayfal.models.checkpoint import model_from_spec

        self.device = scoring_device(use_gpu)  # first: fail before any work without the GPU
        torch.set_num_threads(max(1, threads))
        self.labelled = np.sort(np.asarray(ray.get(labelled_ref), dtype=np.int64))
        self.worst_group = worst_group
        self.feature_column, self.input_shape = feature_column, tuple(input_shape)
        self.seed = seed
        (spec_s, w_s), (spec_r, w_r) = ray.get(models_ref)
        self.models = []
        for spec, weights in ((spec_s, w_s), (spec_r, w_r)):
            model = model_from_spec(spec)
            model.load_state_dict(load_safetensors(weights))
            self.models.append(model.to(self.device).eval())
        clamp = (0.0, 1.0) if len(self.input_shape) == 3 else None
        self.attack = AttackSpec(eps=attack["eps"], alpha=attack["alpha"], steps=attack["steps"],
                                 loss=attack["loss"], clamp=clamp)
        self.node = np.int64(int(ray.get_runtime_context().get_node_id()[:15], 16))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        row_id = np.asarray(batch[S.ROW_ID], dtype=np.int64)
        keep = np.ones(len(row_id), bool)
        if len(self.labelled):
            pos = np.minimum(np.searchsorted(self.labelled, row_id), len(self.labelled) - 1)
            keep = self.labelled[pos] != row_id
        row_id = row_id[keep]
        group = np.asarray(batch[S.GROUP], dtype=np.int64)[keep]
        scope = np.ones(len(row_id), bool) if self.worst_group is None else (
            group == self.worst_group)
        i_std = np.zeros(len(row_id))
        i_rob = np.zeros(len(row_id))
        conf_r = np.zeros(len(row_id))
        if scope.any():
            feats = np.asarray(batch[self.feature_column])[keep][scope]
            x = torch.from_numpy(S.to_model_input(feats, self.input_shape)).to(self.device)
            i_std[scope], i_rob[scope], conf_r[scope] = jin_batch_terms(
                self.models[0], self.models[1], x, row_id[scope], attack=self.attack,
                seed=self.seed, return_conf=True)
        return {S.ROW_ID: row_id, S.GROUP: group, "in_scope": scope, "i_std": i_std,
                "i_rob": i_rob, "conf_r": conf_r,
                "node": np.full(len(row_id), self.node, np.int64)}


_CACHE: dict[tuple, JinScorer] = {}


def jin_batch_task(batch: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
    """Task-pool variant: one :class:`JinScorer` per worker process and round (cached)."""
    key = (kwargs["seed"], kwargs["labelled_ref"].hex(), kwargs["models_ref"].hex())
    scorer = _CACHE.get(key)
    if scorer is None:
        _CACHE.clear()
        scorer = _CACHE[key] = JinScorer(**kwargs)
    return scorer(batch)


@dataclass
class JinScoringResult(ScoringResult):
    """:class:`ScoringResult` plus JIN's pass-1 outputs (for records and tests)."""

    moments_std: RunningMoments = field(default_factory=RunningMoments)
    moments_rob: RunningMoments = field(default_factory=RunningMoments)
    scored_row_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scored_score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per scored row (aligned with ``scored_row_id``): the raw terms and M_R's confidence
    scored_i_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scored_i_rob: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scored_conf_r: np.ndarray = field(default_factory=lambda: np.zeros(0))


def score_pool_jin(
    pool: Pool,
    *,
    strategy: str,
    strategy_params: dict,
    seed: int,
    round: int,
    budget: int,
    labelled: np.ndarray,
    model_std: tuple[dict, bytes],
    model_rob: tuple[dict, bytes],
    cfg: ScoringConfig,
    use_gpu: bool = False,
    progress: bool = False,
) -> JinScoringResult:
    """JIN scoring of the pool (two passes, see the module docstring); the candidates feed
    ``strategy.select`` as for any other strategy."""
    import ray

    strat = make_strategy(strategy, seed=seed, round=round, **strategy_params)
    if not isinstance(strat, JinStrategy):
        raise ValueError(f"score_pool_jin scores JIN strategies, not '{strategy}'")
    plan = actor_pool_size(cfg, ray.cluster_resources())
    labelled_ref = ray.put(np.asarray(labelled, dtype=np.int64))
    models_ref = ray.put((model_std, model_rob))
    t0 = time.perf_counter()
    ds = ray.data.read_parquet(pool.files, columns=[S.ROW_ID, S.GROUP, pool.feature_column])
    kwargs = dict(labelled_ref=labelled_ref, models_ref=models_ref,
                  worst_group=strat.worst_group, attack=strat.attack,
                  seed=attack_seed(seed, round), feature_column=pool.feature_column,
                  input_shape=pool.input_shape, threads=max(1, int(plan.cpus)),
                  use_gpu=plan.gpus > 0)
    common = map_batches_args(cfg, plan)
    actors = use_actor_pool(cfg, pool.num_rows)
    if actors:
        ray.data.DataContext.get_current().wait_for_min_actors_s = cfg.actor_start_timeout_s
        scored = ds.map_batches(JinScorer, fn_constructor_kwargs=kwargs,
                                compute=ray.data.ActorPoolStrategy(size=plan.size), **common)
    else:
        scored = ds.map_batches(jin_batch_task, fn_kwargs=kwargs,
                                compute=ray.data.TaskPoolStrategy(size=plan.size), **common)
    # pass 1: raw terms of the z* rows, global moments merged batch by batch
    fill = CandidateReducer(strat, budget)  # rows outside z*: bounded, for filling only
    ids, groups, t_std, t_rob, conf = [], [], [], [], []
    m_std, m_rob = RunningMoments(), RunningMoments()
    nodes: set[int] = set()
    seen = 0
    total = pool.num_rows - len(labelled)
    with tqdm(total=total, desc=f"  score {strategy}", unit="row", leave=False,
              disable=not progress) as bar:
        for out in scored.iter_batches(batch_size=None, batch_format="numpy"):
            scope = np.asarray(out["in_scope"], bool)
            seen += len(scope)
            ids.append(out[S.ROW_ID][scope])
            groups.append(out[S.GROUP][scope])
            t_std.append(out["i_std"][scope])
            t_rob.append(out["i_rob"][scope])
            conf.append(out["conf_r"][scope])
            m_std = m_std.combine(RunningMoments.of(out["i_std"][scope]))
            m_rob = m_rob.combine(RunningMoments.of(out["i_rob"][scope]))
            fill.add(out[S.ROW_ID][~scope], out[S.GROUP][~scope],
                     np.full(int((~scope).sum()), OUTSIDE_SCORE))
            nodes.update(np.unique(out["node"]).tolist())
            bar.update(len(scope))
    if seen != total:
        raise RuntimeError(f"JIN scoring saw {seen} unlabelled rows but the pool has {total}: "
                           "a shard was lost or duplicated")
    row_id = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    # pass 2: Eq. 4 with the global moments, then the usual candidate reduction
    final = strat.with_moments(m_std, m_rob)
    i_std = np.concatenate(t_std) if t_std else np.zeros(0)
    i_rob = np.concatenate(t_rob) if t_rob else np.zeros(0)
    score = final.combine(i_std, i_rob) if len(row_id) else np.zeros(0)
    reducer = CandidateReducer(final, budget)
    reducer.add(row_id, np.concatenate(groups) if groups else np.zeros(0, np.int64), score)
    cand_f = fill.result()
    reducer.add(cand_f.row_id, cand_f.group, cand_f.score)
    cand = reducer.result()
    counts = dict(fill.group_counts)
    for g, c in zip(*np.unique(np.concatenate(groups) if groups else np.zeros(0, np.int64),
                               return_counts=True), strict=True):
        counts[int(g)] = counts.get(int(g), 0) + int(c)
    cand.group_counts = dict(sorted(counts.items()))
    return JinScoringResult(
        cand, seen, time.perf_counter() - t0, plan.size, actors, len(nodes),
        moments_std=m_std, moments_rob=m_rob, scored_row_id=row_id, scored_score=score,
        scored_i_std=i_std, scored_i_rob=i_rob,
        scored_conf_r=np.concatenate(conf) if conf else np.zeros(0),
    )
