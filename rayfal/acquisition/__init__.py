"""Acquisition strategies (one file each) and their pure score functions."""

from rayfal.acquisition import (  # noqa: F401  (registration)
    balanced_oracle,
    group_entropy,
    group_random,
    jin,
    pool_strategies,  # coreset, badge, fairal, panda (pool-level: pool_level.py)
    random,
    uncertainty,
)
from rayfal.acquisition.base import (
    STRATEGIES,
    CandidateReducer,
    Candidates,
    ScoreBatch,
    Strategy,
    make_strategy,
    row_uniform,
    select_in_memory,
)
from rayfal.acquisition.worst_group import worst_group_from_metrics

__all__ = [
    "STRATEGIES",
    "CandidateReducer",
    "Candidates",
    "ScoreBatch",
    "Strategy",
    "make_strategy",
    "row_uniform",
    "select_in_memory",
    "worst_group_from_metrics",
]
