"""Shared machinery of the worst-group strategies (G-RAND, G-ENT; FRAL's Algorithm 1, line 5-8).

At the start of each round the driver finds the worst-performing group ``z*`` on held-out data
(FRAL Algorithm 1, line 5: ``z* <- EVAL(M_R, A, eps, D_V)``) — :func:`worst_group_from_metrics`
does it from the evaluation's ``acc_group_<g>`` metrics — and passes it to the strategy as the
parameter ``worst_group``. The strategy scores every unlabelled row as usual (the candidate
reducer keeps the best ``budget`` rows *per group*), then :meth:`WorstGroupStrategy.select`
takes the top-``budget`` rows of ``z*`` (line 6-8); only when ``z*`` has fewer than ``budget``
unlabelled rows are the remaining slots filled with the best rows of the other groups (by the
same score order), so the query always has ``min(budget, #unlabelled)`` rows.
Without ``worst_group`` (``None``, e.g. when no evaluation exists yet) the strategy is its
group-blind counterpart (``random`` / ``entropy``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rayfal.acquisition.base import Candidates, Strategy


def worst_group_from_metrics(metrics: Mapping[str, Any], prefix: str = "acc_group_") -> int:
    """The group ``g`` with the smallest finite ``metrics[f"{prefix}{g}"]`` (ties: smallest ``g``).

    ``prefix="acc_group_"`` is the standard accuracy (FRAL's F_std, Eq. 1); pass the prefix of a
    per-group robust accuracy to use F_rob instead.
    """
    pattern = re.compile(re.escape(prefix) + r"(-?\d+)$")
    values = {}
    for key, value in metrics.items():
        m = pattern.match(str(key))
        if m and value is not None and math.isfinite(float(value)):
            values[int(m.group(1))] = float(value)
    if not values:
        raise ValueError(f"no finite '{prefix}<g>' metric to find the worst group in "
                         f"{sorted(map(str, metrics))[:20]}")
    return min(values, key=lambda g: (values[g], g))


class WorstGroupStrategy(Strategy):
    """Base class: a score restricted to the worst group ``z*`` at selection time.

    The campaign layer passes ``worst_group`` each round (``requires`` has ``worst_group``):
    the group with the lowest accuracy in that round's evaluation
    (:func:`worst_group_from_metrics`).
    """

    requires = frozenset({"worst_group"})

    def __init__(self, *, seed: int, round: int = 0, worst_group: int | None = None,
                 **params: Any) -> None:
        super().__init__(seed=seed, round=round, **params)
        if worst_group is not None and (
            isinstance(worst_group, bool) or not isinstance(worst_group, numbers.Integral)
        ):
            raise TypeError(f"strategy '{self.name}': worst_group must be an int group id or "
                            f"None, got {worst_group!r}")
        self.worst_group = None if worst_group is None else int(worst_group)

    def select(self, cand: Candidates, budget: int) -> np.ndarray:
        order = cand.order()
        if self.worst_group is None:
            return cand.row_id[order[:budget]]
        in_worst = cand.group[order] == self.worst_group
        first = order[in_worst][:budget]
        fill = order[~in_worst][: max(0, budget - len(first))]
        return cand.row_id[np.concatenate([first, fill])]
