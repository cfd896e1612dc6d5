"""Batched (MC-dropout) prediction with the deterministic trunk computed once per batch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from rayfal.models.mc_dropout import (
    _DETERMINISTIC,
    _MASKS,
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
    give the same probabilities; the cached one skips T-1 trunk passes. The cached row-keyed
    path runs the fast kernel (:func:`_fast_mc_probs`, bit-identical) for models made of
    layers it knows (the glyph CNN, the MLP, any ``MCDropout/Linear/ReLU`` head).
    """
    was_training = model.training
    model.eval()
    if row_keys is not None and cache_trunk:
        try:
            fast = _fast_mc_probs(model, x, mc_samples=mc_samples, batch_size=batch_size,
                                  seed=generator_seed or 0, row_keys=row_keys)
        finally:
            model.train(was_training)
        if fast is not None:
            return fast
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


# ----------------------------------------------------------------------------- fast kernel
#
# The row-keyed path of :func:`mc_probs`, rearranged for speed but bit-identical to the
# straightforward one (``tests/test_kernel_identity.py`` keeps a frozen copy of it):
#
# * trunk: ``Conv2d-BatchNorm2d-ReLU-MaxPool2d(2)`` blocks are computed as conv -> max-pool ->
#   BN -> ReLU. Max commutes with any non-decreasing elementwise map, rounding included, so BN
#   and ReLU run on a quarter of the elements with the same result; channels whose BN scale is
#   negative get their conv weights (and BN weight/mean) negated, which is exact. The 2x2 max
#   is taken from strided views (``max_pool2d_with_indices`` was a third of the trunk). Each
#   convolution runs channels-last where oneDNN gives bit-identical outputs in that layout
#   (checked once per shape by a probe; the 3-channel first layer is ~2x faster there).
# * masks: activations are laid out block-major, ``[blocks, T, MASK_BLOCK, D]``, the layout
#   in which each block's generator draws its uniforms, so a block's draw lands directly in
#   the activation buffer (one ``torch.rand(out=)`` per block, no per-row indexing), is
#   turned into a 0/1 mask in place and multiplied by the embedding in place; rows of a block
#   absent from the batch are zero rows. ``1/(1-p)`` multiplies the un-repeated input
#   (``n x D`` instead of ``T x n x D``), which is what ``x * (keep / (1-p))`` computes.
# * the head runs on chunks of ``HEAD_CHUNK_BLOCKS`` blocks and an all-convolutional trunk on
#   sub-batches of ``TRUNK_ROWS`` images (chosen by measurement: activations stay in cache;
#   both are exact because every row's arithmetic is independent of its batch-mates there).

#: blocks of MASK_BLOCK rows per head chunk (T x 8 x 16 = 2,560 activation rows at T = 20)
HEAD_CHUNK_BLOCKS = 16
#: images per trunk sub-batch of an all-convolutional trunk (measured on the glyph CNN)
TRUNK_ROWS = 256
_SEED_MASK = 0x7FFF_FFFF_FFFF_FFFF
_CL_EXACT: dict[tuple, bool] = {}


def _channels_last_exact(conv: torch.nn.Conv2d, shape: tuple[int, ...], device: torch.device
                         ) -> bool:
    """Whether ``conv`` gives bit-identical outputs on channels-last input (probed once per
    layer shape and device on random data; oneDNN picks its algorithm by shape)."""
    key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
           conv.dilation, conv.groups, conv.bias is not None, tuple(shape[1:]), device.type)
    if key not in _CL_EXACT:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(8, *shape[1:], generator=g).to(device)
        w = (torch.randn(conv.weight.shape, generator=g) * 0.2).to(device)
        b = None if conv.bias is None else torch.randn(conv.out_channels, generator=g).to(device)
        kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                  groups=conv.groups)
        ref = F.conv2d(x, w, b, **kw)
        cl = F.conv2d(x.contiguous(memory_format=torch.channels_last),
                      w.contiguous(memory_format=torch.channels_last), b, **kw)
        _CL_EXACT[key] = bool(torch.equal(ref, cl.contiguous()))
    return _CL_EXACT[key]


