"""``badge``: k-means++ on gradient embeddings (Ash et al. 2020)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from pydantic import Field
from torch import nn

from rayfal.acquisition.base import STRATEGIES, StrategyParams
from rayfal.acquisition.diversity import badge_select
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_size

__all__ = ["BadgeParams", "BadgeStrategy", "last_layer_inputs"]

log = logging.getLogger("rayfal")


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


class BadgeParams(StrategyParams):
    """``subsample``: rows of the unlabelled pool considered (at least the budget; null = all)."""

    subsample: int | None = Field(None, ge=1)


@STRATEGIES.register("badge")
class BadgeStrategy(WholePoolStrategy):
    """BADGE (Ash et al. 2020): k-means++ seeding on the last layer's hallucinated-label
    gradient embeddings (factorised: probabilities ``[N, C]`` and last-layer inputs ``[N, D]``,
    never ``N x C x D``). ``subsample`` as for coreset."""

    name = "badge"
    summary = "BADGE: k-means++ on last-layer gradient embeddings (Ash et al. 2020)"
    requires = frozenset({"model"})
    Params = BadgeParams

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        cand = self.candidates(view, subsample_size(self.params.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("x", "probs"))
        h = last_layer_inputs(view.model, g["x"])
        idx = badge_select(probs=g["probs"], embeddings=h, budget=min(budget, len(cand)),
                           seed=self.seed * 1000 + self.round)
        return g["row_id"][np.asarray(idx, np.int64)]


