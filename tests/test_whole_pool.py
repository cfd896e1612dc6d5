"""Whole-pool strategies (coreset, badge, fairal, panda, in_memory): the PoolView protocol,
conformance, known answers, job-file parameter validation, and (for the integrator) the
campaign's whole-pool path end to end on Adult."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED_DATA

from rayfal.acquisition import (
    STRATEGIES,
    StrategyParamsError,
    make_strategy,
    select_in_memory,
    strategy_class,
)
from rayfal.acquisition.fairal import RefitConfig, fairal_select, fit_logistic_head
from rayfal.acquisition.panda import PandaPolicy, save_policy
from rayfal.acquisition.view import (
    LabelledSet,
    PoolView,
    WholePoolStrategy,
    is_whole_pool,
    subsample_ids,
)
from rayfal.data import schema as S
from rayfal.data.pool import Pool
from rayfal.models.linear import Linear

WHOLE_POOL = [n for n in STRATEGIES.names() if is_whole_pool(n)]
D = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_pool(path: Path, x: np.ndarray, group: np.ndarray, y: np.ndarray,
                ids: np.ndarray) -> Pool:
    path.mkdir(parents=True, exist_ok=True)
    half = len(ids) // 2  # two shards
    for i, sl in enumerate((slice(0, half), slice(half, None))):
        pq.write_table(S.feature_table(ids[sl], x[sl], group[sl], y[sl]),
                       path / f"part-{i}.parquet")
    return Pool(str(path / "*.parquet"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """120 rows, 6 features, 2 groups, binary labels; 20 labelled; a linear model."""
    rng = np.random.default_rng(0)
    n = 120
    ids = (rng.choice(10**6, n, replace=False) * 31 + 7).astype(np.int64)
    group = rng.integers(0, 2, n)
    x = rng.normal(size=(n, D)).astype(np.float32)
    x[:, 0] += group
    y = (x[:, 1] + 0.5 * group > 0.3).astype(np.int64)
    root = tmp_path_factory.mktemp("tiny_pool")
    pool = _write_pool(root / "pool", x, group, y, ids)
    lab = np.sort(ids[:20])
    pos = np.searchsorted(ids, lab, sorter=np.argsort(ids))
    order = np.argsort(ids)[pos]
    labelled = LabelledSet(lab, x[order], y[order], group[order])
    torch.manual_seed(0)
    model = Linear((D,), 2)
    policy_dir = root / "policy"
    torch.manual_seed(1)
    save_policy(policy_dir, PandaPolicy(D, d_model=8, n_heads=2, dim_feedforward=16))
    fair = LabelledSet(ids[-30:], x[-30:], y[-30:], group[-30:])
    return {"pool": pool, "labelled": labelled, "model": model, "policy": str(policy_dir),
            "fair": fair, "ids": ids, "x": x, "y": y, "group": group}


def _params(name: str, tiny) -> dict:
    return {"panda": {"policy": tiny["policy"]}, "in_memory": {"base": "entropy"},
            "fairal": {"refit": "model", "subsample": None}}.get(name, {})


def _view(tiny, *, seed=0, round=0, labelled=None, work_dir=None) -> PoolView:
    return PoolView(pool=tiny["pool"], labelled=labelled or tiny["labelled"],
                    model=tiny["model"], budget=10, seed=seed, round=round,
                    fairness=tiny["fair"], work_dir=work_dir, chunk_rows=17)


def _select(name, tiny, budget, **kw):
    strat = make_strategy(name, seed=kw.pop("seed", 0), round=kw.get("round", 0),
                          **_params(name, tiny))
    return strat.select_pool(_view(tiny, **kw), budget)


def test_whole_pool_registry() -> None:
    assert set(WHOLE_POOL) >= {"coreset", "badge", "fairal", "panda", "in_memory"}
    assert not is_whole_pool("entropy")
    for name in WHOLE_POOL:
        cls = strategy_class(name)
        assert issubclass(cls, WholePoolStrategy) and cls.kind == "whole_pool"
        assert cls.summary and "\n" not in cls.summary, name


@pytest.mark.parametrize("name", WHOLE_POOL)
@pytest.mark.parametrize("budget", [1, 13])
def test_returns_budget_unique_unlabelled_rows_deterministically(name, budget, tiny) -> None:
    out = _select(name, tiny, budget, seed=3)
    assert out.dtype == np.int64 and len(out) == budget == len(np.unique(out))
    assert np.isin(out, tiny["ids"]).all() and not np.isin(out, tiny["labelled"].row_id).any()
    np.testing.assert_array_equal(out, _select(name, tiny, budget, seed=3))


@pytest.mark.parametrize("name", WHOLE_POOL)
def test_budget_above_unlabelled_returns_all_unlabelled(name, tiny) -> None:
    out = _select(name, tiny, 500)
    assert sorted(out.tolist()) == sorted(np.setdiff1d(tiny["ids"], tiny["labelled"].row_id).tolist())


@pytest.mark.parametrize("name", WHOLE_POOL)
def test_whole_pool_strategies_refuse_per_row_scoring(name, tiny) -> None:
    strat = make_strategy(name, seed=0, **_params(name, tiny))
    with pytest.raises(TypeError, match="whole_pool"):
        strat.score(None)


def test_in_memory_equals_the_per_row_selection(tiny) -> None:
    """``in_memory`` gives exactly the streaming reducer's selection of its base strategy."""
    view = _view(tiny)
    g = view.gather(view.unlabelled_ids, ("mc",))
    for base in ("entropy", "margin", "random"):
        ref = select_in_memory(make_strategy(base, seed=2), g["row_id"], g["group"], 9,
                               probs=g["mc"], batch_size=7)
        out = make_strategy("in_memory", seed=2, base=base).select_pool(view, 9)
        np.testing.assert_array_equal(out, ref)
    # group_random: restricted to the worst group given by the driver
    out = make_strategy("in_memory", seed=2, base="group_random", worst_group=1).select_pool(view, 9)
    assert (tiny["group"][np.isin(tiny["ids"], out)] == 1).all()


