"""``panda``: the meta-learned PANDA policy as a whole-pool strategy (Sharaf et al. 2022).

The strategy only *uses* a policy; it never meta-trains one. Who does what:

* the campaign layer asks :meth:`PandaStrategy.meta_training_settings` (``None``: the job
  gives a ``policy`` checkpoint, nothing to train); otherwise it meta-trains once with
  :func:`~rayfal.acquisition.panda.train.train_policy` on the data's ``meta`` split D, caches
  the result in ``run_dir/panda/<policy_dir_name(settings)>`` (shared by the job's campaigns
  and seeds), loads it (:func:`~rayfal.acquisition.panda.policy.load_policy`) and passes it in
  :attr:`PoolView.policy <rayfal.acquisition.view.PoolView>`;
* :meth:`PandaStrategy.select_pool` ranks with ``view.policy``, or, when that is ``None``,
  loads the ``policy`` checkpoint given in the parameters itself (a value, not a campaign
  object).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError, field_validator

from rayfal.acquisition.base import STRATEGIES, StrategyParams, StrategyParamsError
from rayfal.acquisition.panda.settings import PandaSettings, settings_error_lines
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_ids

log = logging.getLogger("rayfal")

__all__ = ["PANDA_DEFAULTS", "PandaParams", "PandaStrategy", "policy_dir_name"]

#: PANDA meta-training settings used when the job gives none (small: minutes on 2 CPUs);
#: ``budget`` defaults to the campaign's total B (query_size x rounds), ``params.train`` wins.
PANDA_DEFAULTS: dict[str, Any] = {"steps": 40, "pretrain_steps": 100, "pool_size": 1000,
                                  "val_size": 500, "prox_steps": 4, "rho": 0.04,
                                  "disparity": "dp"}

#: file in ``PoolView.work_dir`` holding the campaign's one-shot ranking
RANKING_FILE = "panda_ranking.json"


def policy_dir_name(settings: dict[str, Any]) -> str:
    """``policy-<sha256[:12]>`` of the meta-training ``settings`` dict (as given by
    :meth:`PandaStrategy.meta_training_settings`, JSON with sorted keys): the cache directory
    of the policy those settings train, under ``run_dir/panda/``."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"policy-{key}"


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer or null, got {value!r}")
    return value


class PandaParams(StrategyParams):
    """``policy``: a policy checkpoint directory (``save_policy`` / ``train_policy`` output);
    ``null``: the campaign meta-trains one with ``train``. ``subsample``: unlabelled rows ranked
    by the policy (attention is ``O(N^2)``; ``null`` = all). ``gumbel``: rank by a seeded
    Gumbel-top-N sample (what the policy was meta-trained to produce), else by the logits.
    ``train``: :class:`~rayfal.acquisition.panda.settings.PandaSettings` fields over
    :data:`PANDA_DEFAULTS` (used only when ``policy`` is null). ``workers``: Ray Train
    workers of meta-training (0 = in the driver process; ``<= train.tasks_per_step``).
    ``heldout_tasks``: after meta-training, compare the policy's picks with random picks on
    that many held-out tasks of D (``heldout.csv`` next to the policy; 0 = skip)."""

    policy: str | None = Field(None, min_length=1)
    subsample: int | None = Field(2000, ge=1)
    gumbel: bool = True
    train: dict[str, Any] = Field(default_factory=dict)
    workers: int = Field(0, ge=0)
    heldout_tasks: int = Field(0, ge=0)

    @field_validator("subsample", mode="before")
    @classmethod
    def _subsample_not_bool(cls, value: Any) -> Any:
        return _not_bool(value)

    @field_validator("train")
    @classmethod
    def _train_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = set(PandaSettings.model_fields)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown PANDA setting(s) {unknown}; known: {sorted(known)}")
        # the total budget is the campaign's (query_size x rounds) unless given: check the
        # rest with the smallest one, the whole again in meta_training_settings
        try:
            PandaSettings.from_dict({**PANDA_DEFAULTS, "budget": 1, **value})
        except ValidationError as exc:
            raise ValueError(settings_error_lines(exc, "train.")) from None
        return value


@STRATEGIES.register("panda")
class PandaStrategy(WholePoolStrategy):
    """PANDA (Sharaf et al. 2022): the meta-learned Transformer policy picks the whole budget
    in one forward pass (§3.3, §4.3) over a ``subsample`` of the unlabelled pool (default 2000;
    attention is ``O(N^2)``).

    The policy comes from ``view.policy`` (meta-trained by the campaign layer, see the module
    docstring) or, if that is ``None``, from the ``policy`` checkpoint parameter.

    One-shot selection over rounds: the policy is agnostic to the current classifier (§3.3), so
    the campaign ranks the round-0 subsample once (a Gumbel-top-N sample seeded by the campaign
    seed; ``gumbel: false`` = the logits' order) and stores the order in the campaign
    directory (``view.work_dir/panda_ranking.json``); round ``r`` queries the next
    ``query_size`` unlabelled rows of that order. Over ``R`` rounds the union is exactly the
    one-pass Gumbel-top-(R x query_size) selection.
    """

    name = "panda"
    summary = "PANDA: a meta-learned Transformer policy ranks the pool once (Gumbel-top-B)"
    kind = "whole_pool"
    requires = frozenset({"policy"})
    Params = PandaParams

    def meta_training_settings(self, total_budget: int) -> dict[str, Any] | None:
        """The meta-training settings dict for the campaign layer (:data:`PANDA_DEFAULTS`, then
        ``budget = total_budget``, then ``params.train``), checked against
        :class:`PandaSettings`; ``None`` when ``params.policy`` names a checkpoint (nothing to
        train). Hash it with :func:`policy_dir_name` for the cache directory."""
        if self.params.policy is not None:
            return None
        settings = {**PANDA_DEFAULTS, "budget": int(total_budget), **self.params.train}
        try:
            PandaSettings.from_dict(settings)
        except ValidationError as exc:
            raise StrategyParamsError(
                f"strategy '{self.name}': meta-training settings (total budget "
                f"{int(total_budget)}): {settings_error_lines(exc, 'params.train.')}") from None
        return settings

    def _policy(self, view: PoolView) -> Any:
        from rayfal.acquisition.panda.policy import load_policy

        if view.policy is not None:
            if isinstance(view.policy, str | Path):
                return load_policy(view.policy)[0]
            return view.policy
        if self.params.policy is not None:
            view.info.setdefault("policy_dir", str(self.params.policy))
            return load_policy(self.params.policy)[0]
        raise ValueError(f"strategy '{self.name}' needs a meta-trained policy: give "
                         "params.policy (a checkpoint directory) or meta-train one with "
                         "meta_training_settings() + train_policy and pass it as PoolView.policy")

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        from rayfal.acquisition.panda.policy import select

        if budget <= 0 or len(view.unlabelled_ids) == 0:
            return np.zeros(0, np.int64)
        rank_file = None if view.work_dir is None else Path(view.work_dir) / RANKING_FILE
        if rank_file is not None and rank_file.is_file():
            ranking = np.asarray(json.loads(rank_file.read_text())["row_id"], np.int64)
        else:
            policy = self._policy(view)
            cand = subsample_ids(view.unlabelled_ids, self.params.subsample, self.seed, 0x9A4DA)
            g = view.gather(cand, ("x",))
            order = select(policy, g["x"], len(cand),
                           seed=self.seed if self.params.gumbel else None)
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
