"""Uncertainty strategies on MC-dropout samples: entropy, margin and BALD (Eq. 1)."""

from __future__ import annotations

import numpy as np

from rayfal.acquisition import scores
from rayfal.acquisition.base import STRATEGIES, ScoreBatch, Strategy


class _ProbsStrategy(Strategy):
    requires = frozenset({"probs"})

    def _probs(self, batch: ScoreBatch) -> np.ndarray:
        if batch.probs is None:
            raise ValueError(f"strategy '{self.name}' needs model probabilities")
        return batch.probs


@STRATEGIES.register("entropy")
class EntropyStrategy(_ProbsStrategy):
    """Predictive entropy of the MC-averaged probabilities."""

    name = "entropy"
    summary = "predictive entropy of the MC-dropout mean"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return scores.entropy(self._probs(batch))


@STRATEGIES.register("margin")
class MarginStrategy(_ProbsStrategy):
    """Smallest gap between the two most probable classes (negated: larger = closer)."""

    name = "margin"
    summary = "smallest top-2 probability margin"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return scores.margin(self._probs(batch))


@STRATEGIES.register("bald")
class BaldStrategy(_ProbsStrategy):
    """BALD (Houlsby et al. 2011; Eq. 1 of Branchaud-Charron et al. 2021): mutual information
    between the label and the weights, estimated with T MC-dropout samples."""

    name = "bald"
    summary = "BALD mutual information over MC-dropout samples (Eq. 1)"

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return scores.bald(self._probs(batch))
