"""FRAL's robust fairness metrics (Wu et al. 2023, Eq. 1 and Table 1) from predictions.

Eq. 1, for the evaluated (robust) model ``M_R`` and test set ``D_T`` with groups ``z``::

    F_std = min_z P{ M_R(x) = y          | (x, y, z) in D_T^z }
    F_rob = min_z P{ M_R(A(x, eps)) = y  | (x, y, z) in D_T^z }

disparity = ``max_z - min_z`` of the per-group accuracy (for two groups the absolute gap,
Verma & Rubin's prediction disparity as in the paper); group average = unweighted mean over
groups. The predictions come from :func:`rayfal.evaluation.evaluate_robust`.
"""

from __future__ import annotations

import numpy as np


def fral_metrics(y: np.ndarray, pred_std: np.ndarray, pred_rob: np.ndarray,
                 group: np.ndarray) -> dict[str, float]:
    """Per-group standard/robust accuracy and FRAL's Eq. 1 summaries, from predictions.

    Keys: ``std_acc_group_<g>``, ``rob_acc_group_<g>``, ``F_std``/``F_rob`` (the worst group,
    Eq. 1), ``std_disparity``/``rob_disparity`` (max - min over groups), ``std_group_avg``/
    ``rob_group_avg`` (unweighted mean over groups), ``robust_accuracy`` (over all rows),
    ``worst_group_robust_accuracy`` (= ``F_rob``) and ``robust_disparity`` (= ``rob_disparity``).
    """
    y, pred_std, pred_rob, group = (np.asarray(a) for a in (y, pred_std, pred_rob, group))
    if not (len(y) == len(pred_std) == len(pred_rob) == len(group)) or len(y) == 0:
        raise ValueError(f"fral_metrics: need equal, non-zero lengths, got {len(y)}, "
                         f"{len(pred_std)}, {len(pred_rob)}, {len(group)}")
    out: dict[str, float] = {}
    std, rob = [], []
    for g in np.unique(group).tolist():
        m = group == g
        std.append(float(np.mean(pred_std[m] == y[m])))
        rob.append(float(np.mean(pred_rob[m] == y[m])))
        out[f"std_acc_group_{g}"] = std[-1]
        out[f"rob_acc_group_{g}"] = rob[-1]
    out.update({
        "F_std": min(std), "F_rob": min(rob),
        "std_disparity": max(std) - min(std), "rob_disparity": max(rob) - min(rob),
        "std_group_avg": float(np.mean(std)), "rob_group_avg": float(np.mean(rob)),
        "robust_accuracy": float(np.mean(pred_rob == y)),
    })
    out["worst_group_robust_accuracy"] = out["F_rob"]
    out["robust_disparity"] = out["rob_disparity"]
    return out
