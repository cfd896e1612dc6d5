"""The fast MC-dropout scoring kernel gives *bit-identical* probabilities (hence BALD scores) to
the straightforward implementation it replaced, with the same row-keyed masks.

``_reference_mc_probs`` below is a frozen copy of the row-keyed path of
:func:`rayfal.models.predict.mc_probs` as it was before the kernel was rewritten (trunk as a
module call, embedding repeated T times, one mask tensor per dropout layer built row by row from
one seeded ``torch.Generator`` per block of ``MASK_BLOCK`` keys, ``x * keep / (1 - p)``). The
golden campaign records (``tests/test_golden_rounds.py``) depend on these masks, so the kernel
must reproduce them exactly, whatever its layout (blocks, pool-before-BN, folded scales) and
batch size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfal.acquisition.scores import bald
from rayfal.models import build_model
from rayfal.models.mc_dropout import MCDropout, dropout_masks
from rayfal.models.predict import _fast_mc_probs, mc_probs

_BLOCK = 8  # MASK_BLOCK when the reference was frozen


class _ReferenceMasks:
    def __init__(self, row_keys: np.ndarray, mc_samples: int, seed: int) -> None:
        keys = np.asarray(row_keys, dtype=np.int64)
        self.block = keys // _BLOCK
        self.slot = torch.from_numpy(keys % _BLOCK)
        self.blocks, inverse = np.unique(self.block, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(self.blocks) + 1))
        self.rows = [torch.from_numpy(order[bounds[i] : bounds[i + 1]])
                     for i in range(len(self.blocks))]
        self.t, self.seed, self.layer = mc_samples, seed, 0

    def __call__(self, module: MCDropout, x: torch.Tensor) -> torch.Tensor:
        n, d = len(self.slot), x.shape[-1]
        keep = torch.empty(self.t, n, d, dtype=x.dtype)
        gen = torch.Generator()
        for rows, b in zip(self.rows, self.blocks.tolist(), strict=True):
            gen.manual_seed(hash((self.seed, self.layer, b)) & 0x7FFF_FFFF_FFFF_FFFF)
            u = torch.rand(self.t, _BLOCK, d, generator=gen)
            keep[:, rows] = (u[:, self.slot[rows]] >= module.p).to(x.dtype)
        self.layer += 1
        return keep.reshape(self.t * n, d) / (1.0 - module.p)


@torch.inference_mode()
def _reference_mc_probs(model, x, *, mc_samples: int, batch_size: int, generator_seed: int,
                        row_keys: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        n = xb.shape[0]
        zt = model.embed(xb).repeat(mc_samples, 1)
        with dropout_masks(_ReferenceMasks(row_keys[start : start + n], mc_samples,
                                           generator_seed)):
            logits = model.head(zt)
        logits = logits.reshape(mc_samples, n, -1)
        out.append(torch.softmax(logits.float(), dim=-1).permute(1, 2, 0).numpy()
                   .astype(np.float64))
    return np.concatenate(out, axis=0)


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking BN statistics, with some negative scales (the kernel pools before BN and
    must flip those channels)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(c, generator=g) * 2 - 0.6)  # ~30% negative
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)


CONFIGS = {
    # quickstart / synbols_bald architecture (32x32 glyphs, width 16, hidden 64)
    "cnn_quickstart": dict(name="cnn", shape=(3, 32, 32), classes=2, width=16, hidden=64,
                           dropout=0.5),
    "cnn_synbols": dict(name="cnn", shape=(3, 32, 32), classes=4, width=16, hidden=64,
                        dropout=0.5),
    "cnn_default_width": dict(name="cnn", shape=(3, 16, 16), classes=3, width=32, hidden=128,
                              dropout=0.3),  # 1/(1-p) not a power of two
    "mlp": dict(name="mlp", shape=(20,), classes=3, hidden=128, dropout=0.5),
    "mlp_p02": dict(name="mlp", shape=(7,), classes=2, hidden=32, dropout=0.2),
}


def _model(cfg: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = {k: cfg[k] for k in ("width", "hidden", "dropout") if k in cfg}
    model = build_model(cfg["name"], cfg["shape"], cfg["classes"], **kw).eval()
    _randomise_batchnorm(model, seed)
    return model


def _keys(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "dense":
        return np.arange(n, dtype=np.int64)
    if kind == "dense_offset":  # not aligned to mask blocks
        return np.arange(n, dtype=np.int64) + 1_000_003
    if kind == "sparse_shuffled":  # a filtered, shuffled pool
        return rng.choice(10 * n, size=n, replace=False).astype(np.int64)
    raise ValueError(kind)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("keys", ["dense", "dense_offset", "sparse_shuffled"])
def test_kernel_bit_identical_to_reference(config: str, keys: str) -> None:
    cfg = CONFIGS[config]
    model = _model(cfg, seed=3)
    n = 150
    x = torch.rand(n, *cfg["shape"], generator=torch.Generator().manual_seed(5))
    row_keys = _keys(keys, n, seed=9)
    # the fast kernel really runs (it returns None for models it does not know)
    assert _fast_mc_probs(model, x[:9], mc_samples=2, batch_size=8, seed=0,
                          row_keys=row_keys[:9]) is not None
    for batch_size in (64, 512):
        # today's code is batch-size invariant for the CNNs but not for every MLP (sgemm picks
        # its kernel by M), so each batch size is compared with the reference at that size
        want = _reference_mc_probs(model, x, mc_samples=7, batch_size=batch_size,
                                   generator_seed=11, row_keys=row_keys)
        got = mc_probs(model, x, mc_samples=7, batch_size=batch_size, generator_seed=11,
                       row_keys=row_keys)
        np.testing.assert_array_equal(got, want, err_msg=f"batch_size={batch_size}")
        np.testing.assert_array_equal(bald(got), bald(want))
    assert want.std(axis=2).max() > 1e-3  # dropout really is on


def test_kernel_t20_quickstart_and_rows_in_any_order() -> None:
    """T = 20 (the scoring default); a row's probabilities do not depend on its batch-mates or
    position: permuting the rows permutes the output."""
    cfg = CONFIGS["cnn_quickstart"]
    model = _model(cfg, seed=1)
    x = torch.rand(300, *cfg["shape"], generator=torch.Generator().manual_seed(2))
    row_keys = np.arange(300, dtype=np.int64) * 2 + 40
    want = _reference_mc_probs(model, x, mc_samples=20, batch_size=512, generator_seed=100_003,
                               row_keys=row_keys)
    got = mc_probs(model, x, mc_samples=20, generator_seed=100_003, row_keys=row_keys)
    np.testing.assert_array_equal(got, want)
    # BALD's numpy reductions round by memory order: the layout must match too (with T = 20
    # a C-contiguous [N, C, T] copy of the same values gives different last bits)
    assert np.argsort(got.strides).tolist() == np.argsort(want.strides).tolist()
    np.testing.assert_array_equal(bald(got), bald(want))
    perm = np.random.default_rng(0).permutation(300)
    got_perm = mc_probs(model, x[perm], mc_samples=20, batch_size=77, generator_seed=100_003,
                        row_keys=row_keys[perm])
    np.testing.assert_array_equal(got_perm, want[perm])
    np.testing.assert_array_equal(bald(got_perm), bald(want)[perm])


def test_kernel_leaves_model_untouched() -> None:
    """Folding (pool before BN, sign flips, scales) happens on copies: the module's parameters,
    buffers and train flag are unchanged."""
    cfg = CONFIGS["cnn_quickstart"]
    model = _model(cfg, seed=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mc_probs(model, torch.rand(16, *cfg["shape"]), mc_samples=3, generator_seed=0,
             row_keys=np.arange(16))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
