"""Batched (MC-dropout) prediction with the deterministic trunk computed once per batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from rayfal.models.mc_dropout import (
    MCDropout,
    TwoStageModel,
    deterministic_dropout,
    dropout_masks,
)

#: rows sharing ``row_key // MASK_BLOCK`` draw their masks from one generator call. Small
#: enough that sparse row ids (e.g. a shuffled or filtered pool) waste at most 8x the random
#: numbers, large enough that dense ids need few generator calls.
MASK_BLOCK = 8


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model lives: the device of its first parameter (or buffer); ``cpu`` for a
    model with neither. Inputs are moved there batch by batch (no hard-coded ``cuda``)."""
    net = getattr(model, "module", model)
    for t in net.parameters():
        return t.device
    for t in net.buffers():
        return t.device
    return torch.device("cpu")


class RowKeyedMasks:
    """Dropout masks that depend only on ``(seed, layer, row key, MC sample)``.

    Activations are laid out sample-major (``[T * n, D]``, row ``t * n + r``). For each block
    of ``MASK_BLOCK`` consecutive keys one generator, seeded by (seed, layer, block), draws
    ``[T, MASK_BLOCK, D]`` uniforms; a row takes the slice at ``key % MASK_BLOCK``. So a row's
    MC samples are the same in every batch, shard, actor or process.
    """

    def __init__(self, row_keys: np.ndarray, mc_samples: int, seed: int) -> None:
        keys = np.asarray(row_keys, dtype=np.int64)
        self.block = keys // MASK_BLOCK
        self.slot = torch.from_numpy(keys % MASK_BLOCK)
        self.blocks, inverse = np.unique(self.block, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(self.blocks) + 1))
        self.rows = [torch.from_numpy(order[bounds[i] : bounds[i + 1]])
                     for i in range(len(self.blocks))]
        self.t = mc_samples
        self.seed = seed
        self.layer = 0

    def __call__(self, module: MCDropout, x: torch.Tensor) -> torch.Tensor:
        n = len(self.slot)
        d = x.shape[-1]
        if x.shape[0] != self.t * n:
            raise ValueError(f"expected {self.t * n} activation rows, got {x.shape[0]}")
        keep = torch.empty(self.t, n, d, dtype=x.dtype)
        gen = torch.Generator()
        for rows, b in zip(self.rows, self.blocks.tolist(), strict=True):
            gen.manual_seed(hash((self.seed, self.layer, b)) & 0x7FFF_FFFF_FFFF_FFFF)
            u = torch.rand(self.t, MASK_BLOCK, d, generator=gen)
            keep[:, rows] = (u[:, self.slot[rows]] >= module.p).to(x.dtype)
        self.layer += 1
        return keep.reshape(self.t * n, d).to(x.device) / (1.0 - module.p)


@torch.inference_mode()
def mc_probs(
    model: TwoStageModel,
    x: torch.Tensor,
    *,
    mc_samples: int,
    batch_size: int = 512,
    generator_seed: int | None = None,
    row_keys: np.ndarray | None = None,
    cache_trunk: bool = True,
) -> np.ndarray:
    """Class probabilities ``[N, C, T]`` from ``T = mc_samples`` MC-dropout passes.

    The model is put in ``eval()`` (batch-norm uses running statistics) and MC dropout stays on.
    The trunk runs once per batch; only the stochastic head runs T times, on the embedding
    repeated T times in one call. With ``row_keys`` (e.g. row_ids) the dropout masks are a pure
    function of ``(generator_seed, key)`` (:class:`RowKeyedMasks`): results do not depend on
    batching. Otherwise ``generator_seed`` seeds torch's global RNG once.

    ``cache_trunk=False`` is the naive path (baal's ``replicate_in_memory``): the whole model
    runs on the batch repeated T times. With ``row_keys`` both paths use the same masks and
    give the same probabilities; the cached one skips T-1 trunk passes.
    """
    was_training = model.training
    model.eval()
    if generator_seed is not None and row_keys is None:
        torch.manual_seed(generator_seed)
    device = model_device(model)
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        n = xb.shape[0]
        if cache_trunk:
            zt = model.embed(xb).repeat(mc_samples, 1)  # [T*n, D], sample-major
            run = model.head
        else:
            zt = xb.repeat(mc_samples, *([1] * (xb.dim() - 1)))  # [T*n, ...], sample-major
            run = model
        if row_keys is not None:
            masks = RowKeyedMasks(row_keys[start : start + n], mc_samples, generator_seed or 0)
            with dropout_masks(masks):
                logits = run(zt)
        else:
            logits = run(zt)
        logits = logits.reshape(mc_samples, n, -1)
        probs = torch.softmax(logits.float(), dim=-1).permute(1, 2, 0)  # [n, C, T]
        out.append(probs.cpu().numpy().astype(np.float64))
    model.train(was_training)
    if not out:
        return np.zeros((0, model.num_classes, mc_samples))
    return np.concatenate(out, axis=0)


@torch.inference_mode()
def deterministic_probs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512
                        ) -> np.ndarray:
    """Softmax of the deterministic network (MC dropout off, eval mode) ``[N, C]`` float64,
    computed on the model's device (:func:`model_device`) whatever the device of ``x``."""
    net = getattr(model, "module", model)
    device = model_device(net)
    was_training = net.training
    net.eval()
    try:
        with deterministic_dropout():
            out = [F.softmax(net(x[s:s + batch_size].to(device, non_blocking=True)).float(),
                             dim=1)
                   for s in range(0, len(x), batch_size)]
    finally:
        net.train(was_training)
    if not out:
        return np.zeros((0, 0))
    return torch.cat(out).cpu().numpy().astype(np.float64)
