"""Tests of the MC-dropout models, batched MC prediction and safetensors checkpoints (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rayfal.models import MLP, MCDropout, SmallCNN, build_model
from rayfal.models.checkpoint import (
    META,
    WEIGHTS,
    load_checkpoint,
    model_spec,
    save_checkpoint,
    state_dict_cpu,
)
from rayfal.models.predict import mc_probs

CNN_SHAPE = (3, 16, 8)  # non-square on purpose
MLP_SHAPE = (6,)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _warm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A few train-mode passes so batch-norm running stats differ from the batch stats."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 3.0 + 1.0)
    return model.eval()


def _cnn(seed: int = 0, **kw) -> tuple[SmallCNN, torch.Tensor]:
    torch.manual_seed(seed)
    model = SmallCNN(CNN_SHAPE, 4, width=4, hidden=16, **kw)
    x = torch.rand(10, *CNN_SHAPE)
    return _warm(model, x), x


def _mlp(seed: int = 0, **kw) -> tuple[MLP, torch.Tensor]:
    torch.manual_seed(seed)
    model = MLP(MLP_SHAPE, 3, hidden=16, **kw)
    x = torch.randn(12, *MLP_SHAPE)
    return _warm(model, x), x


MAKERS = {"cnn": _cnn, "mlp": _mlp}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- MC dropout


@pytest.mark.parametrize("kind", MAKERS)
def test_dropout_stays_on_in_eval_while_batchnorm_uses_running_stats(kind: str) -> None:
    model, x = MAKERS[kind]()
    assert not model.training
    before = [(bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
              for bn in _bn_layers(model)]
    assert before and all(m.abs().sum() > 0 for m, _, _ in before)  # warmed up
    with torch.no_grad():
        a, b = model(x), model(x)
        assert not torch.allclose(a, b)  # MC dropout is on in eval()
        z1, z2 = model.trunk(x), model.trunk(x)
        torch.testing.assert_close(z1, z2, rtol=0, atol=0)
        # running stats, not batch stats: a row's embedding does not depend on its batch
        torch.testing.assert_close(model.trunk(x[:1]), z1[:1])
        torch.testing.assert_close(model.trunk(x[3:5]), z1[3:5])
        assert z1.shape == (len(x), model.embedding_dim)
        torch.testing.assert_close(model.embed(x), z1)
    mc_probs(model, x, mc_samples=8, generator_seed=0)
    for bn, (m, v, n) in zip(_bn_layers(model), before, strict=True):
        torch.testing.assert_close(bn.running_mean, m, rtol=0, atol=0)
        torch.testing.assert_close(bn.running_var, v, rtol=0, atol=0)
        assert int(bn.num_batches_tracked) == n


@pytest.mark.parametrize("kind", MAKERS)
def test_mc_probs_from_train_mode_does_not_touch_batchnorm(kind: str) -> None:
    model, x = MAKERS[kind]()
    model.train()
    means = [bn.running_mean.clone() for bn in _bn_layers(model)]
    p_train_flag = mc_probs(model, x, mc_samples=4, generator_seed=1)
    assert model.training  # the train/eval flag is restored
    for bn, m in zip(_bn_layers(model), means, strict=True):
        torch.testing.assert_close(bn.running_mean, m, rtol=0, atol=0)
    model.eval()
    np.testing.assert_array_equal(p_train_flag, mc_probs(model, x, mc_samples=4, generator_seed=1))


def test_mc_dropout_p0_is_identity_and_p_half_is_inverted_dropout() -> None:
    x = torch.randn(7, 5)
    for mode in (True, False):
        d = MCDropout(0.0).train(mode)
        torch.testing.assert_close(d(x), x, rtol=0, atol=0)
    d = MCDropout(0.5).eval()
    torch.manual_seed(0)
    out = d(torch.ones(20_000))
    vals = set(torch.unique(out).tolist())
    assert vals == {0.0, 2.0}
    assert abs(float((out == 0).float().mean()) - 0.5) < 0.02
    ones = torch.ones(4)
    d(ones)
    assert torch.equal(ones, torch.ones(4))  # not in place


def test_models_with_dropout_zero_are_deterministic_in_eval() -> None:
    for kind, maker in MAKERS.items():
        model, x = maker(dropout=0.0)
        with torch.no_grad():
            torch.testing.assert_close(model(x), model(x), rtol=0, atol=0, msg=kind)


# ---------------------------------------------------------------------------- mc_probs


@pytest.mark.parametrize("kind", MAKERS)
def test_mc_probs_shape_normalisation_and_reproducibility(kind: str) -> None:
    model, x = MAKERS[kind]()
    p = mc_probs(model, x, mc_samples=6, batch_size=4, generator_seed=3)
    assert p.shape == (len(x), model.num_classes, 6) and p.dtype == np.float64
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(p, mc_probs(model, x, mc_samples=6, batch_size=4,
                                              generator_seed=3))
    assert not np.allclose(p, mc_probs(model, x, mc_samples=6, batch_size=4, generator_seed=4))
    # the T samples of a row differ from each other (independent masks per sample)
    assert np.all(np.ptp(p, axis=2).max(axis=1) > 1e-4)
    empty = mc_probs(model, x[:0], mc_samples=5)
    assert empty.shape == (0, model.num_classes, 5)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("batch_size", [3, 100])
def test_mc_probs_matches_the_full_model_on_repeated_inputs(kind: str, batch_size: int) -> None:
    """Reference with identical masks: per batch, run the *full* model once on the batch
    repeated T times (sample-major), so the dropout layers draw masks of the same shapes in
    the same order as mc_probs' head-only pass; reshape to [n, C, T] by hand."""
    model, x = MAKERS[kind]()
    t = 5
    got = mc_probs(model, x, mc_samples=t, batch_size=batch_size, generator_seed=11)
    torch.manual_seed(11)
    ref = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            logits = model(torch.cat([xb] * t))  # rows: sample 0 of every row, then sample 1...
            probs = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
            n = len(xb)
            ref.append(np.stack([probs[k * n:(k + 1) * n] for k in range(t)], axis=2))
    np.testing.assert_allclose(got, np.concatenate(ref), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("t", [1, 2, 7])
def test_mc_probs_without_dropout_is_the_softmax_of_the_model(kind: str, t: int) -> None:
    model, x = MAKERS[kind](dropout=0.0)
    with torch.no_grad():
        want = torch.softmax(model(x), dim=-1).numpy().astype(np.float64)
    for bs in (1, 4, 64):
        got = mc_probs(model, x, mc_samples=t, batch_size=bs)
        assert got.shape == (len(x), model.num_classes, t)
        for k in range(t):
            np.testing.assert_allclose(got[:, :, k], want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", MAKERS)
def test_checkpoint_round_trip(tmp_path: Path, kind: str) -> None:
    model, x = MAKERS[kind]()
    if kind == "cnn":
        spec = model_spec("cnn", CNN_SHAPE, 4, width=4, hidden=16, dropout=0.5)
    else:
        spec = model_spec("mlp", MLP_SHAPE, 3, hidden=16, dropout=0.5)
    out = save_checkpoint(tmp_path / "ck", state_dict_cpu(model), spec, extra={"round": 3})
    assert out == tmp_path / "ck"
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS, META])  # no temp left
    assert json.loads((out / META).read_text())["spec"]["name"] == kind
    assert (out / WEIGHTS).read_bytes()[:1] != b"\x80"  # not a pickle

    loaded, meta = load_checkpoint(out)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert meta["round"] == 3 and meta["spec"] == json.loads(json.dumps(spec))
    sd, ld = model.state_dict(), loaded.state_dict()
    assert sd.keys() == ld.keys()
    for k in sd:  # includes batch-norm running stats and num_batches_tracked
        assert torch.equal(sd[k], ld[k]), k
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)
    np.testing.assert_array_equal(mc_probs(loaded, x, mc_samples=4, generator_seed=5),
                                  mc_probs(model, x, mc_samples=4, generator_seed=5))


