"""End-to-end tests on a real local Ray: Ray Data scoring, Ray Train (local mode and DDP), and
a tiny campaign including --resume after a crash."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save as save_safetensors

from rayfal.acquisition import make_strategy, select_in_memory
from rayfal.acquisition.scores import bald, entropy
from rayfal.config import ConfigError, ScoringConfig, TrainingConfig, config_from_dict
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.data.pool import Pool
from rayfal.models import build_model
from rayfal.models.checkpoint import load_checkpoint, model_spec
from rayfal.models.predict import mc_probs
from rayfal.scoring.per_row import actor_pool_size, score_pool

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _model(pool: Pool, dropout: float = 0.5):
    torch.manual_seed(0)
    spec = model_spec("cnn", pool.input_shape, 2, width=8, hidden=16, dropout=dropout)
    m = build_model("cnn", pool.input_shape, 2, width=8, hidden=16, dropout=dropout)
    return spec, save_safetensors({k: v.contiguous() for k, v in m.state_dict().items()}), m


def test_actor_pool_leaves_a_cpu_for_reads():
    plan = actor_pool_size(ScoringConfig(), {"CPU": 2.0})
    assert plan.size * plan.cpus <= 1.0
    assert actor_pool_size(ScoringConfig(), {"CPU": 16.0}).size == 15
    with pytest.raises(ConfigError, match="read tasks"):
        actor_pool_size(ScoringConfig(actors=2, cpus_per_actor=1.0), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="GPUs"):
        actor_pool_size(ScoringConfig(gpus_per_actor=1.0), {"CPU": 4.0})


@pytest.mark.parametrize("compute", ["tasks", "actors"])
def test_score_pool_equals_in_process_scores(ray_session, glyph_data, compute):
    """Ray Data scoring (task or actor pool) gives every unlabelled row exactly the score the
    in-process path gives it (deterministic model: dropout 0), skips labelled rows, sees every
    row once, and selects the same rows."""
    pool = Pool(str(glyph_data / "pool" / "*.parquet"))
    spec, weights, model = _model(pool, dropout=0.0)
    labelled = pool.row_ids()[::7]
    n_unlabelled = pool.num_rows - len(labelled)
    cfg = ScoringConfig(compute=compute, mc_samples=2, batch_size=64)
    res = score_pool(pool, strategy="entropy", strategy_params={}, seed=3, round=1,
                     budget=n_unlabelled, labelled=labelled, model=(spec, weights), cfg=cfg,
                     progress=False)
    assert res.rows_scored == n_unlabelled
    assert res.actor_pool == (compute == "actors")
    cand = res.candidates
    assert sorted(cand.row_id.tolist()) == sorted(np.setdiff1d(pool.row_ids(), labelled).tolist())
    assert sum(cand.group_counts.values()) == n_unlabelled
    keep = ~np.isin(pool.row_ids(), labelled)
    rows = pool.take(pool.row_ids()[keep], [S.IMAGE, S.GROUP])
    x = torch.from_numpy(S.to_model_input(rows[S.IMAGE], pool.input_shape))
    probs = mc_probs(model.eval(), x, mc_samples=2)
    ref_scores = dict(zip(pool.row_ids()[keep].tolist(), entropy(probs).tolist(), strict=True))
    got = dict(zip(cand.row_id.tolist(), cand.score.tolist(), strict=True))
    assert np.allclose([got[k] for k in ref_scores], list(ref_scores.values()), atol=1e-5)
    strat = make_strategy("entropy", seed=3, round=1)
    ref = select_in_memory(strat, pool.row_ids()[keep], rows[S.GROUP], 20, probs=probs)
    assert strat.select(cand, 20).tolist() == ref.tolist()


def test_ray_bald_with_dropout_on_equals_in_process_mc_probs(ray_session, glyph_data):
    """MC dropout on (p = 0.5): the Ray workers' BALD scores are exactly BALD of the in-process
    ``mc_probs`` with the same row keys and mask seed (the scorer's documented
    ``seed * 100_003 + round``), although Ray splits the pool into other batches (37 rows) than
    the in-process call (50 rows) and skips the labelled rows; and they are BALD, not entropy."""
    pool = Pool(str(glyph_data / "pool" / "*.parquet"))
    spec, _, model = _model(pool, dropout=0.5)
    with torch.no_grad():  # larger logits: BALD values up to ~0.4 rather than ~1e-3
        for p in model.head.parameters():
            p.mul_(20.0)
    weights = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    labelled = pool.row_ids()[::5]
    n_unlabelled = pool.num_rows - len(labelled)
    seed, rnd, t = 2, 3, 4
    cfg = ScoringConfig(compute="tasks", mc_samples=t, batch_size=37)
    res = score_pool(pool, strategy="bald", strategy_params={}, seed=seed, round=rnd,
                     budget=n_unlabelled, labelled=labelled, model=(spec, weights), cfg=cfg,
                     progress=False)
    keep = ~np.isin(pool.row_ids(), labelled)
    ids = pool.row_ids()[keep]
    rows = pool.take(ids, [S.IMAGE])
    x = torch.from_numpy(S.to_model_input(rows[S.IMAGE], pool.input_shape))
    probs = mc_probs(model.eval(), x, mc_samples=t, batch_size=50,
                     generator_seed=seed * 100_003 + rnd, row_keys=ids)
    assert probs.std(axis=2).mean() > 1e-3  # dropout really is on
    want = bald(probs)
    got = dict(zip(res.candidates.row_id.tolist(), res.candidates.score.tolist(), strict=True))
    assert sorted(got) == sorted(ids.tolist())
    assert want.max() > 0.1
    np.testing.assert_allclose([got[k] for k in ids.tolist()], want, rtol=0, atol=1e-6)
    assert np.abs(want - entropy(probs)).max() > 0.05  # BALD and entropy differ on this pool
    # other masks (another round's seed) give other scores: the equality above is not trivial
    other = bald(mc_probs(model.eval(), x, mc_samples=t, generator_seed=seed * 100_003 + rnd + 1,
                          row_keys=ids))
    assert np.abs(other - want).max() > 0.05
    # and the query is the top of those scores: distinct, unlabelled pool rows
    chosen = make_strategy("bald", seed=seed, round=rnd).select(res.candidates, 30)
    assert len(set(chosen.tolist())) == 30 and not np.isin(chosen, labelled).any()
    assert set(chosen.tolist()) == set(ids[np.argsort(-want)[:30]].tolist())


@pytest.mark.parametrize("strategy", ["balanced_oracle", "random"])  # bald: the test above
def test_score_pool_selects_valid_rows(ray_session, glyph_data, strategy):
    pool = Pool(str(glyph_data / "pool" / "*.parquet"))
    spec, weights, _ = _model(pool)
    labelled = pool.row_ids()[:50]
    cfg = ScoringConfig(mc_samples=4, batch_size=100)
    res = score_pool(pool, strategy=strategy, strategy_params={}, seed=0, round=0, budget=30,
                     labelled=labelled, model=(spec, weights), cfg=cfg, progress=False)
    chosen = make_strategy(strategy, seed=0, round=0).select(res.candidates, 30)
    assert len(set(chosen.tolist())) == 30 and not np.isin(chosen, labelled).any()
    assert np.isin(chosen, pool.row_ids()).all()


def _tiny_job(glyph_data, **al):
    raw = {
        "name": "tiny",
        "seeds": [0],
        "dataset": {"name": "parquet", "pool": str(glyph_data / "pool" / "*.parquet"),
                    "test": str(glyph_data / "test" / "*.parquet")},
        "model": {"width": 8, "hidden": 16},
        "training": {"epochs": 1, "min_steps": 5, "batch_size": 16},
        "al": {"initial_labels": 10, "query_size": 8, "rounds": 3, "max_frac": None, **al},
        "scoring": {"mc_samples": 3, "batch_size": 128},
        "evaluation": {"mc_samples": 3},
        "campaigns": [{"strategy": "bald"}, {"strategy": "balanced_oracle"}],
    }
    cfg = config_from_dict(raw)
    return cfg, cfg.to_dict()


def _selected(run_dir) -> dict:
    out = {}
    for p in sorted(run_dir.glob("campaigns/*/seed_*/rounds/round_*.json")):
        rec = json.loads(p.read_text())
        out[(rec["campaign"], rec["round"])] = rec["selected"]
    return out


def test_tiny_campaign_end_to_end_and_resume(ray_session, glyph_data, tmp_path, monkeypatch):
    from rayfal import campaign as driver
    from rayfal.report import write_report

    cfg, resolved = _tiny_job(glyph_data)
    # 1) an uninterrupted run
    ref_dir = tmp_path / "ref"
    df = driver.run_job(cfg, resolved, ref_dir, progress=False)
    assert len(df) == 2 * 4  # 2 campaigns x (3 queries + final round)
    assert list(df.groupby("campaign")["n_labelled"].apply(list)["bald"]) == [10, 18, 26, 34]
    for camp in ("bald", "balanced_oracle"):
        ledger = LabelLedger(ref_dir / "campaigns" / camp / "seed_0" / "ledger.sqlite")
        assert len(ledger) == 34 and ledger.count_by_round() == {0: 10, 1: 8, 2: 8, 3: 8}
    # the oracle's balanced queries are balanced across groups
    bo = df[(df.campaign == "balanced_oracle") & (df.n_queried > 0)]
    assert np.allclose(bo["query_frac_group_0"], 0.5)
    paths = write_report([ref_dir])
    assert paths["curves.png"].stat().st_size > 1000

    # 2) the same job crashing in round 2 of the first campaign, then --resume
    crash_dir = tmp_path / "crash"
    real_round = driver.Campaign.round
    calls = {"n": 0}

    def flaky_round(self, r, *, query, n_rounds):
        calls["n"] += 1
        if r == 2 and calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_round(self, r, query=query, n_rounds=n_rounds)

    monkeypatch.setattr(driver.Campaign, "round", flaky_round)
    with pytest.raises(RuntimeError, match="simulated crash"):
        driver.run_job(cfg, resolved, crash_dir, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        driver.run_job(cfg, resolved, crash_dir, progress=False)
    # a crash between the round record and the ledger commit: the record is the truth
    real_commit = LabelLedger.commit
    state = {"failed": False}

    def flaky_commit(self, row_ids, labels, *, round, **kw):
        if round == 3 and not state["failed"]:
            state["failed"] = True
            raise OSError("simulated crash during the ledger commit")
        return real_commit(self, row_ids, labels, round=round, **kw)

    monkeypatch.setattr(LabelLedger, "commit", flaky_commit)
    with pytest.raises(OSError, match="ledger commit"):
        driver.run_job(cfg, resolved, crash_dir, resume=True, progress=False)
    df2 = driver.run_job(cfg, resolved, crash_dir, resume=True, progress=False)
    assert len(df2) == len(df)
    assert _selected(crash_dir) == _selected(ref_dir)  # nothing lost, repeated or changed
    pd.testing.assert_series_equal(
        df2.sort_values(["campaign", "round"])["accuracy"].reset_index(drop=True),
        df.sort_values(["campaign", "round"])["accuracy"].reset_index(drop=True),
    )
    for camp in ("bald", "balanced_oracle"):
        ledger = LabelLedger(crash_dir / "campaigns" / camp / "seed_0" / "ledger.sqlite")
        assert ledger.count_by_round() == {0: 10, 1: 8, 2: 8, 3: 8}


def test_ray_train_ddp_worker_group(ray_session, tmp_path):
    """The same round on a 2-worker DDP group (gloo on CPU) trains a usable model."""
    from rayfal.training.distributed import fit_round

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    spec = model_spec("mlp", (6,), 2, hidden=16, dropout=0.1)
    torch.manual_seed(0)
    init = build_model("mlp", (6,), 2, hidden=16, dropout=0.1)
    logs = fit_round(
        data={"x": x, "y": y, "group": (x[:, 2] > 0).astype(np.int64)},
        spec=spec,
        init_state=save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()}),
        training=TrainingConfig(num_workers=2, cpus_per_worker=1.0, epochs=30, batch_size=32),
        seed=0, out_dir=tmp_path / "round", storage_path=tmp_path / "store", run_name="ddp",
    )
    assert logs["world_size"] == 2.0
    model, meta = load_checkpoint(tmp_path / "round")
    assert meta["spec"] == spec
    acc = (mc_probs(model, torch.from_numpy(x), mc_samples=5).mean(2).argmax(1) == y).mean()
    assert acc > 0.9
