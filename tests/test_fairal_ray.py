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


# --------------------------------------------------------------- through the strategy (values)


def test_use_ray_refits_follows_the_scoring_section() -> None:
    """Ray for ``compute: actors|tasks``; ``auto`` from ``actor_min_rows`` pool rows on."""
    from rayfal.config import ScoringConfig
    from rayfal.scoring.fairal_refits import use_ray_refits

    assert use_ray_refits(ScoringConfig(compute="actors"), 10)
    assert use_ray_refits(ScoringConfig(compute="tasks"), 10)
    assert not use_ray_refits(ScoringConfig(compute="auto", actor_min_rows=1000), 999)
    assert use_ray_refits(ScoringConfig(compute="auto", actor_min_rows=1000), 1000)


def _pool_problem(tmp_path):
    import pyarrow.parquet as pq

    from rayfal.acquisition.view import LabelledSet
    from rayfal.data import schema as S
    from rayfal.data.pool import Pool

    rng = np.random.default_rng(7)
    n, d = 110, 5
    ids = np.arange(500, 500 + n, dtype=np.int64)
    group = rng.integers(0, 2, n)
    feats = rng.normal(size=(n, d))
    y = (feats[:, 0] + 0.8 * group + 0.3 * rng.normal(size=n) > 0.4).astype(np.int64)
    x = np.c_[feats, group, 1 - group].astype(np.float32)  # the group one-hot among the inputs
    (tmp_path / "pool").mkdir()
    for i, sl in enumerate((slice(0, 55), slice(55, None))):  # two shards
        pq.write_table(S.feature_table(ids[sl], x[sl], group[sl], y[sl]),
                       tmp_path / "pool" / f"part-{i}.parquet")
    pool = Pool(str(tmp_path / "pool" / "*.parquet"))
    lab = np.r_[np.flatnonzero(y == 0)[:6], np.flatnonzero(y == 1)[:6]]
    fair = np.arange(80, 110)
    return (pool, LabelledSet(ids[lab], x[lab], y[lab], group[lab]),
            LabelledSet(ids[fair], x[fair], y[fair], group[fair]), ids, y)


def _recording(fn, calls: list):
    def score(*args, **kwargs):
        out = fn(*args, **kwargs)
        calls.append(out)
        return out
    return score


@pytest.mark.parametrize("params", [
    {"refit": "model", "steps": 6, "lr": 1.0, "measure": "eo", "subsample": 70},
    {"protocol": "faithful", "fair_size": 40, "subsample": 50},  # sequential, exact refits, mi
], ids=["batch-model-eo", "faithful-sequential"])
def test_strategy_ray_refits_equal_in_process(ray_session, tmp_path, params: dict) -> None:
    """FairALStrategy with the campaign's Ray Data refit scorer (2 actors x 0.5 CPU, 8-row
    chunks, so several chunks per call reach both actors) computes every call's scores exactly
    as the in-process fast path and picks the same rows; the view's info records the pool."""
    from functools import partial

    import ray
    import torch

    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.view import PoolView
    from rayfal.config import ScoringConfig
    from rayfal.models.linear import Linear
    from rayfal.scoring.fairal_refits import ray_refit_scorer

    pool, labelled, fair, ids, y = _pool_problem(tmp_path)
    torch.manual_seed(0)
    model = Linear((labelled.x.shape[1],), 2)

    def run(scorer, info=None):
        calls: list = []
        asked: list[int] = []

        def oracle(row_ids: np.ndarray) -> np.ndarray:
            asked.extend(row_ids.tolist())
            return y[row_ids - 500]

        view = PoolView(pool=pool, labelled=labelled, model=model, budget=2, seed=1,
                        fairness=fair, oracle=oracle, chunk_rows=32)
        strat = make_strategy("fairal", seed=1, **params)
        strat.use_refit_scorer(_recording(partial(scorer, chunk_size=8), calls), info)
        return strat.select_pool(view, 2), calls, view.info, asked

    want, want_calls, want_info, want_asked = run(fairal_fast)
    cfg = ScoringConfig(compute="actors", actors=2, cpus_per_actor=0.5)
    scorer, info = ray_refit_scorer(cfg, ray.cluster_resources())
    got, got_calls, got_info, got_asked = run(scorer, info)
    assert info == {"refits": "ray_data", "refit_actors": 2, "refit_cpus_per_actor": 0.5}
    assert got_info["refits"] == "ray_data" and "refits" not in want_info
    sequential = params.get("protocol") == "faithful"
    assert len(got_calls) == len(want_calls) == (2 if sequential else 1)
    for g, w in zip(got_calls, want_calls, strict=True):
        assert len(w.score) > 8 and len(np.unique(w.expected_unfairness)) > 3
        np.testing.assert_array_equal(g.unfairness_per_label, w.unfairness_per_label)
        np.testing.assert_array_equal(g.expected_unfairness, w.expected_unfairness)
        np.testing.assert_array_equal(g.score, w.score)
    np.testing.assert_array_equal(got, want)
    assert got_asked == want_asked == (want.tolist() if sequential else [])


def _campaign_job(scoring: dict) -> dict:
    return {"name": "fairal-ray", "seeds": [0],
            "dataset": {"name": "glyphs", "n_pool": 160, "n_test": 60, "image_size": 8,
                        "seed": 3},
            "model": {"width": 4, "hidden": 8},
            "training": {"epochs": 1, "min_steps": 2},
            "al": {"initial_labels": 12, "query_size": 4, "rounds": 1, "max_frac": None},
            "scoring": {"mc_samples": 2, **scoring}, "evaluation": {"mc_samples": 2},
            "campaigns": [{"strategy": "fairal",
                           "params": {"subsample": 40, "head_steps": 20, "steps": 4}}]}


@pytest.mark.timeout(600)
def test_fairal_campaign_through_ray_refits_equals_in_process(ray_session, tmp_path) -> None:
    """A tiny FairAL campaign end to end: with ``scoring.compute: actors`` (2 actors x 0.5 CPU)
    the campaign layer hands the Ray Data refit job to the strategy (recorded in the round's
    selection_info.json) and the rounds select exactly the rows of the in-process run."""
    import json

    import rayfal

    def run(name: str, scoring: dict) -> tuple[list, dict]:
        out = tmp_path / name
        rayfal.run(rayfal.load_job(_campaign_job(scoring)), out, progress=False, report=False)
        seed_dir = out / "campaigns" / "fairal" / "seed_0"
        recs = [json.loads(p.read_text()) for p in sorted(seed_dir.glob("rounds/round_*.json"))]
        info = json.loads((seed_dir / "round_000" / "selection_info.json").read_text())
        return [r["selected"] for r in recs], info

    want, want_info = run("in_process", {})  # auto: 160 rows < actor_min_rows
    got, got_info = run("ray", {"compute": "actors", "actors": 2, "cpus_per_actor": 0.5})
    assert got_info["refits"] == "ray_data" and got_info["refit_actors"] == 2
    assert "refits" not in want_info and want_info["candidates"] == got_info["candidates"] == 40
    assert len(want[0]) == 4 and got == want
