"""Evaluate a trained model on held-out data: accuracy, NLL, group fairness metrics and the
per-group epistemic uncertainty (mean BALD) of the BALD-fairness paper's Fig. 1
(:func:`evaluate_model`), and FRAL's per-group standard/robust accuracy under an L-inf PGD
attack (:func:`evaluate_robust`).

Robust evaluation choices (documented; the FRAL paper leaves them open):

* predictions use the *deterministic* network (MC dropout off,
  :func:`~rayfal.models.predict.deterministic_probs`): the attack differentiates that network,
  so the clean and the attacked accuracy refer to the same classifier (with ``eps = 0`` they
  are equal). The MC-mean ``accuracy`` of :func:`evaluate_model` can differ slightly.
* ``A`` is PGD maximising the cross-entropy against the true label (Madry et al.; the paper's
  threat model), ``steps`` steps of size ``alpha`` from a uniform random start in the eps-ball
  keyed by row (:func:`~rayfal.attacks.pgd_row_keyed`), so the result does not depend on batch
  size, shard split or row order.
"""

from __future__ import annotations

import numpy as np
import torch

from rayfal.acquisition import scores
from rayfal.attacks import AttackSpec, pgd_row_keyed
from rayfal.fairness.metrics import fairness_report
from rayfal.fairness.robust import fral_metrics
from rayfal.models.mc_dropout import TwoStageModel
from rayfal.models.predict import deterministic_probs, mc_probs, model_device


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


def evaluate_robust(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: np.ndarray,
    group: np.ndarray,
    *,
    attack: AttackSpec,
    row_keys: np.ndarray,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Clean and PGD-attacked predictions of ``model`` on ``(x, y)`` in batches, then
    :func:`fral_metrics`. ``row_keys`` (e.g. row_ids) key the random starts. Everything runs
    on the model's device (:func:`~rayfal.models.predict.model_device`): a model on a GPU is
    evaluated and attacked there, ``x`` may live anywhere."""
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64))
    keys = np.asarray(row_keys, dtype=np.int64)
    device = model_device(model)
    pred_std, pred_rob = [], []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        yb = y_t[s:s + batch_size].to(device)
        pred_std.append(deterministic_probs(model, xb, batch_size).argmax(1))
        x_adv = pgd_row_keyed(model, xb, yb, row_keys=keys[s:s + batch_size], seed=seed,
                              attack=attack)
        pred_rob.append(deterministic_probs(model, x_adv, batch_size).argmax(1))
    return fral_metrics(np.asarray(y), np.concatenate(pred_std), np.concatenate(pred_rob),
                        np.asarray(group))
