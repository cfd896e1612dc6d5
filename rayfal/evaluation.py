"""Evaluate a trained model on the held-out (balanced) test set: accuracy, NLL, group fairness
metrics and the per-group epistemic uncertainty (mean BALD) of the BALD-fairness paper's Fig. 1.
"""

from __future__ import annotations

import numpy as np
import torch

from rayfal.acquisition import scores
from rayfal.fairness.metrics import fairness_report
from rayfal.models.mc_dropout import TwoStageModel
from rayfal.models.predict import mc_probs


def evaluate_probs(
    probs: np.ndarray, y: np.ndarray, group: np.ndarray
) -> dict[str, float]:
    """Metrics from MC probabilities ``[N, C, T]`` (predictions use the MC mean)."""
    mean = scores.mean_probs(probs)
    pred = mean.argmax(axis=1)
    nll = float(-np.mean(np.log(np.clip(mean[np.arange(len(y)), y], 1e-12, None))))
    out: dict[str, float] = {"nll": nll}
    out.update(fairness_report(y, pred, groups=group))
    bald = scores.bald(probs)
    per_group = {int(g): float(bald[group == g].mean()) for g in np.unique(group)}
    for g, v in per_group.items():
        out[f"bald_group_{g}"] = v
    out["epistemic_gap"] = max(per_group.values()) - min(per_group.values())
    return {k: float(v) for k, v in out.items()}


def evaluate_model(
    model: TwoStageModel,
    x: torch.Tensor,
    y: np.ndarray,
    group: np.ndarray,
    *,
    mc_samples: int,
    batch_size: int = 512,
    seed: int = 0,
    row_keys: np.ndarray | None = None,
) -> dict[str, float]:
    """MC-dropout predictions on ``x`` then :func:`evaluate_probs`."""
    probs = mc_probs(model, x, mc_samples=mc_samples, batch_size=batch_size, generator_seed=seed,
                     row_keys=row_keys)
    return evaluate_probs(probs, np.asarray(y), np.asarray(group))
