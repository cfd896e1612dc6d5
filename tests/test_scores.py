"""Unit tests for rayfal.acquisition.scores."""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition.scores import bald, entropy, margin, mean_probs


def _random_probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.random(shape) + 1e-3
    return x / x.sum(axis=1, keepdims=True)


def test_bald_identical_samples_is_zero() -> None:
    p = _random_probs(np.random.default_rng(0), (5, 4))
    stacked = np.repeat(p[:, :, None], 7, axis=2)
    out = bald(stacked)
    assert np.all(out >= 0.0)  # negative rounding noise is clipped
    np.testing.assert_allclose(out, 0.0, atol=1e-12)


def test_bald_never_negative() -> None:
    probs = _random_probs(np.random.default_rng(4), (200, 6, 5))
    probs[:50] = probs[:50, :, :1]  # identical samples: BALD 0 up to rounding
    out = bald(probs)
    assert np.all(out >= 0.0)
    assert np.all(out[50:] > 0.0)


def test_bald_two_sample_disagreement_is_log2() -> None:
    probs = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # [N=1, C=2, T=2]: samples [1,0] and [0,1]
    np.testing.assert_allclose(bald(probs), [np.log(2)])


def test_bald_hand_computed_partial_disagreement() -> None:
    # samples [0.5, 0.5] and [1, 0]: mean [0.75, 0.25]
    probs = np.array([[[0.5, 1.0], [0.5, 0.0]]])
    h_mean = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    expected = h_mean - 0.5 * (np.log(2) + 0.0)
    np.testing.assert_allclose(bald(probs), [expected])


def test_bald_of_single_pass_is_zero() -> None:
    p = _random_probs(np.random.default_rng(1), (6, 3))
    np.testing.assert_array_equal(bald(p), np.zeros(6))


def test_entropy_uniform_is_log_c() -> None:
    for c in (2, 3, 10):
        np.testing.assert_allclose(entropy(np.full((4, c), 1.0 / c)), np.full(4, np.log(c)))


def test_entropy_one_hot_is_zero() -> None:
    out = entropy(np.eye(3))
    np.testing.assert_array_equal(out, np.zeros(3))
    assert not np.any(np.isnan(out))


def test_entropy_averages_over_samples_first() -> None:
    probs = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # mean is uniform
    np.testing.assert_allclose(entropy(probs), [np.log(2)])


def test_margin_ordering_and_value() -> None:
    p = np.array(
        [
            [0.9, 0.05, 0.05],  # gap 0.85: least informative
            [0.5, 0.3, 0.2],  # gap 0.2
            [0.4, 0.4, 0.2],  # gap 0.0: most informative
        ]
    )
    out = margin(p)
    np.testing.assert_allclose(out, [-0.85, -0.2, 0.0], atol=1e-12)
    assert list(np.argsort(-out)) == [2, 1, 0]


def test_margin_uses_mean_over_samples() -> None:
    probs = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # each sample confident, mean uniform
    np.testing.assert_allclose(margin(probs), [0.0])


def test_2d_and_singleton_3d_agree() -> None:
    p = _random_probs(np.random.default_rng(2), (8, 5))
    for fn in (entropy, margin, bald):
        np.testing.assert_allclose(fn(p), fn(p[:, :, None]))
    np.testing.assert_allclose(mean_probs(p[:, :, None]), p)


def test_mean_probs_averages_over_t() -> None:
    probs = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(mean_probs(probs), [[0.5, 0.5]])


@pytest.mark.parametrize("fn", [entropy, margin, bald, mean_probs])
@pytest.mark.parametrize("shape", [(7, 3), (7, 3, 4)])
def test_dtype_and_shape(fn, shape: tuple[int, ...]) -> None:
    p = _random_probs(np.random.default_rng(3), shape).astype(np.float32)
    out = fn(p)
    assert out.dtype == np.float64
    expected = shape[:2] if fn is mean_probs else (shape[0],)
    assert out.shape == expected


@pytest.mark.parametrize("fn", [entropy, margin, bald, mean_probs])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.full(3, 0.5), "shape"),
        (np.full((2, 2, 2, 2), 0.25), "shape"),
        (np.array([[0.5, np.nan]]), "finite"),
        (np.array([[0.5, np.inf]]), "finite"),
        (np.array([[1.5, -0.5]]), "non-negative"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_inputs_raise(fn, bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(bad)


def test_margin_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        margin(np.ones((3, 1)))
