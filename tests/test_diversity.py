"""Tests of rayfal.acquisition.diversity: coreset k-center greedy and BADGE."""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition.diversity import badge_embeddings, badge_select, kcenter_greedy


def _min_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)).min(1)


# ----------------------------------------------------------------------------- k-center


def test_kcenter_hand_made_line() -> None:
    # points on a line, 0 labelled: the farthest is 10, then 5 (distance 5), then 2 and 8 tie
    # at distance 2 (the lower index wins); afterwards 8 is still 2 away: radius 2
    x = np.array([[0.0], [1.0], [2.0], [5.0], [8.0], [10.0], [9.0]])
    labelled = np.zeros(7, bool)
    labelled[0] = True
    picks, info = kcenter_greedy(x, labelled, 3, return_info=True, chunk_size=2)
    assert picks.tolist() == [5, 3, 2]
    np.testing.assert_allclose(info["pick_distances"], [10.0, 5.0, 2.0])
    assert info["radius"] == pytest.approx(2.0)


@pytest.mark.parametrize("labelled_kind", ["mask", "embeddings", "none"])
def test_kcenter_each_pick_is_farthest_and_radius_is_brute_force(labelled_kind: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    lab_emb = rng.normal(size=(5, 3)) + 2.0
    if labelled_kind == "mask":
        labelled = np.zeros(120, bool)
        labelled[[3, 50, 77]] = True
        centers = x[labelled]
    elif labelled_kind == "embeddings":
        labelled, centers = lab_emb, lab_emb
    else:
        labelled, centers = None, np.zeros((0, 3))
    picks, info = kcenter_greedy(x, labelled, 10, chunk_size=7, seed=3, return_info=True)
    assert len(set(picks.tolist())) == 10
    if labelled_kind == "mask":
        assert not set(picks.tolist()) & {3, 50, 77}
    blocked = set(np.flatnonzero(labelled).tolist()) if labelled_kind == "mask" else set()
    for t, i in enumerate(picks):
        if t == 0 and labelled_kind == "none":
            cur = x[[i]]
            continue
        cur = centers if t == 0 else cur
        d = _min_dist(x, cur)
        for j in blocked | set(picks[:t].tolist()):
            d[j] = -1.0
        assert int(np.argmax(d)) == i, f"pick {t} is not the farthest point"
        assert info["pick_distances"][t] == pytest.approx(d[i])
        cur = np.vstack([cur, x[[i]]])
    final = np.vstack([centers, x[picks]])
    rest = np.setdiff1d(np.arange(120), np.r_[picks, list(blocked)].astype(int))
    assert info["radius"] == pytest.approx(_min_dist(x[rest], final).max())


def test_kcenter_no_labelled_first_pick_is_seeded_and_budget_capped() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    a = kcenter_greedy(x, None, 4, seed=7)
    assert a.tolist() == kcenter_greedy(x, None, 4, seed=7).tolist()
    firsts = {int(kcenter_greedy(x, None, 1, seed=s)[0]) for s in range(10)}
    assert len(firsts) > 1
    mask = np.ones(30, bool)
    mask[[4, 9]] = False
    assert sorted(kcenter_greedy(x, mask, 10).tolist()) == [4, 9]
    with pytest.raises(ValueError, match="NaN"):
        kcenter_greedy(np.array([[0.0], [np.nan]]), None, 1)


def test_kcenter_memmap_input(tmp_path) -> None:
    x = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert kcenter_greedy(ro, None, 5, chunk_size=16).tolist() == kcenter_greedy(x, None, 5).tolist()


# ----------------------------------------------------------------------------- BADGE


def test_badge_embedding_is_the_outer_product() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=6)
    h = rng.normal(size=(6, 4))
    g = badge_embeddings(p, h)
    assert g.shape == (6, 12)
    for i in range(6):
        onehot = np.eye(3)[np.argmax(p[i])]
        np.testing.assert_allclose(g[i], np.outer(p[i] - onehot, h[i]).ravel())
    # ||g||^2 factorises
    r = p - np.eye(3)[np.argmax(p, 1)]
    np.testing.assert_allclose((g**2).sum(1), (r**2).sum(1) * (h**2).sum(1))


def test_badge_first_pick_is_max_norm_and_far_point_is_picked_second() -> None:
    # row 0 has the largest norm; rows 1-3 sit within 0.1 of it, row 4 is 19 away: D^2
    # sampling gives row 4 probability 361 / (361 + 0.03); uniform sampling would give 1/4
    g = np.array([[10.0, 0.0], [9.9, 0.0], [9.95, 0.1], [9.95, 0.05], [-9.0, 0.0]])
    for seed in range(20):
        picks = badge_select(g, budget=2, seed=seed)
        assert picks.tolist() == [0, 4]
    # the same through the factorised path: probs/embeddings whose outer products are g
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    h = np.array([[1.0, 0.0], [0.0, 5.0], [0.1, 0.1]])  # norms: 0.14, 1.41, 0.08
    assert badge_select(probs=p, embeddings=h, budget=1, seed=0).tolist() == [1]


def test_badge_d2_sampling_frequencies() -> None:
    g = np.array([[4.0, 0.0], [0.0, 1.0], [0.0, -2.0], [1.0, 1.0], [-1.0, 0.0]])
    d2 = ((g - g[0]) ** 2).sum(1)  # first pick: row 0 (max norm 4)
    want = d2 / d2.sum()
    counts = np.zeros(5)
    n = 2500
    for seed in range(n):
        picks = badge_select(g, budget=2, seed=seed)
        assert picks[0] == 0
        counts[picks[1]] += 1
    assert counts[0] == 0
    np.testing.assert_allclose(counts / n, want, atol=0.03)  # D (not D^2) is off by 0.05


def test_badge_factorised_equals_explicit_and_distinct() -> None:
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4) * 0.7, size=80)
    h = rng.normal(size=(80, 6))
    explicit = badge_select(badge_embeddings(p, h), budget=12, seed=3)
    fact = badge_select(probs=p, embeddings=h, budget=12, seed=3, chunk_size=9)
    assert explicit.tolist() == fact.tolist()
    assert len(set(fact.tolist())) == 12
    # MC samples [N, C, T] are averaged
    mc = np.repeat(p[:, :, None], 3, axis=2)
    assert badge_select(probs=mc, embeddings=h, budget=12, seed=3).tolist() == fact.tolist()
    assert badge_select(probs=p, embeddings=h, budget=500, seed=0).shape == (80,)


def test_badge_duplicates_fall_back_to_uniform() -> None:
    g = np.array([[1.0, 0.0]] * 4)
    picks = badge_select(g, budget=4, seed=0)
    assert sorted(picks.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not both"):
        badge_select(g, probs=np.ones((4, 2)) / 2, embeddings=g, budget=1, seed=0)
