"""The pool-level strategies ``coreset``, ``badge``, ``fairal`` and ``panda`` (protocol and
driver hook: :mod:`rayfal.acquisition.pool_level`). Thin adapters from a :class:`PoolView` to
the pure maths in :mod:`~rayfal.acquisition.diversity`, :mod:`~rayfal.acquisition.fairal` and
:mod:`~rayfal.acquisition.panda`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rayfal.acquisition.base import STRATEGIES, make_strategy, select_in_memory
from rayfal.acquisition.pool_level import PoolStrategy, PoolView, subsample_ids

log = logging.getLogger("rayfal")


def _opt_int(name: str, key: str, value: Any, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"strategy '{name}': {key} must be an integer >= {minimum} or null, "
                         f"got {value!r}")
    return int(value)


def _size(subsample: int | None, budget: int) -> int | None:
    return None if subsample is None else max(subsample, budget)


@torch.no_grad()
def last_layer_inputs(model: nn.Module, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The input of the model's last ``nn.Linear`` (BADGE's ``h(x)``), MC dropout off."""
    from rayfal.models.mc_dropout import deterministic_dropout

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("BADGE needs a model whose last layer is nn.Linear")
    last = linears[-1]
    store: list[torch.Tensor] = []
    handle = last.register_forward_pre_hook(lambda mod, inp: store.append(inp[0].detach()))
    out = []
    try:
        model.eval()
        with deterministic_dropout():
            for s in range(0, len(x), chunk):
                store.clear()
                model(torch.from_numpy(np.ascontiguousarray(x[s : s + chunk])))
                out.append(store[-1].reshape(len(store[-1]), -1).double().numpy())
    finally:
        handle.remove()
    return np.concatenate(out) if out else np.zeros((0, last.in_features))


# ----------------------------------------------------------------------------- in_memory


@STRATEGIES.register("in_memory")
class InMemoryStrategy(PoolStrategy):
    """Any per-row strategy (``base``: random, entropy, margin, bald, group_random, ...) scored
    in the driver process through :func:`~rayfal.acquisition.base.select_in_memory` instead of
    a Ray Data job: the same selection (same scores, reducer and tie-breaks), without Ray
    Data's start-up cost, for pools that fit in memory (``N x C x T`` probabilities). Lets
    small experiments compare selection times of per-row and pool-level strategies on equal
    terms. ``worst_group`` is passed on when the base strategy uses it; other parameters go to
    the base strategy."""

    name = "in_memory"
    needs_worst_group = True

    def __init__(self, *, seed: int, round: int = 0, base: str | None = None,
                 worst_group: int | None = None, **base_params: Any) -> None:
        super().__init__(seed=seed, round=round)
        if base is None:
            raise TypeError("strategy 'in_memory' needs the parameter 'base' (a per-row strategy)")
        if getattr(STRATEGIES.get(base), "pool_level", False):
            raise ValueError(f"in_memory: base '{base}' is already pool-level")
        if getattr(STRATEGIES.get(base), "needs_worst_group", False):
            base_params["worst_group"] = worst_group
        self.base = make_strategy(base, seed=seed, round=round, **base_params)
        self.needs_model = self.base.needs_probs

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        ids, groups = view.unlabelled_ids, view.unlabelled_groups
        probs = None
        if self.base.needs_probs:
            g = view.gather(ids, ("mc",))
            ids, groups, probs = g["row_id"], g["group"], g["mc"]
        return select_in_memory(self.base, ids, groups, budget, probs=probs)


# ----------------------------------------------------------------------------- coreset


