"""G-RAND: uniform sampling within the worst-performing group (the FRAL paper's baseline)."""

from __future__ import annotations

import numpy as np

from rayfal.acquisition.base import STRATEGIES, ScoreBatch, row_uniform
from rayfal.acquisition.worst_group import WorstGroupStrategy


@STRATEGIES.register("group_random")
class GroupRandomStrategy(WorstGroupStrategy):
    """Uniform keys (a function of seed, round and row_id); the top-``budget`` keys of the worst
    group ``z*`` (parameter ``worst_group``) are queried — see :mod:`~.worst_group`."""

    name = "group_random"
    summary = "G-RAND: uniform sampling inside the worst group z* (FRAL)"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return row_uniform(batch.row_id, self.seed, self.round, 0x62A4D)
