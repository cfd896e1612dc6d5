"""Hyperparameter search over AL campaigns: Ray Tune + Optuna (``rayfal tune``).

Submodules: :mod:`~rayfal.tune.space` (the ``tune:`` section), :mod:`~rayfal.tune.pareto`
(fronts, best trial; plain numpy), :mod:`~rayfal.tune.searcher` (Optuna behind Tune),
:mod:`~rayfal.tune.trial` (one trial = one campaign), :mod:`~rayfal.tune.runner`
(``run_tune``), :mod:`~rayfal.tune.results` (tables, plot, job files).
"""

from rayfal.tune.pareto import best_index, non_dominated
from rayfal.tune.space import parse_distribution, parse_tune, validate_spec

__all__ = ["best_index", "non_dominated", "parse_distribution", "parse_tune", "validate_spec"]
