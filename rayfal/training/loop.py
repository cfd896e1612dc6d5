"""A plain, deterministic torch training loop (no Ray): shared by local mode and DDP workers.

The optimiser of one round (:class:`LoopSettings`):

* ``optimizer="adam"`` (the default: ``torch.optim.Adam(lr, weight_decay)``) or ``"sgd"``
  (``torch.optim.SGD(lr, momentum, weight_decay)``; the BALD-fairness paper's reference code
  trains with SGD lr 0.01, momentum 0.9 and gradient-norm clipping at 5, FRAL's appendix with
  SGD momentum 0.9, weight decay 2e-4 and cosine annealing after a warm-up);
* ``schedule="constant"`` (the default) or ``"cosine"`` — the learning rate of step ``t`` of the
  round's ``T`` steps is ``lr * lr_factor(t, T, ...)`` (:func:`lr_factor`), optionally after a
  linear warm-up over the first ``warmup_frac * T`` steps;
* ``grad_clip``: clip the global gradient L2 norm (all parameters together,
  ``torch.nn.utils.clip_grad_norm_``) to this value before every step; ``None`` (the default)
  does not clip.

With the defaults the loop runs exactly the operations it always ran (Adam, no learning-rate
change, no clipping): trained weights are bit-identical to before these options existed.

The schedule, the warm-up and a fairness mode's λ ramp are *per round*: each call of
:func:`train_model` is one round's training with a fresh optimiser (Adam moments / SGD
momentum restart), whether the weights were reset or warm-started by the campaign. Loss
functions that depend on training progress expose ``set_progress(p)``; the loop calls it before
every step with ``p = t / T`` in ``[0, 1)`` (see :func:`training_progress`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from rayfal.training.modes import LossFn

Optimizer = Literal["adam", "sgd"]
Schedule = Literal["constant", "cosine"]


@dataclass
class LoopSettings:
    epochs: int
    min_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    optimizer: Optimizer = "adam"
    momentum: float = 0.9  # SGD only
    schedule: Schedule = "constant"
    warmup_frac: float = 0.0
    grad_clip: float | None = None


def num_steps(n: int, s: LoopSettings, world_size: int = 1) -> int:
    """Optimizer steps: ``epochs`` passes over ``n`` rows, but never fewer than ``min_steps``."""
    per_epoch = math.ceil(n / (s.batch_size * world_size))
    return max(s.epochs * per_epoch, s.min_steps)


def index_stream(n: int, steps: int, s: LoopSettings, world_size: int) -> np.ndarray:
    """``[steps, world_size, batch]`` row indices: back-to-back seeded permutations of ``n``.

    Every rank derives the same stream and takes its own slice, so each step's global batch is
    the same whatever the number of workers (up to how it is split).
    """
    need = steps * world_size * s.batch_size
    rng = np.random.default_rng([s.seed, 0x7A11])
    reps = math.ceil(need / n)
    stream = np.concatenate([rng.permutation(n) for _ in range(reps)])[:need]
    return stream.reshape(steps, world_size, s.batch_size)


def warmup_steps(steps: int, warmup_frac: float) -> int:
    """The number of linear warm-up steps: ``round(warmup_frac * steps)``, at most ``steps - 1``
    (the last step is never a warm-up step) and 0 without warm-up."""
    if warmup_frac <= 0 or steps <= 1:
        return 0
    return min(steps - 1, round(warmup_frac * steps))


def lr_factor(step: int, steps: int, schedule: Schedule = "constant",
              warmup: int = 0) -> float:
    """The learning-rate multiplier of 0-based optimiser step ``step`` of ``steps``.

    * warm-up (``step < warmup``): ``(step + 1) / warmup``, linear up to 1;
    * ``"constant"``: 1;
    * ``"cosine"`` (cosine annealing, Loshchilov & Hutter 2017, without restarts, to 0 over the
      steps after the warm-up): ``(1 + cos(π · (step - warmup) / (steps - warmup))) / 2`` —
      1 at the first step after the warm-up, 1/2 halfway, and ``→ 0`` at ``step = steps``
      (one past the last step, as ``torch.optim.lr_scheduler.CosineAnnealingLR`` with
      ``T_max = steps``: the last step's factor is small but positive).
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (constant, cosine)")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def training_progress(step: int, steps: int) -> float:
    """``p = step / steps`` in ``[0, 1)``: the fraction of the round's steps done before step
    ``step`` (0 at the first step), as passed to a loss's ``set_progress``."""
    return step / max(1, steps)


def make_optimizer(params, s: LoopSettings) -> torch.optim.Optimizer:
    """The round's optimiser (module docstring); Adam exactly as before the options existed."""
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                               weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r} (adam, sgd)")


def train_model(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    loss_fn: LossFn,
    s: LoopSettings,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train ``model`` in place on ``tensors`` (``x``, ``y``, optional ``group``).

    Returns the mean of each logged loss term over the last epoch-worth of steps (with
    ``grad_clip``, also ``train_grad_norm``: the mean pre-clipping gradient norm over them).
    """
    n = len(tensors["y"])
    if n == 0:
        raise ValueError("cannot train on an empty labelled set")
    if s.grad_clip is not None and not s.grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {s.grad_clip!r}")
    torch.manual_seed(s.seed + 7919 * rank)
    steps = num_steps(n, s, world_size)
    stream = index_stream(n, steps, s, world_size)
    opt = make_optimizer(model.parameters(), s)
    warmup = warmup_steps(steps, s.warmup_frac)
    scheduled = s.schedule != "constant" or warmup > 0
    set_progress = getattr(loss_fn, "set_progress", None)
    model.train()
    tail = max(1, min(steps, math.ceil(n / (s.batch_size * world_size))))
    sums: dict[str, float] = {}
    for step in range(steps):
        if scheduled:
            lr = s.lr * lr_factor(step, steps, s.schedule, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
        if set_progress is not None:
            set_progress(training_progress(step, steps))
        idx = torch.from_numpy(stream[step, rank])
        batch = {k: v[idx].to(device, non_blocking=True) for k, v in tensors.items()}
        loss, logs = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip is not None:
            # after backward: under DDP the gradients are already all-reduced, so every rank
            # clips the same gradient by the same factor
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            logs = {**logs, "grad_norm": float(norm)}
        opt.step()
        if step >= steps - tail:
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
    model.eval()
    return {f"train_{k}": v / tail for k, v in sums.items()} | {"train_steps": float(steps)}
