"""``coreset``: k-center greedy on the model's embeddings (Sener & Savarese 2018)."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from rayfal.acquisition.base import STRATEGIES, StrategyParams
from rayfal.acquisition.diversity import kcenter_greedy
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_size

__all__ = ["CoresetParams", "CoresetStrategy"]

log = logging.getLogger("rayfal")


class CoresetParams(StrategyParams):
    """``subsample``: rows of the unlabelled pool considered (at least the budget; null = all)."""

    subsample: int | None = Field(None, ge=1)


@STRATEGIES.register("coreset")
class CoresetStrategy(WholePoolStrategy):
    """Coreset (Sener & Savarese 2018): k-center greedy on the model's embeddings
    (``model.embed``, the trunk), labelled rows as initial centers. ``subsample``: rows of the
    unlabelled pool considered (null = all). Memory ``O(N)`` floats + one chunk (see
    :func:`~rayfal.acquisition.diversity.kcenter_greedy`) plus the ``N x D`` embeddings."""

    name = "coreset"
    summary = "Coreset: k-center greedy on the model's embeddings (Sener & Savarese 2018)"
    requires = frozenset({"model"})
    Params = CoresetParams

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        cand = self.candidates(view, subsample_size(self.params.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("emb",))
        lab = view.labelled_embeddings() if len(view.labelled.row_id) else None
        idx = kcenter_greedy(g["emb"], lab, budget, seed=self.seed * 1000 + self.round)
        return g["row_id"][np.asarray(idx, np.int64)]