def test_gather_chunks_equal_one_batch(tiny) -> None:
    view = _view(tiny)
    a = view.gather(view.unlabelled_ids, ("x", "emb", "probs"))
    view.chunk_rows = 1000
    b = view.gather(view.unlabelled_ids, ("x", "emb", "probs"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k])
    assert np.array_equal(a["row_id"], np.sort(view.unlabelled_ids))
    np.testing.assert_allclose(a["emb"], a["x"], rtol=1e-6)  # linear model: trunk = identity


def test_subsample_is_seeded_and_order_free() -> None:
    ids = np.arange(1000, dtype=np.int64) * 3
    a = subsample_ids(ids, 50, 1)
    np.testing.assert_array_equal(a, subsample_ids(ids[::-1], 50, 1))
    assert len(a) == 50 and set(a.tolist()) != set(subsample_ids(ids, 50, 2).tolist())
    np.testing.assert_array_equal(subsample_ids(ids, None, 0), ids)


def test_coreset_picks_the_far_outlier_first(tiny, tmp_path) -> None:
    """k-center: a point far from every labelled row and every other row is the first pick."""
    x, ids = tiny["x"].copy(), tiny["ids"]
    far = ids[50]
    x[50] = 40.0
    pool = _write_pool(tmp_path / "p", x, tiny["group"], tiny["y"], ids)
    view = PoolView(pool=pool, labelled=tiny["labelled"], model=tiny["model"], budget=1, seed=0)
    assert make_strategy("coreset", seed=0).select_pool(view, 1).tolist() == [far]


# ------------------------------------------------------------------ FairAL known answer (adapter)

CAND = np.array([[0, 2.0], [1, 2.0], [0, -2.0], [1, -2.0], [0, 0.0], [1, 0.0], [0, 1.54]])


