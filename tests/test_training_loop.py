"""Tests of the plain torch training loop (rayfal.training.loop) in the standard mode (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rayfal.models import MLP
from rayfal.training import MODES, make_loss
from rayfal.training.loop import LoopSettings, index_stream, num_steps, train_model

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