def _max_pool_2x2(y: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(y, 2)`` (exact: a max) from strided views, as a contiguous NCHW tensor."""
    n, c, h, w = y.shape
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        v = y.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c)  # NHWC memory
        a = torch.maximum(v[:, :, 0], v[:, :, 1])  # [n, h/2, w/2, 2, c]
        return torch.maximum(a[:, :, :, 0], a[:, :, :, 1]).permute(0, 3, 1, 2).contiguous()
    v = y.view(n, c, h // 2, 2, w // 2, 2)
    a = torch.maximum(v[:, :, :, 0], v[:, :, :, 1])  # [n, c, h/2, w/2, 2]
    return torch.maximum(a[..., 0], a[..., 1])


class _ConvBlock:
    """``Conv2d-BatchNorm2d(eval)-ReLU-MaxPool2d(2)`` as conv -> pool -> BN -> ReLU (exact)."""

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
        with torch.no_grad():
            sign = torch.ones(bn.num_features, device=conv.weight.device)
            if bn.weight is not None:
                sign = torch.where(bn.weight < 0, -1.0, 1.0).to(conv.weight.dtype)
            self.weight = conv.weight * sign.view(-1, 1, 1, 1)
            self.bias = None if conv.bias is None else conv.bias * sign
            self.bn_weight = None if bn.weight is None else bn.weight * sign
            self.mean = bn.running_mean * sign
        self.var, self.bn_bias, self.eps = bn.running_var, bn.bias, bn.eps
        self.conv = conv
        self.kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                       groups=conv.groups)
        self.weight_cl: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if _channels_last_exact(self.conv, tuple(x.shape), x.device):
            if self.weight_cl is None:
                self.weight_cl = w.contiguous(memory_format=torch.channels_last)
            x, w = x.contiguous(memory_format=torch.channels_last), self.weight_cl
        y = F.conv2d(x, w, self.bias, **self.kw)
        if y.shape[-1] % 2 or y.shape[-2] % 2:
            raise _Unsupported
        y = _max_pool_2x2(y)
        y = F.batch_norm(y, self.mean, self.var, self.bn_weight, self.bn_bias, False, 0.0,
                         self.eps)
        return y.relu_()


class _Unsupported(Exception):
    """The fast kernel does not apply; the caller falls back to the module calls."""


def _trunk_plan(model: TwoStageModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trunk as a list of exact fast steps when it is a plain ``nn.Sequential`` of known
    layers inside the model's own ``embed``; else the model's ``embed``."""
    trunk = getattr(model, "trunk", None)
    if type(model).embed is not TwoStageModel.embed or type(trunk) is not torch.nn.Sequential:
        return model.embed
    mods = list(trunk)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    i = 0
    while i < len(mods):
        m = mods[i : i + 4]
        if (len(m) == 4 and type(m[0]) is torch.nn.Conv2d and m[0].padding_mode == "zeros"
                and type(m[1]) is torch.nn.BatchNorm2d and not m[1].training
                and m[1].running_mean is not None and type(m[2]) is torch.nn.ReLU
                and type(m[3]) is torch.nn.MaxPool2d and _is_2x2(m[3])):
            steps.append(_ConvBlock(m[0], m[1]))
            i += 4
        else:
            steps.append(mods[i])
            i += 1

    def run(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    if not all(isinstance(s, _ConvBlock | torch.nn.Flatten) for s in steps):
        return run  # e.g. a Linear trunk: sgemm results depend on the batch, keep it whole

    def run_chunked(x: torch.Tensor) -> torch.Tensor:
        # convolutions, pooling and BN give each image the same result in any batch; sub-
        # batches of TRUNK_ROWS keep the activations in cache (measured: 256 < 512 rows)
        if len(x) <= TRUNK_ROWS:
            return run(x)
        return torch.cat([run(x[i : i + TRUNK_ROWS]) for i in range(0, len(x), TRUNK_ROWS)])

    return run_chunked


def _is_2x2(pool: torch.nn.MaxPool2d) -> bool:
    two = (2, (2, 2))
    return (pool.kernel_size in two and pool.stride in two and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices)


def _head_plan(model: TwoStageModel) -> list[torch.nn.Module] | None:
    head = getattr(model, "head", None)
    if type(head) is not torch.nn.Sequential:
        return None
    mods = list(head)
    if not all(type(m) in (MCDropout, torch.nn.Linear, torch.nn.ReLU) for m in mods):
        return None
    return mods


class _BlockMaskedHead:
    """The MC-dropout head on block-major activations with :class:`RowKeyedMasks`' draws."""

    def __init__(self, mods: list[torch.nn.Module], mc_samples: int, seed: int) -> None:
        self.mods, self.t, self.seed = mods, mc_samples, seed
        self.gen = torch.Generator()
        # 1 / (1 - p) as ``keep / (1 - p)`` computes it (float32 division), per dropout layer
        self.scale = {id(m): torch.ones((), dtype=torch.float32) / (1.0 - m.p)
                      for m in mods if isinstance(m, MCDropout) and m.p}
        self.buffers: dict[tuple, torch.Tensor] = {}

    def _masks(self, blocks: list[int], layer: int, d: int, p: float, device: torch.device
               ) -> torch.Tensor:
        """``[len(blocks), T, MASK_BLOCK, d]`` 0/1 keep masks, each block drawn by its own
        generator exactly as :class:`RowKeyedMasks` draws it."""
        shape = (len(blocks), self.t, MASK_BLOCK, d)
        u = self.buffers.get((layer, shape))
        if u is None:  # reused chunk after chunk: no page faults on fresh 5 MB buffers
            u = self.buffers[(layer, shape)] = torch.empty(shape)
        gen, seed = self.gen, self.seed
        for i, b in enumerate(blocks):
            gen.manual_seed(hash((seed, layer, b)) & _SEED_MASK)
            torch.rand(self.t, MASK_BLOCK, d, generator=gen, out=u[i])
        return u.ge_(p).to(device, non_blocking=True)

    def __call__(self, z: torch.Tensor, blocks: list[int], bidx: torch.Tensor,
                 slot: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, T, C]`` of the embedding rows ``z`` (``[n, D]``), row ``r`` at
        ``(bidx[r], slot[r])`` of the chunk's blocks."""
        nb, d = len(blocks), z.shape[1]
        a = z.new_zeros(nb, 1, MASK_BLOCK, d)
        a[bidx, 0, slot] = z
        t_cur, layer = 1, 0
        for m in self.mods:
            if isinstance(m, MCDropout):
                if m.p == 0.0:
                    continue
                scale = self.scale[id(m)].to(device=a.device, dtype=a.dtype)
                keep = self._masks(blocks, layer, a.shape[-1], m.p, a.device)
                a = keep.mul_(a * scale)  # x * (keep / (1 - p)), T copies
                t_cur, layer = self.t, layer + 1
            elif isinstance(m, torch.nn.Linear):
                a = F.linear(a.reshape(-1, a.shape[-1]), m.weight, m.bias)
                a = a.reshape(nb, t_cur, MASK_BLOCK, -1)
            else:  # ReLU; ``a`` is always this kernel's own buffer here
                a = a.relu_()
        out = a[bidx, :, slot]  # [n, t_cur, C]
        return out.expand(-1, self.t, -1) if t_cur == 1 else out


@torch.inference_mode()
def _fast_mc_probs(model: TwoStageModel, x: torch.Tensor, *, mc_samples: int, batch_size: int,
                   seed: int, row_keys: np.ndarray) -> np.ndarray | None:
    """The row-keyed :func:`mc_probs`, bit-identical, or ``None`` when the model's layers are
    not ones this kernel knows (the caller then runs the modules)."""
    if _DETERMINISTIC.get() or _MASKS.get() is not None:
        return None
    mods = _head_plan(model)
    if mods is None:
        return None
    keys_all = np.asarray(row_keys, dtype=np.int64)
    if len(np.unique(keys_all)) != len(keys_all):
        return None
    trunk = _trunk_plan(model)
    head = _BlockMaskedHead(mods, mc_samples, seed)
    device = model_device(model)
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device, non_blocking=True)
            z = trunk(xb)
            keys = keys_all[start : start + len(xb)]
            block = keys // MASK_BLOCK
            blocks, inverse = np.unique(block, return_inverse=True)
            slot = keys % MASK_BLOCK
            for c0 in range(0, len(blocks), HEAD_CHUNK_BLOCKS):
                rows = np.flatnonzero((inverse >= c0) & (inverse < c0 + HEAD_CHUNK_BLOCKS))
                logits = head(z[torch.from_numpy(rows).to(device)],
                              blocks[c0 : c0 + HEAD_CHUNK_BLOCKS].tolist(),
                              torch.from_numpy(inverse[rows] - c0).to(device),
                              torch.from_numpy(slot[rows]).to(device))
                probs = torch.softmax(logits.float(), dim=-1)  # [n, T, C]
                out.append((start + rows, probs.permute(1, 0, 2).cpu().numpy()))  # [T, n, C]
    except _Unsupported:
        return None
    if not out:
        return np.zeros((0, model.num_classes, mc_samples))
    # [N, C, T] laid out T-major in memory, as the module path's np.concatenate of permuted
    # [T, n, C] batches leaves it: numpy's reductions (BALD's sums over C and means over T)
    # round by memory order, so the layout is part of "the same scores"
    res = np.empty((mc_samples, len(x), out[0][1].shape[2]))
    for rows, part in out:
        res[:, rows] = part
    return res.transpose(1, 2, 0)