def test_fairal_adapter_known_answer_and_equals_direct_call(tmp_path) -> None:
    """Hand-made biased labelled set (as tests/test_fairal.py): the fair candidates are A (group
    0, likely positive) and D (group 1, likely negative). Through the whole-pool strategy
    (``refit: model`` on the linear model) FairAL with alpha = 0 picks exactly {A, D}, the same
    as calling :func:`fairal_select` with the model's softmax head."""
    xl = np.array([[1, -1], [1, 0], [1, 1], [1, -3.0], [0, -1], [0, 0], [0, 1], [0, 3.0]])
    yl = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    f = np.linspace(-2, 2, 41)
    xf = np.r_[np.c_[np.zeros(41), f], np.c_[np.ones(41), f]]
    gf = np.r_[np.zeros(41, int), np.ones(41, int)]
    head = fit_logistic_head(xl, yl, 2, binary=False, steps=500, lr=1.0, l2=1e-2)
    model = Linear((2,), 2)
    with torch.no_grad():
        model.head.weight.copy_(head.weight.T.float())
        model.head.bias.copy_(head.bias.float())
    cand_ids = np.arange(100, 107, dtype=np.int64)
    lab_ids = np.arange(8, dtype=np.int64)
    x_all = np.r_[xl, CAND].astype(np.float32)
    pool = _write_pool(tmp_path / "p", x_all, x_all[:, 0].astype(np.int64),
                       np.r_[yl, np.zeros(7, int)], np.r_[lab_ids, cand_ids])
    view = PoolView(pool=pool, labelled=LabelledSet(lab_ids, xl.astype(np.float32), yl,
                                                    xl[:, 0].astype(np.int64)),
                    model=model, budget=2, seed=0,
                    fairness=LabelledSet(np.arange(82), xf.astype(np.float32),
                                         np.zeros(82, int), gf))
    strat = make_strategy("fairal", seed=0, alpha=0.0, refit="model", steps=20, lr=1.0,
                          l2=1e-2, subsample=None)
    out = strat.select_pool(view, 2)
    assert set(out.tolist()) == {100, 103}  # A and D
    direct = fairal_select(strat._head(view, xl), xl, yl, CAND, xf, gf, 2, alpha=0.0,
                           y_fair=np.zeros(82, int), refit=RefitConfig(steps=20, lr=1.0, l2=1e-2))
    assert set(cand_ids[direct].tolist()) == set(out.tolist())
    # alpha = 1: pure entropy, the boundary point G
    g_pick = make_strategy("fairal", seed=0, alpha=1.0, refit="model", steps=20, lr=1.0,
                           l2=1e-2, subsample=None).select_pool(view, 1)
    assert g_pick.tolist() == [106]


def test_fairal_refit_model_refused_for_deep_models(tiny) -> None:
    from rayfal.models.mlp import MLP

    view = _view(tiny)
    view.model = MLP((D,), 2, hidden=8)
    with pytest.raises(ValueError, match="refit: head"):
        make_strategy("fairal", seed=0, refit="model").select_pool(view, 3)
    out = make_strategy("fairal", seed=0, refit="head", head_steps=20).select_pool(view, 3)
    assert len(out) == 3


def test_fairal_sequential_mode_asks_the_views_oracle(tiny) -> None:
    """``mode: sequential`` queries ``view.oracle`` once per pick, with the picked row_id (that
    is why ``fairal`` requires ``oracle``); without an oracle it is a clear error."""
    asked: list[int] = []
    label_of = dict(zip(tiny["ids"].tolist(), tiny["y"].tolist(), strict=True))

    def oracle(ids: np.ndarray) -> np.ndarray:
        asked.extend(ids.tolist())
        return np.array([label_of[i] for i in ids.tolist()])

    strat = make_strategy("fairal", seed=0, mode="sequential", refit="model", subsample=30,
                          steps=5)
    view = _view(tiny)
    view.oracle = oracle
    out = strat.select_pool(view, 3)
    assert asked == out.tolist() and len(set(asked)) == 3
    with pytest.raises(ValueError, match="oracle"):
        strat.select_pool(_view(tiny), 3)


# ------------------------------------------------------------------ job-file parameters

#: (strategy, base params needed to construct it, a valid key with an out-of-range value)
PARAM_CASES = [
    ("coreset", {}, ("subsample", 0)),
    ("badge", {}, ("subsample", -3)),
    ("batchbald", {}, ("candidates", 0)),
    ("fairal", {}, ("lr", 0.0)),
    ("in_memory", {"base": "entropy"}, ("base", "no_such_strategy")),
]


@pytest.mark.parametrize(("name", "base", "bad"), PARAM_CASES)
def test_params_reject_an_unknown_key_naming_it(name, base, bad) -> None:
    make_strategy(name, seed=0, **base)  # the base params alone are valid
    with pytest.raises(StrategyParamsError, match=rf"strategy '{name}'.*\bnot_a_param\b"):
        make_strategy(name, seed=0, **base, not_a_param=1)


