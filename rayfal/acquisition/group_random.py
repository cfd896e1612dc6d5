"""G-RAND: uniform sampling within the worst-performing group (the FRAL paper's baseline; PANDA's
"group aware random sampling", Sharaf et al. 2022 §4.1).

``worst_group_from``: ``round`` (default, FRAL Algorithm 1 line 5: z* re-evaluated with each
round's model) or ``h0`` (PANDA: "restricted to the group on which worse performance is
achieved by h^0": z* found once with round 0's model, the one trained on D0, and kept for the
whole campaign). Either way z* comes from the campaign layer's evaluation, on the validation
split when ``evaluation.val_fraction > 0`` (never the test set then), else on the round's
test metrics.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from rayfal.acquisition.base import STRATEGIES, ScoreBatch, StrategyParams, row_uniform
from rayfal.acquisition.worst_group import WorstGroupStrategy


class GroupRandomParams(StrategyParams):
    """``worst_group_from``: ``round`` (z* per round) or ``h0`` (z* of round 0's model)."""

    worst_group_from: Literal["round", "h0"] = "round"


@STRATEGIES.register("group_random")
class GroupRandomStrategy(WorstGroupStrategy):
    """Uniform keys (a function of seed, round and row_id); the top-``budget`` keys of the worst
    group ``z*`` (parameter ``worst_group``) are queried — see :mod:`~.worst_group`."""

    name = "group_random"
    summary = "G-RAND: uniform sampling inside the worst group z* (FRAL)"
    Params = GroupRandomParams

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return row_uniform(batch.row_id, self.seed, self.round, 0x62A4D)
