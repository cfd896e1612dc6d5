"""The labelling schedule: how many queries a campaign makes and which rows start labelled."""

from __future__ import annotations

import math

import numpy as np

from rayfal.hashing import row_uniform


def schedule(cfg, pool_size: int) -> int:
    """Number of queries R of a job's campaigns (rounds 0..R train; rounds 0..R-1 query):
    ``al.rounds`` when set, else as many ``al.query_size`` batches as reach ``al.max_frac``
    of the pool."""
    al = cfg.al
    if al.rounds is not None:
        return al.rounds
    target = math.floor(al.max_frac * pool_size + 1e-9)
    return max(0, (target - al.initial_labels) // al.query_size)


def initial_selection(row_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The initial labelled set: ``n`` uniform rows of ``row_ids``, a function of the seed
    only (so every strategy of a seed starts from the same labels: paired comparisons)."""
    ids = np.asarray(row_ids, dtype=np.int64)
    key = row_uniform(ids, seed, 0x1417)
    return ids[np.lexsort((ids, -key))[: min(n, len(ids))]]


def group_fracs(prefix: str, groups: np.ndarray | dict[int, int], all_groups: list[int]) -> dict:
    """``{prefix}_frac_group_<g>``: each group's share of ``groups`` (an array of group ids or
    a ``{group: count}`` mapping); NaN when there is nothing to share."""
    if isinstance(groups, dict):
        counts = {g: groups.get(g, 0) for g in all_groups}
    else:
        counts = {g: int(np.sum(groups == g)) for g in all_groups}
    total = sum(counts.values())
    return {f"{prefix}_frac_group_{g}": (c / total if total else float("nan"))
            for g, c in counts.items()}
