"""Uniform (i.i.d.) sampling: the BALD-fairness paper's "Uniform" baseline."""

from __future__ import annotations

import numpy as np

from rayfal.acquisition.base import STRATEGIES, ScoreBatch, Strategy, row_uniform


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    """Each unlabelled row gets an i.i.d. uniform key; the top-``budget`` keys are queried."""

    name = "random"
    summary = "uniform i.i.d. sampling (the papers' Uniform baseline)"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return row_uniform(batch.row_id, self.seed, self.round, 0x5EED)
