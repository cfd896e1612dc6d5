"""Acquisition strategies (one module each; packages for FairAL and PANDA) and their pure
score functions. Importing this package registers every strategy in :data:`STRATEGIES`."""

from rayfal.acquisition import (  # noqa: F401  (registration)
    badge,
    balanced_oracle,
    batchbald,
    coreset,
    fairal,
    group_entropy,
    group_random,
    in_memory,
    jin,
    panda,
    random,
    uncertainty,
)
from rayfal.acquisition.base import (
    REQUIREMENTS,
    STRATEGIES,
    CandidateReducer,
    Candidates,
    ScoreBatch,
    Strategy,
    StrategyParams,
    StrategyParamsError,
    make_strategy,
    row_uniform,
    select_in_memory,
    strategy_class,
)
from rayfal.acquisition.worst_group import worst_group_from_metrics

__all__ = [
    "REQUIREMENTS",
    "STRATEGIES",
    "CandidateReducer",
    "Candidates",
    "ScoreBatch",
    "Strategy",
    "StrategyParams",
    "StrategyParamsError",
    "make_strategy",
    "row_uniform",
    "select_in_memory",
    "strategy_class",
    "worst_group_from_metrics",
]
