"""Robust evaluation for FRAL (Wu et al. 2023): per-group standard and robust accuracy under an
L-inf PGD attack, and the paper's minimax metrics F_std / F_rob (Eq. 1) with the prediction
disparity and the group average of its Table 1.

Eq. 1, for the evaluated (robust) model ``M_R`` and test set ``D_T`` with groups ``z``::

    F_std = min_z P{ M_R(x) = y          | (x, y, z) in D_T^z }
    F_rob = min_z P{ M_R(A(x, eps)) = y  | (x, y, z) in D_T^z }

Choices (documented, the paper leaves them open):

* predictions use the *deterministic* network (MC dropout off, :func:`deterministic_dropout`):
  the attack differentiates that network, so the clean and the attacked accuracy refer to the
  same classifier (with ``eps = 0`` they are equal). The MC-mean ``accuracy`` of
  :mod:`rayfal.evaluation` is reported separately and can differ slightly.
* ``A`` is PGD maximising the cross-entropy against the true label (Madry et al.; the paper's
  threat model), ``steps`` steps of size ``alpha`` from a uniform random start in the eps-ball.
  The random start is a pure function of ``(seed, row key)`` (:func:`pgd_row_keyed`), so the
  result does not depend on batch size, shard split or row order.
* disparity = ``max_z - min_z`` of the per-group accuracy (for two groups the absolute gap,
  Verma & Rubin's prediction disparity as in the paper); group average = unweighted mean over
  groups.

Also: :func:`validation_mask` — the row_id-hash validation split the driver uses to find the
worst group ``z*`` (FRAL Algorithm 1, line 5) on data that is not the reported test set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from rayfal.attacks import pgd
from rayfal.models.mc_dropout import deterministic_dropout

__all__ = [
    "AttackSpec",
    "deterministic_probs",
    "evaluate_robust",
    "fral_metrics",
    "pgd_row_keyed",
    "row_noise",
    "validation_mask",
]


@dataclass(frozen=True)
class AttackSpec:
    """An L-inf PGD attack: radius ``eps``, step ``alpha``, ``steps`` steps, objective ``loss``
    (``"ce"`` against labels, ``"kl"`` = KL(p(x) ‖ p(x')) without labels), input ``clamp``."""

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 20
    loss: str = "ce"
    clamp: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "kl"):
            raise ValueError(f"attack loss must be 'ce' or 'kl', got {self.loss!r}")
        if not self.eps >= 0 or self.steps < 0 or (self.steps > 0 and not self.alpha > 0):
            raise ValueError(f"bad attack: eps={self.eps}, alpha={self.alpha}, steps={self.steps}"
                             " (need eps >= 0, steps >= 0, alpha > 0)")


def _row_seed(seed: int, key: int) -> int:
    digest = hashlib.blake2b(f"{int(seed)}:{int(key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def row_noise(shape: tuple[int, ...], row_keys: np.ndarray, seed: int, kind: str) -> torch.Tensor:
    """Per-row start noise ``[N, *shape]``, a pure function of ``(seed, row key)``:
    uniform in ``[-1, 1]`` (``kind="uniform"``) or standard normal (``"normal"``)."""
    out = torch.empty((len(row_keys), *shape))
    gen = torch.Generator()
    for i, key in enumerate(np.asarray(row_keys, dtype=np.int64).tolist()):
        gen.manual_seed(_row_seed(seed, key))
        if kind == "uniform":
            out[i] = 2.0 * torch.rand(shape, generator=gen) - 1.0
        else:
            out[i] = torch.randn(shape, generator=gen)
    return out


def pgd_row_keyed(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    row_keys: np.ndarray,
    seed: int,
    attack: AttackSpec,
) -> torch.Tensor:
    """L-inf PGD as :func:`rayfal.attacks.pgd` (same update, projection, eval mode, deterministic
    dropout, DDP unwrap), but with a random start keyed by row: ``ce`` starts uniformly in the
    eps-ball, ``kl`` at ``x + 0.001·N(0, I)`` (TRADES). Each row's trajectory depends only on
    its own input and key, never on the other rows of the batch."""
    if attack.loss == "ce" and y is None:
        raise ValueError("pgd_row_keyed(loss='ce') needs labels y")
    kind = "uniform" if attack.loss == "ce" else "normal"
    noise = row_noise(tuple(x.shape[1:]), row_keys, seed, kind) if len(x) else None
    if noise is not None:
        noise = noise * (attack.eps if attack.loss == "ce" else 0.001)
    return pgd(model, x, y, eps=attack.eps, alpha=attack.alpha, steps=attack.steps,
               random_start=True, loss=attack.loss, clamp=attack.clamp, start=noise)


@torch.inference_mode()
def deterministic_probs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512
                        ) -> np.ndarray:
    """Softmax of the deterministic network (MC dropout off, eval mode) ``[N, C]`` float64."""
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    try:
        with deterministic_dropout():
            out = [F.softmax(net(x[s:s + batch_size]).float(), dim=1)
                   for s in range(0, len(x), batch_size)]
    finally:
        net.train(was_training)
    if not out:
        return np.zeros((0, 0))
    return torch.cat(out).cpu().numpy().astype(np.float64)


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
    :func:`fral_metrics`. ``row_keys`` (e.g. row_ids) key the random starts."""
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64))
    keys = np.asarray(row_keys, dtype=np.int64)
    device = next(model.parameters()).device
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


def validation_mask(row_id: np.ndarray, fraction: float, salt: int = 0x7A1D) -> np.ndarray:
    """Rows whose hashed row_id falls below ``fraction`` (a fixed, seed-free split of the test
    set into validation — used for ``z*`` — and the reported test rows)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"evaluation.val_fraction must be in [0, 1), got {fraction}")
    from rayfal.acquisition.base import row_uniform

    return row_uniform(np.asarray(row_id, dtype=np.int64), salt) < fraction


# ----------------------------------------------------------------------------- driver hooks


@dataclass
class EvalSplit:
    """A held-out split already in model-input form (the validation set of FRAL's Algorithm 1)."""

    x: torch.Tensor
    y: np.ndarray
    group: np.ndarray
    row_id: np.ndarray


def attack_for(ev, x: torch.Tensor) -> AttackSpec:
    """The evaluation attack of the job's ``evaluation`` section: PGD-CE, clamp [0, 1] for
    images ``[N, C, H, W]``, no clamp for feature vectors."""
    return AttackSpec(eps=ev.robust_eps, alpha=ev.robust_alpha, steps=ev.robust_steps, loss="ce",
                      clamp=(0.0, 1.0) if x.dim() == 4 else None)


def apply_validation_split(ctx) -> None:
    """Driver hook: with ``evaluation.val_fraction > 0`` move that share of the test rows (by
    row_id hash, :func:`validation_mask`) to ``ctx.val`` and keep the rest as the reported test
    set. Off (``0``) by default, so existing jobs are unchanged."""
    frac = ctx.cfg.evaluation.val_fraction
    if frac <= 0:
        return
    val = validation_mask(ctx.test_row_id, frac)
    if val.all() or not val.any():
        raise ValueError(f"evaluation.val_fraction={frac} leaves an empty validation or test "
                         f"split of the {len(val)} test rows")
    for name, arr in (("validation", ctx.test_group[val]), ("test", ctx.test_group[~val])):
        if len(np.unique(arr)) < len(np.unique(ctx.test_group)):
            raise ValueError(f"evaluation.val_fraction={frac}: the {name} split misses a group")
    idx = torch.from_numpy(np.flatnonzero(val))
    rest = torch.from_numpy(np.flatnonzero(~val))
    ctx.val = EvalSplit(ctx.test_x[idx], ctx.test_y[val], ctx.test_group[val],
                        ctx.test_row_id[val])
    ctx.test_x, ctx.test_y = ctx.test_x[rest], ctx.test_y[~val]
    ctx.test_group, ctx.test_row_id = ctx.test_group[~val], ctx.test_row_id[~val]


def robust_round_metrics(ctx, model: torch.nn.Module, seed: int) -> dict[str, float]:
    """Driver hook: FRAL's robust metrics on the reported test set when ``evaluation.robust``."""
    ev = ctx.cfg.evaluation
    if not ev.robust:
        return {}
    return evaluate_robust(model, ctx.test_x, ctx.test_y, ctx.test_group,
                           attack=attack_for(ev, ctx.test_x), row_keys=ctx.test_row_id,
                           seed=seed, batch_size=min(ev.batch_size, 256))


def round_worst_group(ctx, model: torch.nn.Module, metrics: dict, seed: int
                      ) -> tuple[int, dict[str, Any]]:
    """Driver hook: ``z*`` (FRAL Algorithm 1, line 5: ``EVAL(M_R, A, eps, D_V)``).

    With a validation split (``evaluation.val_fraction``) the model is evaluated on it
    (``worst_group_by: accuracy`` = MC-mean accuracy, ``robust_accuracy`` = PGD accuracy of
    :func:`evaluate_robust`); without one the round's test metrics are used (the behaviour
    before validation splits existed). Returns ``(z*, record fields)``.
    """
    from rayfal.acquisition import worst_group_from_metrics
    from rayfal.evaluation import evaluate_model

    ev = ctx.cfg.evaluation
    prefix = "acc_group_" if ev.worst_group_by == "accuracy" else "rob_acc_group_"
    val = getattr(ctx, "val", None)
    if val is None:
        return worst_group_from_metrics(metrics, prefix), {"worst_group_source": "test"}
    if ev.worst_group_by == "accuracy":
        m = evaluate_model(model, val.x, val.y, val.group, mc_samples=ev.mc_samples,
                           batch_size=ev.batch_size, seed=seed, row_keys=val.row_id)
    else:
        m = evaluate_robust(model, val.x, val.y, val.group, attack=attack_for(ev, val.x),
                            row_keys=val.row_id, seed=seed, batch_size=min(ev.batch_size, 256))
    z = worst_group_from_metrics(m, prefix)
    info: dict[str, Any] = {"worst_group_source": "validation"}
    info.update({f"val_{k}": float(v) for k, v in m.items() if k.startswith(prefix)})
    return z, info
