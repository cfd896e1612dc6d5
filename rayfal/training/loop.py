"""A plain, deterministic torch training loop (no Ray): shared by local mode and DDP workers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rayfal.training.modes import LossFn


@dataclass
class LoopSettings:
    epochs: int
    min_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int


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

    Returns the mean of each logged loss term over the last epoch-worth of steps.
    """
    n = len(tensors["y"])
    if n == 0:
        raise ValueError("cannot train on an empty labelled set")
    torch.manual_seed(s.seed + 7919 * rank)
    steps = num_steps(n, s, world_size)
    stream = index_stream(n, steps, s, world_size)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    model.train()
    tail = max(1, min(steps, math.ceil(n / (s.batch_size * world_size))))
    sums: dict[str, float] = {}
    for step in range(steps):
        idx = torch.from_numpy(stream[step, rank])
        batch = {k: v[idx].to(device, non_blocking=True) for k, v in tensors.items()}
        loss, logs = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - tail:
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
    model.eval()
    return {f"train_{k}": v / tail for k, v in sums.items()} | {"train_steps": float(steps)}