@STRATEGIES.register("coreset")
class CoresetStrategy(PoolStrategy):
    """Coreset (Sener & Savarese 2018): k-center greedy on the model's embeddings
    (``model.embed``, the trunk), labelled rows as initial centers. ``subsample``: rows of the
    unlabelled pool considered (null = all). Memory ``O(N)`` floats + one chunk (see
    :func:`~rayfal.acquisition.diversity.kcenter_greedy`) plus the ``N x D`` embeddings."""

    name = "coreset"

    def __init__(self, *, seed: int, round: int = 0, subsample: int | None = None) -> None:
        super().__init__(seed=seed, round=round)
        self.subsample = _opt_int(self.name, "subsample", subsample)

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        from rayfal.acquisition.diversity import kcenter_greedy

        cand = self.candidates(view, _size(self.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("emb",))
        lab = view.labelled_embeddings() if len(view.labelled.row_id) else None
        idx = kcenter_greedy(g["emb"], lab, budget, seed=self.seed * 1000 + self.round)
        return g["row_id"][np.asarray(idx, np.int64)]


# ----------------------------------------------------------------------------- badge


@STRATEGIES.register("badge")
class BadgeStrategy(PoolStrategy):
    """BADGE (Ash et al. 2020): k-means++ seeding on the last layer's hallucinated-label
    gradient embeddings (factorised: probabilities ``[N, C]`` and last-layer inputs ``[N, D]``,
    never ``N x C x D``). ``subsample`` as for coreset."""

    name = "badge"

    def __init__(self, *, seed: int, round: int = 0, subsample: int | None = None) -> None:
        super().__init__(seed=seed, round=round)
        self.subsample = _opt_int(self.name, "subsample", subsample)

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        from rayfal.acquisition.diversity import badge_select

        cand = self.candidates(view, _size(self.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("x", "probs"))
        h = last_layer_inputs(view.model, g["x"])
        idx = badge_select(probs=g["probs"], embeddings=h, budget=min(budget, len(cand)),
                           seed=self.seed * 1000 + self.round)
        return g["row_id"][np.asarray(idx, np.int64)]


# ----------------------------------------------------------------------------- fairal


@STRATEGIES.register("fairal")
class FairALStrategy(PoolStrategy):
    """Fair Active Learning (Anahideh et al. 2022), :func:`~rayfal.acquisition.fairal.fairal_select`.

    Parameters: ``alpha`` (a number or ``{start, end}``: linear over the rounds; PANDA §4.3
    uses 0.6), ``measure`` ``dp|eo|mi``, ``mode`` ``batch|nested|sequential`` (sequential asks
    the oracle after each pick, FAL's original loop), ``subsample`` candidates (default 1000),
    ``fair_size`` rows of the fairness set (a sample of the data's ``meta`` split, else the
    labelled set), ``nested_k``, and the refit:

    * ``refit: head`` (default; deep models): a logistic head fitted on the frozen trunk
      features (``model.embed``) of the labelled set (``head_steps`` gradient steps from 0),
      then each per-candidate refit warm-starts from it;
    * ``refit: model``: the whole model is refitted; only for the ``linear`` model (a logistic
      regression, whose whole model *is* the head: warm start from the trained weights). For
      MLPs/CNNs this is refused (refitting a deep net per candidate and label is what FairAL's
      fast path avoids; use ``head``).

    ``steps``, ``lr``, ``l2``, ``method`` (``gd``/``newton``) form the
    :class:`~rayfal.acquisition.fairal.RefitConfig`; ``engine`` ``fast|reference``.
    """

    name = "fairal"
    needs_fairness = True

    def __init__(self, *, seed: int, round: int = 0, alpha: Any = 0.6, measure: str = "dp",
                 mode: str = "batch", subsample: int | None = 1000, fair_size: int | None = 1000,
                 refit: str = "head", steps: int = 20, lr: float = 0.5, l2: float = 1e-3,
                 method: str = "gd", head_steps: int = 300, nested_k: int | None = None,
                 engine: str = "fast", sequential_rule: str = "combined") -> None:
        from rayfal.acquisition.fairal import MEASURES, RefitConfig, resolve_alpha

        super().__init__(seed=seed, round=round)
        if measure not in MEASURES:
            raise ValueError(f"strategy 'fairal': measure must be one of {MEASURES}, got {measure!r}")
        if mode not in ("batch", "nested", "sequential"):
            raise ValueError(f"strategy 'fairal': mode must be batch|nested|sequential, got {mode!r}")
        if refit not in ("head", "model"):
            raise ValueError(f"strategy 'fairal': refit must be 'head' or 'model', got {refit!r}")
        if engine not in ("fast", "reference"):
            raise ValueError(f"strategy 'fairal': engine must be fast|reference, got {engine!r}")
        if isinstance(alpha, Mapping) and set(alpha) != {"start", "end"}:
            raise ValueError(f"strategy 'fairal': alpha schedule needs keys start, end: {alpha}")
        resolve_alpha(alpha, 0, 1)  # validates the range
        self.alpha, self.measure, self.mode, self.refit = alpha, measure, mode, refit
        self.subsample = _opt_int(self.name, "subsample", subsample)
        self.fair_size = _opt_int(self.name, "fair_size", fair_size)
        self.nested_k = _opt_int(self.name, "nested_k", nested_k)
        self.refit_cfg = RefitConfig(steps=steps, lr=lr, l2=l2, method=method)
        self.head_steps, self.engine, self.sequential_rule = head_steps, engine, sequential_rule

    def _head(self, view: PoolView, emb_l: np.ndarray):
        from rayfal.acquisition.fairal import LogisticHead, fit_logistic_head

        model = view.model
        n_labels = int(getattr(model, "num_classes", 2))
        if self.refit == "model":
            if not isinstance(model.trunk, nn.Identity) or not isinstance(model.head, nn.Linear):
                raise ValueError("fairal refit 'model' needs the 'linear' model (trunk = "
                                 "identity, head = one Linear layer); use refit: head")
            w = model.head.weight.detach().double().T.contiguous()  # [D, C]
            b = model.head.bias.detach().double().clone()
            return LogisticHead(w, b)
        y = view.labelled.y
        return fit_logistic_head(emb_l, y, n_labels, binary=False, steps=self.head_steps,
                                 lr=self.refit_cfg.lr, l2=self.refit_cfg.l2)

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        from rayfal.acquisition.fairal import fairal_select

        cand = self.candidates(view, _size(self.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("x", "emb"))
        emb_l = view.labelled_embeddings()
        fair = view.fairness if view.fairness is not None else view.labelled
        emb_f = view.embed(fair.x)
        head = self._head(view, emb_l)
        oracle = None
        if self.mode == "sequential":
            def oracle(i: int) -> int:
                return int(view.oracle(g["row_id"][[i]])[0])
        idx = fairal_select(
            head, emb_l, view.labelled.y, g["emb"], emb_f, fair.group, budget,
            mode=self.mode, alpha=self.alpha, round=view.round, n_rounds=view.n_rounds,
            nested_k=self.nested_k, oracle=oracle, sequential_rule=self.sequential_rule,
            y_fair=fair.y, measure=self.measure, refit=self.refit_cfg, engine=self.engine,
        )
        view.info.update({"strategy": self.name, "candidates": len(cand),
                          "fairness_rows": len(fair.y), "refit": self.refit})
        return g["row_id"][np.asarray(idx, np.int64)]


# ----------------------------------------------------------------------------- panda

#: PANDA meta-training settings used when the job gives none (small: minutes on 2 CPUs).
PANDA_DEFAULTS = {"steps": 40, "pretrain_steps": 100, "pool_size": 1000, "val_size": 500,
                  "prox_steps": 4, "rho": 0.04, "disparity": "dp"}


def meta_train_policy(meta_xyg: tuple[np.ndarray, np.ndarray, np.ndarray], settings: dict,
                      out_dir: Path, *, progress: bool = False) -> Path:
    """Meta-train a PANDA policy on D (Algorithm 1) into ``out_dir`` (resumable); the one place
    the ``panda`` strategy calls meta-training: Ray Train's
    :func:`rayfal.training.panda_train.train_policy` in local mode (``num_workers=0``)."""
    from rayfal.training.panda_train import train_policy

    return train_policy(meta_xyg, settings, out_dir, resume=True, num_workers=0,
                        progress=progress)


@STRATEGIES.register("panda")
class PandaStrategy(PoolStrategy):
    """PANDA (Sharaf et al. 2022): the meta-learned Transformer policy picks the whole budget
    in one forward pass (§3.3, §4.3) over a ``subsample`` of the unlabelled pool (default 2000;
    attention is ``O(N^2)``).

    ``policy``: a checkpoint directory (:func:`~rayfal.acquisition.panda.load_policy`); if
    null, a policy is meta-trained before round 0 on the data's ``meta`` split D with
    ``train`` (a dict of :class:`rayfal.training.panda_train.PandaSettings` fields; defaults
    :data:`PANDA_DEFAULTS` and ``budget`` = query_size x rounds, i.e. the campaign's total B)
    and cached in ``run_dir/panda/policy-<hash>`` (shared by the job's campaigns and seeds).

    One-shot selection over rounds: the policy is agnostic to the current classifier (§3.3), so
    the campaign ranks the round-0 subsample once (a Gumbel-top-N sample seeded by the campaign
    seed; ``gumbel: false`` = the logits' order) and stores the order in the campaign
    directory; round ``r`` queries the next ``query_size`` unlabelled rows of that order.
    Over ``R`` rounds the union is exactly the one-pass Gumbel-top-(R x query_size) selection.
    """

    name = "panda"
    needs_meta = True

    def __init__(self, *, seed: int, round: int = 0, policy: str | None = None,
                 subsample: int | None = 2000, gumbel: bool = True,
                 train: dict | None = None) -> None:
        super().__init__(seed=seed, round=round)
        self.policy_path = policy
        self.subsample = _opt_int(self.name, "subsample", subsample)
        self.gumbel = bool(gumbel)
        self.train = dict(train or {})
        if policy is None and self.train:
            from rayfal.training.panda_train import PandaSettings

            PandaSettings.from_dict({**PANDA_DEFAULTS, **self.train})  # validate early

    def _policy(self, view: PoolView):
        from rayfal.acquisition.panda import load_policy

        if self.policy_path is not None:
            return load_policy(self.policy_path)[0]
        if view.meta is None:
            raise ValueError("strategy 'panda' without a 'policy' checkpoint meta-trains on the "
                             "data's 'meta' split (dataset 'adult'); this data set has none")
        settings = {**PANDA_DEFAULTS, "budget": view.budget * view.n_rounds, **self.train}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        root = view.shared_dir if view.shared_dir is not None else view.work_dir
        out = Path(root) / "panda" / f"policy-{key}"
        m = view.meta
        t0 = time.perf_counter()
        path = meta_train_policy((m.x, m.y, m.group), settings, out)
        view.info.update(policy_dir=str(path), meta_train_seconds=time.perf_counter() - t0)
        return load_policy(path)[0]

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        from rayfal.acquisition.panda import select

        if budget <= 0 or len(view.unlabelled_ids) == 0:
            return np.zeros(0, np.int64)
        rank_file = None if view.work_dir is None else Path(view.work_dir) / "panda_ranking.json"
        if rank_file is not None and rank_file.is_file():
            ranking = np.asarray(json.loads(rank_file.read_text())["row_id"], np.int64)
        else:
            policy = self._policy(view)
            cand = subsample_ids(view.unlabelled_ids, self.subsample, self.seed, 0x9A4DA)
            g = view.gather(cand, ("x",))
            order = select(policy, g["x"], len(cand), seed=self.seed if self.gumbel else None)
            ranking = g["row_id"][order]
            if rank_file is not None:
                rank_file.write_text(json.dumps({"round": view.round,
                                                 "row_id": ranking.tolist()}))
        free = ranking[~np.isin(ranking, view.labelled.row_id)]
        picked = free[:budget]
        if len(picked) < min(budget, len(view.unlabelled_ids)):  # ranking exhausted: widen
            rest = np.setdiff1d(view.unlabelled_ids, np.concatenate([ranking, picked]))
            extra = subsample_ids(rest, budget - len(picked), self.seed, 0x9A4DB)
            log.warning("panda: ranked subsample exhausted; %d uniform extra rows", len(extra))
            picked = np.concatenate([picked, extra])
        return picked