@pytest.mark.parametrize(("name", "base", "bad"), PARAM_CASES)
def test_params_reject_an_out_of_range_value_naming_the_key(name, base, bad) -> None:
    key, value = bad
    with pytest.raises(StrategyParamsError, match=rf"strategy '{name}': params\.{key}="):
        make_strategy(name, seed=0, **{**base, key: value})


@pytest.mark.parametrize(("params", "key"), [
    ({"alpha": 1.5}, "alpha.constant"),
    ({"alpha": {"start": 0.2, "end": 1.2}}, "alpha.schedule.end"),
    ({"alpha": {"start": 0.2}}, "alpha.schedule.end"),
    ({"measure": "xx"}, "measure"),
    ({"mode": "xx"}, "mode"),
    ({"refit": "trunk"}, "refit"),
    ({"engine": "slow"}, "engine"),
    ({"sequential_rule": "xx"}, "sequential_rule"),
    ({"method": "lbfgs"}, "method"),
    ({"method": "newton"}, "method"),  # the strategy's head is softmax: Newton cannot run
    ({"steps": -1}, "steps"),
    ({"head_steps": -1}, "head_steps"),
    ({"l2": -1e-3}, "l2"),
    ({"fair_size": 0}, "fair_size"),
    ({"nested_k": 0}, "nested_k"),
])
def test_fairal_params_are_checked_at_load_time(params, key) -> None:
    with pytest.raises(StrategyParamsError, match=rf"params\.{key}(=|: required)"):
        make_strategy("fairal", seed=0, **params)


def test_fairal_params_values() -> None:
    s = make_strategy("fairal", seed=0, alpha={"start": 0.2, "end": 0.8}, subsample=None,
                      steps=3, lr=0.1, l2=0.0)
    assert s.params.alpha_value() == {"start": 0.2, "end": 0.8}
    assert s.params.subsample is None and s.fairness_rows() == s.params.fair_size == 1000
    assert s.refit_cfg == RefitConfig(steps=3, lr=0.1, l2=0.0, method="gd")
    assert make_strategy("fairal", seed=0).params.alpha_value() == 0.6
    assert strategy_class("fairal").requires == {"model", "fairness", "oracle"}
    for name in ("coreset", "badge"):
        assert strategy_class(name).requires == {"model"}
        assert make_strategy(name, seed=0).params.subsample is None


def test_in_memory_params() -> None:
    with pytest.raises(StrategyParamsError, match=r"params\.base: required parameter missing"):
        make_strategy("in_memory", seed=0)
    with pytest.raises(StrategyParamsError, match=r"params\.base='nope'.*unknown strategy 'nope'"):
        make_strategy("in_memory", seed=0, base="nope")
    for whole in ("coreset", "in_memory"):
        with pytest.raises(StrategyParamsError, match=rf"base '{whole}' is a whole_pool strategy"):
            make_strategy("in_memory", seed=0, base=whole)
    with pytest.raises(StrategyParamsError, match="base 'jin' is a two_pass strategy"):
        make_strategy("in_memory", seed=0, base="jin")
    with pytest.raises(StrategyParamsError,
                       match=r"params\.foo=1: unknown parameter of base strategy 'bald'"):
        make_strategy("in_memory", seed=0, base="bald", foo=1)
    # worst_group is a run-time input, passed on only to bases that require it
    s = make_strategy("in_memory", seed=0, base="group_random", worst_group=1)
    assert s.base.worst_group == 1 and "worst_group" not in s.params.base_params
    assert strategy_class("in_memory").requires == {"model", "worst_group"}


def test_in_memory_validates_and_passes_on_the_base_params(monkeypatch) -> None:
    """``in_memory``'s flat keys other than ``base`` are checked by the base's own ``Params``
    (an out-of-range value names the key) and reach the base strategy."""
    from pydantic import Field

    from rayfal.acquisition.base import Strategy, StrategyParams

    class TinyParams(StrategyParams):
        k: int = Field(1, ge=1)

    class Tiny(Strategy):
        name = "tiny_per_row"
        Params = TinyParams

    monkeypatch.setitem(STRATEGIES._items, "tiny_per_row", Tiny)
    s = make_strategy("in_memory", seed=0, base="tiny_per_row", k=4)
    assert isinstance(s.base, Tiny) and s.base.params.k == 4
    with pytest.raises(StrategyParamsError, match=r"params\.k=0: .*base strategy 'tiny_per_row'"):
        make_strategy("in_memory", seed=0, base="tiny_per_row", k=0)
    with pytest.raises(StrategyParamsError, match=r"params\.j=1: .*\(allowed: base, k\)"):
        make_strategy("in_memory", seed=0, base="tiny_per_row", j=1)


