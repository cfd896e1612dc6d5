"""Uniform sampling balanced across groups: the BALD-fairness paper's "Balanced Uniform (Oracle)".

It knows the (normally hidden) group of every pool row and queries the same number from each
group; a group with too few unlabelled rows gives its unused share to the others.
"""

from __future__ import annotations

import numpy as np

from rayfal.acquisition.base import STRATEGIES, Candidates, ScoreBatch, Strategy, row_uniform


def balanced_allocation(available: dict[int, int], budget: int) -> dict[int, int]:
    """Split ``budget`` as evenly as possible over groups, capped by what each has available."""
    alloc = {g: 0 for g in available}
    remaining = min(budget, sum(available.values()))
    open_groups = sorted(g for g, n in available.items() if n > 0)
    while remaining > 0 and open_groups:
        share, extra = divmod(remaining, len(open_groups))
        for i, g in enumerate(open_groups):
            take = min(share + (1 if i < extra else 0), available[g] - alloc[g])
            alloc[g] += take
            remaining -= take
        open_groups = [g for g in open_groups if alloc[g] < available[g]]
    return alloc


@STRATEGIES.register("balanced_oracle")
class BalancedOracleStrategy(Strategy):
    """Uniform keys, the same number of rows from each group (it sees the hidden groups)."""

    name = "balanced_oracle"
    summary = "uniform sampling balanced over groups (Branchaud-Charron et al.'s oracle)"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return row_uniform(batch.row_id, self.seed, self.round, 0xBA1A)

    def select(self, cand: Candidates, budget: int) -> np.ndarray:
        order = cand.order()
        groups = cand.group[order]
        available = {g: int(np.sum(groups == g)) for g in cand.group_counts}
        alloc = balanced_allocation(available, budget)
        picked = [cand.row_id[order][groups == g][:n] for g, n in alloc.items()]
        return np.concatenate(picked) if picked else np.zeros(0, np.int64)
