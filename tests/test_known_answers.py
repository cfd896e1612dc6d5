"""Known answers, computed by hand in the test, for what users read: the evaluation metrics of a
round (``evaluate_probs``: NLL of the true class, per-group mean BALD, the epistemic gap) and the
row-keyed MC-dropout masks that every BALD score and evaluation depends on.

Each case is built so that the plausible wrong answer (NLL of the predicted class, per-group
entropy instead of BALD, a gap with the wrong sign, one mask shared by every row, a mask that
depends on the row's position in its batch) differs from the right one by far more than the
tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayfal.evaluation import evaluate_probs
from rayfal.models import build_model
from rayfal.models.predict import mc_probs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _h(*p: float) -> float:
    """Shannon entropy (nats) of a hand-written distribution."""
    return -sum(v * math.log(v) for v in p if v > 0)


# ---------------------------------------------------------------------------- evaluate_probs

# [N=5, C=2, T=2]: MC samples per row, written out
PROBS = np.array([
    [[1.0, 0.0], [0.0, 1.0]],   # a, group 0, y=0: samples disagree -> BALD = ln 2
    [[0.9, 0.9], [0.1, 0.1]],   # b, group 0, y=1: confident and wrong, samples agree -> BALD 0
    [[0.5, 0.5], [0.5, 0.5]],   # c, group 1, y=1: uncertain (entropy ln 2) but BALD 0
    [[0.6, 0.6], [0.4, 0.4]],   # d, group 1, y=0
    [[0.2, 0.6], [0.8, 0.4]],   # e, group 1, y=1: mean (0.4, 0.6), samples disagree a little
])
Y = np.array([0, 1, 1, 0, 1])
GROUP = np.array([0, 0, 1, 1, 1])


def test_evaluate_probs_known_answer() -> None:
    out = evaluate_probs(PROBS, Y, GROUP)
    # NLL of the *true* class under the MC mean: 0.5, 0.1, 0.5, 0.6, 0.6
    nll = -(math.log(0.5) + math.log(0.1) + math.log(0.5) + math.log(0.6) + math.log(0.6)) / 5
    assert out["nll"] == pytest.approx(nll, abs=1e-12)
    # (the predicted class' NLL would be: 0.5, 0.9, 0.5, 0.6, 0.6 -> far from it)
    nll_pred = -(math.log(0.5) * 2 + math.log(0.9) + math.log(0.6) * 2) / 5
    assert abs(out["nll"] - nll_pred) > 0.4
    # per-group mean BALD = H(mean) - mean H(samples)
    bald_e = _h(0.4, 0.6) - (_h(0.2, 0.8) + _h(0.6, 0.4)) / 2
    bald_0 = (math.log(2) + 0.0) / 2
    bald_1 = (0.0 + 0.0 + bald_e) / 3
    assert out["bald_group_0"] == pytest.approx(bald_0, abs=1e-12)
    assert out["bald_group_1"] == pytest.approx(bald_1, abs=1e-12)
    # ... which is not the per-group mean entropy (that ranks the groups the other way round)
    ent_0 = (math.log(2) + _h(0.9, 0.1)) / 2
    ent_1 = (math.log(2) + _h(0.6, 0.4) + _h(0.4, 0.6)) / 3
    assert ent_1 > ent_0 and bald_0 > bald_1 + 0.2
    # the epistemic gap: max - min over groups of the mean BALD, >= 0
    assert out["epistemic_gap"] == pytest.approx(bald_0 - bald_1, abs=1e-12)
    assert out["epistemic_gap"] > 0.2
    # predictions are the MC mean's argmax (ties to class 0): 0, 0, 0, 0, 1
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["acc_group_0"] == pytest.approx(1 / 2) and out["acc_group_1"] == pytest.approx(2 / 3)
    assert out["worst_group_accuracy"] == pytest.approx(1 / 2)


def test_evaluate_probs_gap_is_symmetric_in_the_group_labels() -> None:
    """Swapping which group is the uncertain one gives the same (positive) gap, and the
    per-group values move with their group."""
    swapped = evaluate_probs(PROBS, Y, 1 - GROUP)
    out = evaluate_probs(PROBS, Y, GROUP)
    assert swapped["epistemic_gap"] == pytest.approx(out["epistemic_gap"], abs=1e-12)
    assert swapped["bald_group_1"] == pytest.approx(out["bald_group_0"], abs=1e-12)


# ---------------------------------------------------------------------------- row-keyed masks

# keys 0-7 share one mask block (different slots), 1000 + 8k share a slot (different blocks)
KEYS = np.r_[np.arange(8), 1000 + 8 * np.arange(5), 77].astype(np.int64)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (6,), 3, hidden=32, dropout=0.5).eval()


def test_identical_rows_with_different_keys_get_different_masks() -> None:
    """Every row is the same input: only the dropout masks can tell them apart, so the MC
    samples of two rows are equal only if their masks are (one mask for all rows would make
    every row identical)."""
    model = _mlp()
    x = torch.rand(1, 6).repeat(len(KEYS), 1)
    probs = mc_probs(model, x, mc_samples=4, generator_seed=3, row_keys=KEYS)
    assert probs.shape == (len(KEYS), 3, 4)
    assert probs.std(axis=2).min() > 1e-4  # each row's T samples differ (dropout is on)
    flat = probs.reshape(len(KEYS), -1)
    dist = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2)
    off_diagonal = dist[~np.eye(len(KEYS), dtype=bool)]
    assert off_diagonal.min() > 1e-4, "two rows with different keys share their dropout masks"
    # the same key at two positions of one batch: the same masks, the same samples
    twice = mc_probs(model, x[:2], mc_samples=4, generator_seed=3, row_keys=np.array([5, 5]))
    np.testing.assert_allclose(twice[0], twice[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(twice[0], probs[5], rtol=0, atol=1e-6)


def test_a_rows_samples_do_not_depend_on_its_batch_or_shard() -> None:
    """A row's MC samples are a function of (seed, key, input) only: the same in any order,
    batch size, or subset of the pool (a shard), and different under another seed."""
    model = _mlp()
    x = torch.rand(len(KEYS), 6, generator=torch.Generator().manual_seed(1))
    ref = mc_probs(model, x, mc_samples=5, batch_size=64, generator_seed=11, row_keys=KEYS)
    perm = np.random.default_rng(0).permutation(len(KEYS))
    shuffled = mc_probs(model, x[perm], mc_samples=5, batch_size=3, generator_seed=11,
                        row_keys=KEYS[perm])
    np.testing.assert_allclose(shuffled, ref[perm], rtol=0, atol=1e-6)
    for shard in (np.array([2, 9]), np.array([13, 0, 7]), np.arange(1, len(KEYS), 2)):
        part = mc_probs(model, x[shard], mc_samples=5, batch_size=2, generator_seed=11,
                        row_keys=KEYS[shard])
        np.testing.assert_allclose(part, ref[shard], rtol=0, atol=1e-6)
    other_seed = mc_probs(model, x, mc_samples=5, generator_seed=12, row_keys=KEYS)
    assert np.abs(other_seed - ref).reshape(len(KEYS), -1).max(axis=1).min() > 1e-4
