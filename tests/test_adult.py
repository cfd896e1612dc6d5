"""UCI Adult source (rayfal/data/sources/adult.py) and the fairlearn training mode."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA

from rayfal.config import DatasetConfig
from rayfal.data.sources.adult import (
    NUMERIC,
    AdultData,
    encode,
    initial_row_ids,
    load_raw,
    open_split,
    prepare_adult,
    read_categories,
)

SRC = SHARED_DATA / "adult"
needs_data = pytest.mark.needs_data("adult/adult.data", "adult/adult.test", "adult/adult.names")


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    out = tmp_path_factory.mktemp("adult") / "a"
    manifest = prepare_adult(out, SRC, seed=0, d0_size=40)
    return out, manifest


@needs_data
def test_rows_after_dropping_missing_values_and_one_hot_width() -> None:
    rows, counts = load_raw(SRC)
    # UCI: 32,561 + 16,281 rows; 30,162 + 15,060 without '?' (the documented figures)
    assert counts == {"adult.data_raw": 32561, "adult.data": 30162,
                      "adult.test_raw": 16281, "adult.test": 15060}
    assert not any("?" in r for r in rows)
    assert {r[-1] for r in rows} == {">50K", "<=50K"}  # adult.test's trailing '.' stripped
    x, y, g, names = encode(rows[:500], read_categories(SRC / "adult.names"))
    assert x.shape == (500, 105) and len(names) == 105  # 6 numeric + 99 one-hot columns
    onehot = x[:, len(NUMERIC):]
    assert set(np.unique(onehot)) == {0.0, 1.0}
    assert (onehot.sum(1) == 8).all()  # one category per categorical column
    assert set(np.unique(y)) == {0, 1} and set(np.unique(g)) == {0, 1}


@needs_data
def test_splits_sizes_d0_flags_and_no_leakage(adult) -> None:
    out, manifest = adult
    assert manifest["sizes"] == {"meta": 22611, "pool_unlabelled": 11305, "d0": 40,
                                 "test": 11306}
    meta = pq.read_table(out / "meta").to_pydict()
    pool = pq.read_table(out / "pool").to_pydict()
    test = pq.read_table(out / "test").to_pydict()
    m_ids, p_ids, t_ids = (set(t["row_id"]) for t in (meta, pool, test))
    assert not (m_ids & t_ids) and not (p_ids & t_ids)
    d0 = {r for r, f in zip(pool["row_id"], pool["initial"], strict=True) if f}
    assert len(d0) == 40 and d0 <= m_ids and (p_ids - d0).isdisjoint(m_ids)
    # standardisation statistics come from D only: D's columns have mean 0 / std 1,
    # while the test set's do not exactly (and the stored mean is D's raw mean)
    xm = np.array(meta["features"], dtype=np.float64)
    xt = np.array(test["features"], dtype=np.float64)
    np.testing.assert_allclose(xm.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(xm.std(0)[xm.std(0) > 0], 1, atol=1e-3)
    assert np.abs(xt.mean(0)).max() > 1e-3
    rows, _ = load_raw(SRC)
    x, _, _, _ = encode(rows, read_categories(SRC / "adult.names"))
    meta_idx = np.array(sorted(m_ids))
    np.testing.assert_allclose(manifest["mean"], x[meta_idx].mean(0), rtol=1e-9)
    assert not np.allclose(manifest["mean"], x.mean(0), rtol=1e-6)


@needs_data
def test_deterministic_cached_and_seeded(adult, tmp_path) -> None:
    out, manifest = adult
    again = prepare_adult(out, SRC, seed=0, d0_size=40)  # cached: no rewrite
    assert again == manifest
    with pytest.raises(ValueError, match="made with"):
        prepare_adult(out, SRC, seed=1, d0_size=40)
    other = prepare_adult(tmp_path / "b", SRC, seed=0, d0_size=40)
    assert other["meta_digest"] == manifest["meta_digest"]
    assert pq.read_table(tmp_path / "b" / "pool").equals(pq.read_table(out / "pool"))
    # another seed, another split (checked on the split function, without writing files)
    rows, _ = load_raw(SRC)
    x, y, g, names = encode(rows, read_categories(SRC / "adult.names"))
    a, b = AdultData(x, y, g, names, seed=0), AdultData(x, y, g, names, seed=1)
    meta0 = pq.read_table(out / "meta", columns=["row_id"]).column(0).to_numpy()
    np.testing.assert_array_equal(np.sort(a.idx["meta"]), meta0)
    assert not np.array_equal(np.sort(b.idx["meta"]), meta0)


@needs_data
def test_open_split_and_initial_rows(adult) -> None:
    out, _ = adult
    cfg = DatasetConfig(name="adult", dir=str(out), d0_size=40)
    meta = open_split(cfg, "/nonexistent", "meta")
    pool = open_split(cfg, "/nonexistent", "pool")
    assert meta.num_rows == 22611 and pool.num_rows == 11305 + 40
    init = initial_row_ids(pool)
    assert len(init) == 40 and meta.is_known(init).all()
    assert json.loads((out / "manifest.json").read_text())["group_names"] == ["Female", "Male"]
    with pytest.raises(ValueError, match="split"):
        open_split(cfg, "/x", "train")


# ----------------------------------------------------------------------------- fairlearn mode


def test_fairlearn_mode_lowers_demographic_parity_on_a_biased_toy_set() -> None:
    from sklearn.linear_model import LogisticRegression

    from rayfal.fairness.metrics import panda_demographic_parity
    from rayfal.training.fairlearn_mode import binary_metrics, fit_reduction, predict

    rng = np.random.default_rng(0)
    n = 800
    g = rng.integers(0, 2, n)
    x = np.c_[rng.normal(size=n) + 1.5 * g, rng.normal(size=n), g]
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n) > 1.0).astype(int)
    tr, te = slice(0, 400), slice(400, None)
    plain = LogisticRegression().fit(x[tr], y[tr]).predict(x[te])
    red = fit_reduction(x[tr], y[tr], g[tr], eps=0.02, max_iter=15)
    fair = predict(red, x[te], seed=0)
    dp_plain = panda_demographic_parity(plain, groups=g[te])
    dp_fair = panda_demographic_parity(fair, groups=g[te])
    assert dp_plain > 0.2 and dp_fair < 0.1 and dp_fair < dp_plain / 3
    m = binary_metrics(y[te], fair, g[te])
    assert m["panda_dp"] == pytest.approx(dp_fair) and 0 < m["f_score"] < 1


def test_fairlearn_mode_params_and_binary_metrics_known_answer() -> None:
    from rayfal.training.fairlearn_mode import binary_metrics, fit_reduction, predict
    from rayfal.training.modes import make_loss

    with pytest.raises(TypeError, match="fairlearn"):
        make_loss("fairlearn", bogus=1)
    with pytest.raises(ValueError, match="constraint"):
        make_loss("fairlearn", constraint="xx")
    one = fit_reduction(np.zeros((3, 2)), np.ones(3, int), np.array([0, 1, 0]))
    assert predict(one, np.zeros((4, 2)), 0).tolist() == [1, 1, 1, 1]
    # y = [1,1,0,0], pred = [1,0,1,0]: TP 1, FP 1, FN 1 -> F1 = 0.5; groups [0,0,1,1]:
    # rates 0.5 / 0.5 -> DP 0; TPR 1 vs nan (group 1 has no positives), FPR nan vs 1 -> 0
    m = binary_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([0, 0, 1, 1]))
    assert m["f_score"] == pytest.approx(0.5) and m["panda_dp"] == pytest.approx(0.0)
