"""G-ENT: predictive entropy within the worst-performing group."""

from __future__ import annotations

import numpy as np

from rayfal.acquisition import scores
from rayfal.acquisition.base import STRATEGIES, ScoreBatch
from rayfal.acquisition.worst_group import WorstGroupStrategy


@STRATEGIES.register("group_entropy")
class GroupEntropyStrategy(WorstGroupStrategy):
    """Entropy of the MC-averaged class probabilities (as ``entropy``); the most uncertain rows
    of the worst group ``z*`` (parameter ``worst_group``) are queried — see
    :mod:`~.worst_group`."""

    name = "group_entropy"
    summary = "G-ENT: predictive entropy inside the worst group z* (FRAL)"
    requires = frozenset({"probs", "worst_group"})

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if batch.probs is None:
            raise ValueError(f"strategy '{self.name}' needs model probabilities")
        return scores.entropy(batch.probs)
