"""Batched (MC-dropout) prediction with the deterministic trunk computed once per batch."""

from __future__ import annotations

import numpy as np
import torch

from rayfal.models.mc_dropout import TwoStageModel


@torch.inference_mode()
def mc_probs(
    model: TwoStageModel,
    x: torch.Tensor,
    *,
    mc_samples: int,
    batch_size: int = 512,
    generator_seed: int | None = None,
) -> np.ndarray:
    """Class probabilities ``[N, C, T]`` from ``T = mc_samples`` MC-dropout passes.

    The model is put in ``eval()`` (batch-norm uses running statistics) and MC dropout stays on.
    The trunk runs once per batch; only the stochastic head runs T times, on the embedding
    repeated T times in one call. ``generator_seed`` makes the dropout masks reproducible.
    """
    was_training = model.training
    model.eval()
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        z = model.embed(xb)
        n = z.shape[0]
        zt = z.repeat(mc_samples, 1)  # [T*n, D], sample-major
        logits = model.head(zt).reshape(mc_samples, n, -1)
        probs = torch.softmax(logits.float(), dim=-1).permute(1, 2, 0)  # [n, C, T]
        out.append(probs.cpu().numpy().astype(np.float64))
    model.train(was_training)
    if not out:
        return np.zeros((0, model.num_classes, mc_samples))
    return np.concatenate(out, axis=0)
