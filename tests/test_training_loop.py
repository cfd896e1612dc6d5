"""Tests of the plain torch training loop (rayfal.training.loop) in the standard mode (no Ray),
and of its optimiser options (optimizer, momentum, schedule, warm-up, gradient clipping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rayfal.config import TrainingConfig
from rayfal.models import MLP
from rayfal.training import MODES, make_loss
from rayfal.training.loop import (
    LoopSettings,
    index_stream,
    lr_factor,
    make_optimizer,
    num_steps,
    train_model,
    training_progress,
    warmup_steps,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**kw) -> LoopSettings:
    base = dict(epochs=1, min_steps=40, batch_size=16, lr=1e-2, weight_decay=0.0, seed=0)
    return LoopSettings(**(base | kw))


def _blobs(seed: int = 0, n: int = 64, d: int = 5) -> dict[str, torch.Tensor]:
    """Two well-separated Gaussian blobs (labels 0/1) in d dimensions, two groups."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0.0, 0.5, size=(n, d)) + np.where(y[:, None] == 1, 1.5, -1.5)
    return {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y, dtype=torch.long),
            "group": torch.tensor(np.arange(n) // 2 % 2, dtype=torch.long)}


def _model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((5,), 2, hidden=16, dropout=0.1)


def _ce(model: MLP, data: dict[str, torch.Tensor]) -> float:
    model.eval()
    torch.manual_seed(123)  # same dropout masks for every evaluation
    with torch.no_grad():
        return float(F.cross_entropy(model(data["x"]), data["y"]))


def test_standard_mode_is_registered_and_is_cross_entropy() -> None:
    assert "standard" in MODES
    loss_fn = make_loss("standard")
    model = MLP((5,), 2, hidden=8, dropout=0.0).eval()
    data = _blobs()
    loss, logs = loss_fn(model, data)
    with torch.no_grad():
        want = F.cross_entropy(model(data["x"]), data["y"])
    torch.testing.assert_close(loss.detach(), want)
    assert logs == {"ce": pytest.approx(float(want))}
    assert loss.requires_grad


def test_train_model_lowers_the_loss_on_separable_data() -> None:
    data = _blobs()
    model = _model()
    before = _ce(model, data)
    logs = train_model(model, data, make_loss("standard"), _settings())
    after = _ce(model, data)
    assert not model.training  # left in eval mode
    assert logs["train_steps"] == 40.0
    assert after < 0.25 * before, (before, after)
    assert after < 0.15
    assert logs["train_ce"] < 0.3  # the mean CE over the last epoch-worth of steps
    torch.manual_seed(0)
    with torch.no_grad():
        acc = (model(data["x"]).argmax(1) == data["y"]).float().mean()
    assert acc == 1.0


def test_train_model_is_deterministic_given_the_seed() -> None:
    data = _blobs(1)
    runs = []
    for model_seed, loop_seed in [(0, 5), (0, 5), (0, 6)]:
        model = _model(model_seed)
        torch.manual_seed(999)  # the loop seeds itself: outside RNG state must not matter
        torch.rand(int(loop_seed) + 3)
        logs = train_model(model, data, make_loss("standard"), _settings(seed=loop_seed,
                                                                         min_steps=12))
        runs.append((logs, {k: v.clone() for k, v in model.state_dict().items()}))
    (logs_a, sd_a), (logs_b, sd_b), (logs_c, sd_c) = runs
    assert logs_a == logs_b
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    assert any(not torch.equal(sd_a[k], sd_c[k]) for k in sd_a if sd_a[k].is_floating_point())


def test_train_model_rejects_an_empty_set() -> None:
    data = {k: v[:0] for k, v in _blobs().items()}
    with pytest.raises(ValueError, match="empty"):
        train_model(_model(), data, make_loss("standard"), _settings())


@pytest.mark.parametrize(
    ("n", "kw", "world", "expected"),
    [
        (100, dict(epochs=3, batch_size=32, min_steps=1), 1, 12),  # ceil(100/32)=4 per epoch
        (100, dict(epochs=3, batch_size=32, min_steps=20), 1, 20),  # min_steps wins
        (100, dict(epochs=3, batch_size=32, min_steps=1), 2, 6),  # ceil(100/64)=2 per epoch
        (64, dict(epochs=2, batch_size=16, min_steps=0), 4, 2),
        (1, dict(epochs=5, batch_size=32, min_steps=0), 1, 5),
    ],
)
def test_num_steps(n: int, kw: dict, world: int, expected: int) -> None:
    assert num_steps(n, _settings(**kw), world) == expected


def test_index_stream_shape_and_epoch_coverage() -> None:
    n, steps = 64, 12
    s = _settings(batch_size=8, seed=3)
    st = index_stream(n, steps, s, world_size=2)
    assert st.shape == (steps, 2, 8)
    assert st.min() >= 0 and st.max() < n
    # 64 rows, global batch 16: every 4 steps are one permutation of all rows
    for e in range(steps // 4):
        chunk = st[4 * e:4 * (e + 1)].reshape(-1)
        assert sorted(chunk.tolist()) == list(range(n)), e
    # the ranks of one step get disjoint slices
    for step in range(steps):
        assert not set(st[step, 0].tolist()) & set(st[step, 1].tolist())
    np.testing.assert_array_equal(st, index_stream(n, steps, s, world_size=2))
    assert not np.array_equal(st, index_stream(n, steps, _settings(batch_size=8, seed=4), 2))
    assert not np.array_equal(st[:4].reshape(-1), np.arange(n))  # shuffled
    assert not np.array_equal(st[0:4], st[4:8])  # a fresh permutation per epoch


@pytest.mark.parametrize("world", [2, 4])
def test_index_stream_global_batch_is_independent_of_world_size(world: int) -> None:
    n, steps, global_batch = 50, 9, 24  # batches span permutation boundaries too
    single = index_stream(n, steps, _settings(batch_size=global_batch, seed=7), 1)
    multi = index_stream(n, steps, _settings(batch_size=global_batch // world, seed=7), world)
    assert multi.shape == (steps, world, global_batch // world)
    np.testing.assert_array_equal(multi.reshape(steps, -1), single[:, 0])


def test_index_stream_more_steps_than_one_permutation_small_n() -> None:
    st = index_stream(3, 5, _settings(batch_size=4, seed=0), 1)
    assert st.shape == (5, 1, 4)
    flat = st.reshape(-1)
    for k in range(0, 18, 3):  # back-to-back permutations of range(3)
        assert sorted(flat[k:k + 3].tolist()) == [0, 1, 2]


def test_ranks_train_on_their_own_slices() -> None:
    """With world_size=2, rank r uses stream[:, r]: a loss that records the rows it sees."""
    data = {"x": torch.arange(16, dtype=torch.float32)[:, None], "y": torch.arange(16)}
    s = _settings(batch_size=4, min_steps=3, epochs=1)
    seen: dict[int, list[list[int]]] = {0: [], 1: []}

    for rank in (0, 1):
        model = torch.nn.Linear(1, 1)

        def loss_fn(m, batch, rank=rank):
            seen[rank].append(batch["y"].tolist())
            return m(batch["x"]).sum(), {"z": 0.0}

        logs = train_model(model, data, loss_fn, s, rank=rank, world_size=2)
        assert logs["train_steps"] == 3.0
    stream = index_stream(16, 3, s, 2)
    for rank in (0, 1):
        assert seen[rank] == stream[:, rank].tolist()


# ---------------------------------------------------------------------------- optimiser options


def _old_train_model(model, tensors, loss_fn, s: LoopSettings) -> dict[str, float]:
    """The loop as it was before the optimiser options (Adam, constant lr, no clipping), copied
    verbatim (single rank): the defaults must train bit-identically to it."""
    import math

    n = len(tensors["y"])
    torch.manual_seed(s.seed)
    steps = num_steps(n, s, 1)
    stream = index_stream(n, steps, s, 1)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    model.train()
    tail = max(1, min(steps, math.ceil(n / s.batch_size)))
    sums: dict[str, float] = {}
    for step in range(steps):
        idx = torch.from_numpy(stream[step, 0])
        batch = {k: v[idx] for k, v in tensors.items()}
        loss, logs = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - tail:
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
    model.eval()
    return {f"train_{k}": v / tail for k, v in sums.items()} | {"train_steps": float(steps)}


@pytest.mark.parametrize(("mode", "params"), [("standard", {}), ("grad", {"lam": 0.5}),
                                              ("gba", {"lam": 0.5})])
def test_default_options_train_bit_identically_to_the_old_loop(mode: str, params: dict) -> None:
    from rayfal.models import build_model

    data = _blobs(2, n=40, d=4)
    # the defaults of TrainingConfig reach the loop as LoopSettings' defaults
    cfg = TrainingConfig()
    assert (cfg.optimizer, cfg.schedule, cfg.warmup_frac, cfg.grad_clip, cfg.warm_start) == \
        ("adam", "constant", 0.0, None, False)
    base = _settings(min_steps=9, weight_decay=1e-3, seed=4)
    assert (base.optimizer, base.schedule, base.warmup_frac, base.grad_clip) == \
        (cfg.optimizer, cfg.schedule, cfg.warmup_frac, cfg.grad_clip)
    runs = []
    for train in (train_model, _old_train_model):
        torch.manual_seed(3)
        extra = {} if mode == "standard" else {"num_groups": 2, "group_hidden": 8}
        model = build_model("mlp", (4,), 2, hidden=12, dropout=0.2, **extra)
        logs = train(model, data, make_loss(mode, **params), base)
        runs.append((logs, {k: v.clone() for k, v in model.state_dict().items()}))
    (logs_new, sd_new), (logs_old, sd_old) = runs
    assert logs_new == logs_old
    for k in sd_old:
        assert torch.equal(sd_new[k], sd_old[k]), k


def test_cosine_schedule_values_at_start_middle_and_end() -> None:
    steps = 100
    assert lr_factor(0, steps, "cosine") == 1.0
    assert lr_factor(50, steps, "cosine") == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(25, steps, "cosine") == pytest.approx((1 + np.cos(np.pi / 4)) / 2)
    assert lr_factor(steps, steps, "cosine") == pytest.approx(0.0, abs=1e-12)
    last = lr_factor(steps - 1, steps, "cosine")  # the last step: small but positive
    assert last == pytest.approx((1 + np.cos(np.pi * 99 / 100)) / 2) and 0 < last < 1e-3
    values = [lr_factor(t, steps, "cosine") for t in range(steps)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # decreasing
    assert all(lr_factor(t, steps, "constant") == 1.0 for t in range(steps))
    # a linear warm-up of 10 steps, then the cosine over the remaining 90
    assert warmup_steps(steps, 0.1) == 10 and warmup_steps(steps, 0.0) == 0
    assert warmup_steps(1, 0.5) == 0 and warmup_steps(4, 0.99) == 3
    assert [lr_factor(t, steps, "cosine", 10) for t in (0, 4, 9)] == \
        pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, steps, "cosine", 10) == 1.0
    assert lr_factor(55, steps, "cosine", 10) == pytest.approx(0.5)
    assert lr_factor(50, steps, "constant", 10) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, steps, "linear")  # type: ignore[arg-type]


def _recording_linear(d: int = 3):
    """A linear model and a loss whose gradient is constant (``c``): with SGD without momentum
    every step moves the weights by exactly ``-lr_t * c``; the loss records the weights it
    sees at every step."""
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    c = torch.arange(1.0, d + 1.0)
    seen: list[torch.Tensor] = []

    def loss_fn(m, batch):
        seen.append(m.weight.detach()[0].clone())
        return (m.weight[0] * c).sum() + 0.0 * batch["x"].sum(), {}

    data = {"x": torch.zeros(8, d), "y": torch.zeros(8, dtype=torch.long)}
    return model, c, seen, loss_fn, data


def test_sgd_with_a_cosine_schedule_takes_the_scheduled_steps() -> None:
    model, c, seen, loss_fn, data = _recording_linear()
    s = _settings(optimizer="sgd", momentum=0.0, lr=0.1, schedule="cosine", min_steps=8,
                  batch_size=8)
    train_model(model, data, loss_fn, s)
    seen.append(model.weight.detach()[0].clone())
    steps = [a - b for a, b in zip(seen[1:], seen[:-1], strict=True)]
    assert len(steps) == 8
    for t, delta in enumerate(steps):
        lr_t = 0.1 * (1 + np.cos(np.pi * t / 8)) / 2
        torch.testing.assert_close(delta, -lr_t * c)


def test_sgd_momentum_and_weight_decay_reach_the_optimiser() -> None:
    model = torch.nn.Linear(2, 1)
    opt = make_optimizer(model.parameters(), _settings(optimizer="sgd", momentum=0.9, lr=0.01,
                                                       weight_decay=5e-4))
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 5e-4)
    adam = make_optimizer(model.parameters(), _settings())
    assert isinstance(adam, torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(model.parameters(), _settings(optimizer="rmsprop"))
    # the BALD-fairness reference setting trains: SGD 0.01, momentum 0.9, clip 5
    data = _blobs(3)
    net = _model()
    before = _ce(net, data)
    logs = train_model(net, data, make_loss("standard"),
                       _settings(optimizer="sgd", lr=0.01, momentum=0.9, grad_clip=5.0,
                                 min_steps=60))
    assert _ce(net, data) < 0.5 * before
    assert logs["train_grad_norm"] > 0


def test_gradient_norm_clipping_bounds_the_step() -> None:
    # constant gradient c = (1, 2, 3) * 100, norm 100 * sqrt(14): clipped to 5, SGD lr 1
    # moves the weights by exactly 5 * c / |c| per step
    model, c, seen, _, data = _recording_linear()
    big = 100.0

    def loss_fn(m, batch):
        seen.append(m.weight.detach()[0].clone())
        return big * (m.weight[0] * c).sum() + 0.0 * batch["x"].sum(), {}

    logs = train_model(model, data, loss_fn, _settings(optimizer="sgd", momentum=0.0, lr=1.0,
                                                       grad_clip=5.0, min_steps=3,
                                                       batch_size=8))
    seen.append(model.weight.detach()[0].clone())
    for a, b in zip(seen[1:], seen[:-1], strict=True):
        delta = a - b
        assert float(delta.norm()) == pytest.approx(5.0, rel=1e-5)
        torch.testing.assert_close(delta, -5.0 * c / c.norm())
    assert logs["train_grad_norm"] == pytest.approx(big * float(c.norm()), rel=1e-5)
    # a gradient under the bound is left alone
    model, c, seen, loss_fn, data = _recording_linear()
    train_model(model, data, loss_fn, _settings(optimizer="sgd", momentum=0.0, lr=1.0,
                                                grad_clip=100.0, min_steps=1, epochs=1,
                                                batch_size=8))
    torch.testing.assert_close(model.weight.detach()[0], -c)
    with pytest.raises(ValueError, match="grad_clip"):
        train_model(_model(), _blobs(), make_loss("standard"), _settings(grad_clip=0.0))


def test_the_loop_reports_training_progress_to_the_loss() -> None:
    model, _, _, _, data = _recording_linear()
    progress: list[float] = []

    def loss_fn(m, batch):
        return m(batch["x"]).sum(), {}

    loss_fn.set_progress = progress.append  # type: ignore[attr-defined]
    train_model(model, data, loss_fn, _settings(min_steps=4, batch_size=8))
    assert progress == [0.0, 0.25, 0.5, 0.75]
    assert training_progress(3, 4) == 0.75 and training_progress(0, 0) == 0.0


@pytest.mark.parametrize(("key", "value"), [("optimizer", "rmsprop"), ("schedule", "step"),
                                            ("momentum", 1.0), ("momentum", -0.1),
                                            ("grad_clip", 0.0), ("warmup_frac", 1.0),
                                            ("warm_start", "yes")])
def test_training_config_rejects_bad_optimiser_settings(key: str, value) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainingConfig(**{key: value})


def test_training_config_accepts_the_reference_settings() -> None:
    cfg = TrainingConfig(optimizer="sgd", lr=0.01, momentum=0.9, grad_clip=5, schedule="cosine",
                         warmup_frac=0.1, warm_start=True)
    assert (cfg.optimizer, cfg.grad_clip, cfg.schedule, cfg.warm_start) == \
        ("sgd", 5.0, "cosine", True)
