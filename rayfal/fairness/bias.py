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
import torch

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


def _subset_accuracy(correct: np.ndarray, aligned: np.ndarray, prefix: str) -> dict:
    out = {}
    for name, mask in (("aligned", aligned == 1), ("conflicting", aligned == 0)):
        out[f"{prefix}_bias_{name}"] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out


@torch.no_grad()
def _embeddings(model, x, batch_size: int) -> torch.Tensor:
    """``model.trunk`` of ``x`` (a tensor or array) in eval mode, on the model's device."""
    device = next(model.parameters()).device
    x = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.trunk(x[i:i + batch_size].to(device))
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def discriminator_bias_report(model, x, group: np.ndarray,
                              bias_aligned: np.ndarray, *, train_x,
                              train_group: np.ndarray, batch_size: int = 512,
                              seed: int = 0) -> dict:
    """How well the bias attribute (the group, e.g. the colour) can be read from the model's
    features, on bias-aligned vs bias-conflicting test rows (GBA paper, Fig. 1 and Section
    "Class Correlation of Discriminator": a discriminator that is right on aligned rows but
    wrong on conflicting ones predicts the attribute from class cues; one right on both reads
    the attribute itself from the features).

    * ``disc_acc_bias_aligned`` / ``disc_acc_bias_conflicting``: the model's own adversarial
      discriminator (its ``group_head`` on the trunk's features ``z``, unmasked as in training);
      NaN for a model without one (``standard`` mode). Nothing for a model without a trunk.
    * ``probe_acc_bias_aligned`` / ``probe_acc_bias_conflicting``: a fresh linear probe
      (multinomial logistic regression, scikit-learn defaults, ``random_state=seed``) fitted on
      the frozen features of the round's training rows (``train_x``, ``train_group``) to
      predict the group: the "discriminator on the features of a vanilla model" of Fig. 1a,
      available for every model. Features are standardised with the training rows' moments.
    """
    from sklearn.linear_model import LogisticRegression

    if not hasattr(model, "trunk"):
        return {}
    group = np.asarray(group)
    aligned = np.asarray(bias_aligned)
    if not (len(group) == len(aligned) == len(x)):
        raise ValueError(f"lengths differ: x {len(x)}, group {len(group)}, "
                         f"bias_aligned {len(aligned)}")
    z = _embeddings(model, x, batch_size)
    out: dict = {}
    head = getattr(model, "group_head", None)
    if head is None:
        out.update(disc_acc_bias_aligned=float("nan"), disc_acc_bias_conflicting=float("nan"))
    else:
        with torch.no_grad():
            was_training = head.training
            head.eval()
            pred = head(z).argmax(dim=1).cpu().numpy()
            head.train(was_training)
        out.update(_subset_accuracy(pred == group, aligned, "disc_acc"))
    z_train = _embeddings(model, train_x, batch_size).cpu().numpy().astype(np.float64)
    mu, sd = z_train.mean(axis=0), z_train.std(axis=0) + 1e-8
    train_group = np.asarray(train_group)
    if len(np.unique(train_group)) < 2:
        out.update(probe_acc_bias_aligned=float("nan"), probe_acc_bias_conflicting=float("nan"))
        return out
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit((z_train - mu) / sd, train_group)
    pred = probe.predict((z.cpu().numpy().astype(np.float64) - mu) / sd)
    out.update(_subset_accuracy(pred == group, aligned, "probe_acc"))
    return out


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
