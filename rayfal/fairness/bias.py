"""Bias-aligned vs bias-conflicting accuracy and the bias gap (Kurmi et al. 2022, GBA,
Section "Experiments", Tables 1-4).

A test row is *bias-aligned* when its bias attribute (e.g. the colour) takes the value that
dominates its class in training, *bias-conflicting* otherwise. The paper reports the accuracy
on each subset, their (unweighted) mean, and the *bias gap* = aligned − conflicting accuracy
("the difference between the aligned and conflicting accuracies"; signed here, so a negative
gap means the conflicting rows are classified better).
"""

from __future__ import annotations

import numpy as np

BIAS_ALIGNED = "bias_aligned"


def bias_report(y_true: np.ndarray, y_pred: np.ndarray, *, bias_aligned: np.ndarray) -> dict:
    """``acc_bias_aligned``, ``acc_bias_conflicting``, ``acc_bias_mean`` (their mean) and
    ``bias_gap`` (aligned − conflicting). A subset with no rows gives NaN for its accuracy and
    for the values that need it."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    aligned = np.asarray(bias_aligned)
    if not (len(y_true) == len(y_pred) == len(aligned)):
        raise ValueError(
            f"lengths differ: y_true {len(y_true)}, y_pred {len(y_pred)}, "
            f"bias_aligned {len(aligned)}"
        )
    bad = ~np.isin(aligned, (0, 1))
    if bad.any():
        raise ValueError(
            f"bias_aligned must be 0/1, got {np.unique(aligned[bad])[:5].tolist()} "
            f"at positions {np.flatnonzero(bad)[:10].tolist()}"
        )
    aligned = aligned.astype(bool)
    correct = y_true == y_pred

    def acc(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    a, c = acc(aligned), acc(~aligned)
    return {
        "acc_bias_aligned": a,
        "acc_bias_conflicting": c,
        "acc_bias_mean": (a + c) / 2,
        "bias_gap": a - c,
    }


def bias_metrics_for_model(
    model, x, y: np.ndarray, bias_aligned: np.ndarray, *, mc_samples: int, batch_size: int,
    seed: int, row_keys: np.ndarray | None = None,
) -> dict:
    """:func:`bias_report` of the model's MC-dropout predictions on ``x``, computed exactly as
    :func:`rayfal.evaluation.evaluate_model` does (same seed and row keys, hence the same
    predictions as the round record's ``accuracy``)."""
    from rayfal.acquisition import scores
    from rayfal.models.predict import mc_probs

    probs = mc_probs(model, x, mc_samples=mc_samples, batch_size=batch_size,
                     generator_seed=seed, row_keys=row_keys)
    pred = scores.mean_probs(probs).argmax(axis=1)
    return bias_report(np.asarray(y), pred, bias_aligned=bias_aligned)


# ----------------------------------------------------------------------------- lookup by row_id


def read_bias_aligned(test) -> tuple[np.ndarray, np.ndarray] | None:
    """``(row_id, bias_aligned)`` of a test :class:`~rayfal.data.pool.Pool` sorted by row_id, or
    ``None`` when it has no ``bias_aligned`` column (then no bias metrics are reported)."""
    if BIAS_ALIGNED not in test.schema.names:
        return None
    rows = test.read_all(["row_id", BIAS_ALIGNED])
    ids = np.asarray(rows["row_id"], dtype=np.int64)
    order = np.argsort(ids)
    return ids[order], np.asarray(rows[BIAS_ALIGNED], dtype=np.int64)[order]


def aligned_for(lookup: tuple[np.ndarray, np.ndarray], row_ids: np.ndarray) -> np.ndarray:
    """The ``bias_aligned`` flags of ``row_ids`` (by id, so any subset/order of the test rows
    works); unknown ids raise ``KeyError`` naming them."""
    ids, flags = lookup
    row_ids = np.asarray(row_ids, dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, row_ids), max(len(ids) - 1, 0))
    missing = row_ids[(ids[pos] != row_ids) if len(ids) else np.ones(len(row_ids), bool)]
    if len(missing):
        raise KeyError(f"no bias_aligned flag for test row_id(s) {missing[:10].tolist()}")
    return flags[pos]
