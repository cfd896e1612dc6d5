"""FairAL's per-candidate refits on a 2-actor Ray Data pool give the in-process fast path's
numbers bit for bit (same chunks, same tensor program), for the gradient-step and the exact
(faithful protocol) refits."""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition.fairal import RefitConfig, fairal_fast, fit_exact, fit_logistic_head
from rayfal.scoring.fairal_refits import fairal_fast_ray

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _problem(seed: int, n_cand: int):
    rng = np.random.default_rng(seed)
    d = 6
    xl = rng.normal(size=(40, d))
    yl = (xl[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(int)
    xc = rng.normal(size=(n_cand, d)) * 1.5
    xf = rng.normal(size=(90, d))
    gf = rng.integers(0, 3, 90)
    yf = rng.integers(0, 2, 90)
    return xl, yl, xc, xf, gf, yf


@pytest.mark.parametrize("kind", ["gd", "exact"])
def test_ray_refits_equal_in_process(ray_session, kind: str) -> None:
    xl, yl, xc, xf, gf, yf = _problem(3, n_cand=57)
    if kind == "gd":
        head = fit_logistic_head(xl, yl, 2, binary=False, steps=60, lr=0.5)
        cfg, measure = RefitConfig(steps=8, lr=1.0, l2=1e-3), "eo"
    else:
        cfg, measure = RefitConfig(method="exact"), "mi"
        head = fit_exact(xl, yl, cfg)
    kw = dict(y_fair=yf, measure=measure, refit=cfg, alpha=0.4, chunk_size=8)  # 8 chunks
    want = fairal_fast(head, xl, yl, xc, xf, gf, **kw)
    got = fairal_fast_ray(head, xl, yl, xc, xf, gf, actors=2, cpus_per_actor=0.5, **kw)
    assert len(np.unique(want.expected_unfairness)) > 5  # the refits really differ
    np.testing.assert_array_equal(got.unfairness_per_label, want.unfairness_per_label)
    np.testing.assert_array_equal(got.expected_unfairness, want.expected_unfairness)
    np.testing.assert_array_equal(got.score, want.score)
    np.testing.assert_array_equal(got.probs, want.probs)


def test_ray_refits_default_chunks_and_empty(ray_session) -> None:
    xl, yl, xc, xf, gf, _ = _problem(5, n_cand=23)
    head = fit_logistic_head(xl, yl, 2, binary=True, steps=40, lr=0.5)
    cfg = RefitConfig(steps=5, lr=1.0, l2=1e-3)
    want = fairal_fast(head, xl, yl, xc, xf, gf, refit=cfg, max_elements=20_000)
    got = fairal_fast_ray(head, xl, yl, xc, xf, gf, refit=cfg, max_elements=20_000)
    np.testing.assert_array_equal(got.score, want.score)
    empty = fairal_fast_ray(head, xl, yl, xc[:0], xf, gf, refit=cfg)
    assert empty.score.shape == (0,)
