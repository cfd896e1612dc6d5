"""The evaluation step of a round: every metric of the round record, and the worst group z*.

Calls the metric layers with values (the trained model, arrays, settings):

* :func:`rayfal.evaluation.evaluate_model` — MC-dropout accuracy, NLL, per-group accuracy,
  δA, per-group BALD (BALD-fairness paper, Fig. 1 and Table 1);
* :func:`rayfal.fairness.bias.bias_metrics_for_model` — GBA's aligned/conflicting accuracies
  (and :func:`~rayfal.fairness.bias.discriminator_bias_report`: the discriminator's and a
  linear probe's accuracy at reading the group on aligned/conflicting rows, GBA Fig. 1)
  when the test set has a ``bias_aligned`` column (GBA Tables 1-4);
* :func:`rayfal.evaluation.evaluate_robust` — FRAL's robust metrics (Eq. 1) when
  ``evaluation.robust``;
* for binary tasks PANDA's F-score / DP / error-rate balance, and for training mode
  ``fairlearn`` the exponentiated-gradient reduction's predictions replace the network's
  (:mod:`rayfal.training.fairlearn_mode`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from rayfal.acquisition.worst_group import worst_group_from_metrics
from rayfal.attacks import AttackSpec
from rayfal.campaign.context import EvalSet
from rayfal.data.schema import to_model_input
from rayfal.evaluation import evaluate_model, evaluate_probs, evaluate_robust
from rayfal.fairness.bias import bias_metrics_for_model, discriminator_bias_report
from rayfal.models.predict import mc_probs
from rayfal.training.fairlearn_mode import binary_metrics, fit_reduction, predict
from rayfal.training.modes import MODES, mode_parts


def evaluation_attack(ev, x: torch.Tensor) -> AttackSpec:
    """The attack of the job's ``evaluation`` section: PGD-CE, clamp [0, 1] for images
    ``[N, C, H, W]``, no clamp for feature vectors."""
    return AttackSpec(eps=ev.robust_eps, alpha=ev.robust_alpha, steps=ev.robust_steps, loss="ce",
                      clamp=(0.0, 1.0) if x.dim() == 4 else None)


def _is_post_fit(mode: str) -> bool:
    return bool(getattr(MODES.get(mode_parts(mode)[0]), "post_fit", False))


def evaluate_round(ev, test: EvalSet, model: torch.nn.Module, *, seed: int, mode: str,
                   mode_params: dict, labelled: dict[str, np.ndarray],
                   input_shape: tuple[int, ...]) -> dict[str, float]:
    """Every metric of one round on the reported test set (module docstring). ``ev`` is the
    job's ``evaluation`` section; ``labelled`` the round's training rows (``x`` raw pool
    features, ``y``, ``group``), used by the ``fairlearn`` mode's reduction."""
    metrics = evaluate_model(model, test.x, test.y, test.group, mc_samples=ev.mc_samples,
                             batch_size=ev.batch_size, seed=seed, row_keys=test.row_id)
    if test.bias_aligned is not None:
        metrics.update(bias_metrics_for_model(
            model, test.x, test.y, test.bias_aligned, mc_samples=ev.mc_samples,
            batch_size=ev.batch_size, seed=seed, row_keys=test.row_id))
        metrics.update(discriminator_bias_report(
            model, test.x, test.group, test.bias_aligned,
            train_x=to_model_input(labelled["x"], input_shape), train_group=labelled["group"],
            batch_size=ev.batch_size, seed=seed))
    if ev.robust:
        metrics.update(evaluate_robust(
            model, test.x, test.y, test.group, attack=evaluation_attack(ev, test.x),
            row_keys=test.row_id, seed=seed, batch_size=min(ev.batch_size, 256)))
    binary = set(np.unique(test.y).tolist()) <= {0, 1}
    if _is_post_fit(mode):
        if not binary:
            raise ValueError("training mode 'fairlearn' needs binary labels")
        t0 = time.perf_counter()
        x = to_model_input(labelled["x"], input_shape)
        red = fit_reduction(x, labelled["y"], labelled["group"], seed=seed, **mode_params)
        pred = predict(red, test.x.numpy(), seed)
        out = evaluate_probs(np.eye(2)[pred][:, :, None], test.y, test.group)
        out["network_accuracy"] = metrics.get("accuracy", float("nan"))
        out["fair_fit_seconds"] = time.perf_counter() - t0
        return {**metrics, **out, **binary_metrics(test.y, pred, test.group)}
    if not binary:
        return metrics
    probs = mc_probs(model, test.x, mc_samples=ev.mc_samples, batch_size=ev.batch_size,
                     generator_seed=seed, row_keys=test.row_id)
    pred = probs.mean(axis=2).argmax(axis=1)
    return {**metrics, **binary_metrics(test.y, pred, test.group)}


def worst_group(ev, val: EvalSet | None, model: torch.nn.Module, metrics: dict, seed: int
                ) -> tuple[int, dict[str, Any]]:
    """``z*`` (FRAL Algorithm 1, line 5: ``EVAL(M_R, A, eps, D_V)``) and its record fields.

    With a validation split (``evaluation.val_fraction``) the model is evaluated on it
    (``worst_group_by: accuracy`` = MC-mean accuracy, ``robust_accuracy`` = PGD accuracy);
    without one the round's test metrics are used.
    """
    prefix = "acc_group_" if ev.worst_group_by == "accuracy" else "rob_acc_group_"
    if val is None:
        return worst_group_from_metrics(metrics, prefix), {"worst_group_source": "test"}
    if ev.worst_group_by == "accuracy":
        m = evaluate_model(model, val.x, val.y, val.group, mc_samples=ev.mc_samples,
                           batch_size=ev.batch_size, seed=seed, row_keys=val.row_id)
    else:
        m = evaluate_robust(model, val.x, val.y, val.group, attack=evaluation_attack(ev, val.x),
                            row_keys=val.row_id, seed=seed, batch_size=min(ev.batch_size, 256))
    z = worst_group_from_metrics(m, prefix)
    info: dict[str, Any] = {"worst_group_source": "validation"}
    info.update({f"val_{k}": float(v) for k, v in m.items() if k.startswith(prefix)})
    return z, info