def test_state_dict_cpu_unwraps_ddp_prefix_and_copies() -> None:
    model, _ = _mlp()

    class Wrapper(nn.Module):  # what DDP looks like: the model under .module
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.module = m

    sd = state_dict_cpu(Wrapper(model))
    assert set(sd) == set(model.state_dict())
    key = "trunk.0.weight"
    sd[key].zero_()
    assert model.state_dict()[key].abs().sum() > 0  # a copy, not a view


@pytest.mark.parametrize("missing", [WEIGHTS, META])
def test_load_checkpoint_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    model, _ = _mlp()
    save_checkpoint(tmp_path, state_dict_cpu(model), model_spec("mlp", MLP_SHAPE, 3, hidden=16))
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_overwrite_replaces_weights(tmp_path: Path) -> None:
    spec = model_spec("mlp", MLP_SHAPE, 3, hidden=16)
    a, x = _mlp(seed=0)
    b, _ = _mlp(seed=1)
    save_checkpoint(tmp_path, state_dict_cpu(a), spec)
    save_checkpoint(tmp_path, state_dict_cpu(b), spec)
    loaded, _ = load_checkpoint(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), b.embed(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------- build_model


def test_build_model_auto_and_kwargs() -> None:
    cnn = build_model("auto", (3, 8, 8), 5, width=2, hidden=8)
    assert isinstance(cnn, SmallCNN) and cnn.num_classes == 5
    assert cnn.embedding_dim == 2 * 2 * 1 * 1
    mlp = build_model("auto", [7], 2, hidden=9)
    assert isinstance(mlp, MLP) and mlp.embedding_dim == 9
    assert mlp(torch.randn(3, 7)).shape == (3, 2)
    assert isinstance(build_model("mlp", (4,), 2), MLP)
    with pytest.raises(KeyError, match="known: cnn, linear, mlp"):
        build_model("resnet", (3, 8, 8), 2)
    with pytest.raises(ValueError, match="divisible by 8"):
        build_model("cnn", (3, 12, 8), 2)
    with pytest.raises(TypeError):
        build_model("mlp", (4,), 2, width=3)  # width is a CNN-only setting


def test_cached_trunk_equals_uncached_under_the_same_masks():
    """Issue 3: running the deterministic trunk once and only the head T times gives the same
    MC probabilities as running the whole model on the batch replicated T times (baal's
    replicate_in_memory), when both use the same (row-keyed) dropout masks."""
    import numpy as np
    import torch

    from rayfal.models import build_model
    from rayfal.models.predict import mc_probs

    torch.manual_seed(0)
    model = build_model("cnn", (3, 16, 16), 3, width=8, hidden=16, dropout=0.5).eval()
    x = torch.rand(37, 3, 16, 16)
    keys = np.arange(1000, 1037) * 3
    cached = mc_probs(model, x, mc_samples=6, batch_size=10, generator_seed=5, row_keys=keys)
    naive = mc_probs(model, x, mc_samples=6, batch_size=16, generator_seed=5, row_keys=keys,
                     cache_trunk=False)
    assert cached.shape == (37, 3, 6)
    assert np.allclose(cached, naive, atol=1e-5)
    assert cached.std(axis=2).max() > 1e-3  # the samples really differ (dropout is on)
    other = mc_probs(model, x, mc_samples=6, generator_seed=6, row_keys=keys)
    assert not np.allclose(cached, other)