def test_panda_one_shot_ranking_is_split_over_rounds(tiny, tmp_path) -> None:
    """Round r queries the next rows of the round-0 ranking: over two rounds of 5 the union is
    the one-pass top-10 of the same policy and seed."""
    name, params = "panda", _params("panda", tiny)
    one = make_strategy(name, seed=4, **params).select_pool(_view(tiny, seed=4), 10)
    r0 = make_strategy(name, seed=4, **params).select_pool(
        _view(tiny, seed=4, work_dir=tmp_path), 5)
    assert json.loads((tmp_path / "panda_ranking.json").read_text())["round"] == 0
    lab = tiny["labelled"]
    pos = np.searchsorted(tiny["ids"], r0, sorter=np.argsort(tiny["ids"]))
    idx = np.argsort(tiny["ids"])[pos]
    lab1 = LabelledSet(np.r_[lab.row_id, r0], np.r_[lab.x, tiny["x"][idx]],
                       np.r_[lab.y, tiny["y"][idx]], np.r_[lab.group, tiny["group"][idx]])
    r1 = make_strategy(name, seed=4, round=1, **params).select_pool(
        _view(tiny, seed=4, round=1, labelled=lab1, work_dir=tmp_path), 5)
    np.testing.assert_array_equal(np.r_[r0, r1], one)


# ------------------------------------------------------------------ campaign, end to end


ADULT_SRC = SHARED_DATA / "adult"


@pytest.mark.ray
@pytest.mark.needs_data("adult/adult.data", "adult/adult.test", "adult/adult.names")
def test_whole_pool_campaigns_end_to_end_on_adult(ray_session, tmp_path) -> None:
    """Every whole-pool strategy (and the fairlearn training mode) runs through the campaign
    layer on Adult: D0 rows are labelled at round 0, one query round, the records carry
    F/DP/EB; PANDA's policy is meta-trained by the campaign layer and cached in the run dir."""
    from rayfal.campaign import run_job
    from rayfal.config import config_from_dict

    raw = {
        "name": "t", "seeds": [0],
        "dataset": {"name": "adult", "src_dir": str(ADULT_SRC), "d0_size": 30,
                    "dir": str(tmp_path / "adult")},
        "model": {"name": "linear"},
        "training": {"epochs": 1, "min_steps": 20},
        "al": {"initial_labels": 30, "query_size": 10, "rounds": 1, "max_frac": None},
        "scoring": {"mc_samples": 1}, "evaluation": {"mc_samples": 1},
        "campaigns": [
            {"strategy": "coreset", "params": {"subsample": 500}},
            {"strategy": "badge", "params": {"subsample": 500}},
            {"strategy": "fairal", "params": {"refit": "model", "subsample": 200,
                                              "fair_size": 200}},
            {"strategy": "panda", "params": {"subsample": 300, "train": {
                "steps": 2, "pretrain_steps": 2, "pool_size": 100, "val_size": 50,
                "budget": 10, "prox_steps": 1, "d_model": 8, "n_heads": 2}}},
            {"label": "fairlearn_al", "strategy": "in_memory", "params": {"base": "entropy"},
             "training": {"mode": "fairlearn", "mode_params": {"max_iter": 10}}},
        ],
    }
    cfg = config_from_dict(raw)
    df = run_job(cfg, cfg.to_dict(), tmp_path / "run", progress=False)
    assert len(df) == 10
    for campaign, sub in df.groupby("campaign"):
        assert sub.sort_values("round")["n_labelled"].tolist() == [30, 40], campaign
    for col in ("f_score", "panda_dp", "error_rate_balance"):
        assert df[col].between(0, 1).all()
    assert (df.loc[df["campaign"] == "fairlearn_al", "fair_fit_seconds"] > 0).all()
    assert list((tmp_path / "run" / "panda").glob("policy-*/policy.safetensors"))
    for c in ("coreset", "badge", "fairal", "panda"):
        rec = json.loads((tmp_path / "run" / "campaigns" / c / "seed_0" / "rounds" /
                          "round_000.json").read_text())
        assert len(rec["selected"]) == 10 and rec["score_seconds"] > 0
