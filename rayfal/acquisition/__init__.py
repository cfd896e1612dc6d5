"""Acquisition strategies (one file each) and their pure score functions."""

from rayfal.acquisition import balanced_oracle, random, uncertainty  # noqa: F401  (registration)
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

__all__ = [
    "STRATEGIES",
    "CandidateReducer",
    "Candidates",
    "ScoreBatch",
    "Strategy",
    "make_strategy",
    "row_uniform",
    "select_in_memory",
]
