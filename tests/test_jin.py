"""JIN (FRAL Algorithm 1, Eq. 2-4): the strategy maths without Ray, the two-pass Ray Data
scoring (global z-normalisation whatever the shard split) and a tiny campaign via the campaign layer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch.nn import functional as F

from rayfal.acquisition import ScoreBatch, make_strategy, select_in_memory
from rayfal.acquisition.jin import OUTSIDE_SCORE, jin_terms
from rayfal.attacks import AttackSpec, row_noise
from rayfal.config import ScoringConfig, config_from_dict
from rayfal.data import schema as S
from rayfal.data.pool import Pool
from rayfal.models import build_model
from rayfal.models.checkpoint import model_spec
from rayfal.models.mc_dropout import deterministic_dropout
from rayfal.scoring.two_pass import attack_seed, jin_batch_terms, score_pool_jin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stacked(n: int, seed: int, classes: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(classes), size=(n, 3)).transpose(0, 2, 1)


def _z(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / v.std()  # population std, Eq. 4's N(.)


# ---------------------------------------------------------------------------- maths, no Ray


def test_scores_are_eq4_with_global_moments_and_ablations_single_terms() -> None:
    n = 50
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    group = np.zeros(n, np.int64)
    probs = _stacked(n, 0)
    i_std, i_rob = jin_terms(probs)
    expected = {"jin": _z(i_std) + _z(i_rob), "jin_std": _z(i_std), "jin_rob": _z(i_rob)}
    for name, want in expected.items():
        strat = make_strategy(name, seed=0).prepare_global(ScoreBatch(ids, group, probs))
        # scored in small batches, each row still gets the *global* z-score
        got = np.concatenate([strat.score(ScoreBatch(ids[s:s + 7], group[s:s + 7],
                                                     probs[s:s + 7])) for s in range(0, n, 7)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)
        top = select_in_memory(make_strategy(name, seed=0), ids, group, 8, probs=probs,
                               batch_size=5)
        assert set(top.tolist()) == set(ids[np.argsort(-want)[:8]].tolist()), name
    # the ablations rank exactly like their raw term (z-normalisation is monotone)
    assert set(select_in_memory(make_strategy("jin_rob", seed=0), ids, group, 8,
                                probs=probs).tolist()) == set(ids[np.argsort(-i_rob)[:8]])
    # and the joint score is not just one of them on this pool
    assert not np.array_equal(np.argsort(-expected["jin"])[:8], np.argsort(-i_std)[:8])


def test_per_batch_normalisation_would_change_the_query() -> None:
    """Guard for Eq. 4's *global* N(.): two batches with different spreads."""
    n = 40
    ids = np.arange(n, dtype=np.int64)
    group = np.zeros(n, np.int64)
    probs = _stacked(n, 3)
    i_std, i_rob = jin_terms(probs)
    i_std[:20] *= 10.0  # not representable via probs: use the maths directly
    glob = _z(i_std) + _z(i_rob)
    per_batch = np.concatenate([_z(i_std[:20]) + _z(i_rob[:20]), _z(i_std[20:]) + _z(i_rob[20:])])
    assert set(np.argsort(-glob)[:6]) != set(np.argsort(-per_batch)[:6])
    strat = make_strategy("jin", seed=0)
    with pytest.raises(ValueError, match="global moments"):
        strat.score(ScoreBatch(ids, group, probs))  # without pass 1 it refuses to score


def test_only_worst_group_rows_are_scored_and_selected() -> None:
    n = 60
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    group = (np.arange(n) % 3 == 0).astype(np.int64)  # 20 rows in group 1
    probs = _stacked(n, 5)
    for name in ("jin", "jin_std", "jin_rob"):
        strat = make_strategy(name, seed=1, worst_group=1)
        out = select_in_memory(strat, ids, group, 10, probs=probs, labelled=ids[:6])
        assert len(out) == 10 and set(group[(out - 1) // 3].tolist()) == {1}
        # moments come from the z* rows only: scores of z* rows match a z*-only pool
        scored = strat.prepare_global(ScoreBatch(ids, group, probs)).score(
            ScoreBatch(ids, group, probs))
        m = group == 1
        only = make_strategy(name, seed=1).prepare_global(ScoreBatch(ids[m], group[m], probs[m]))
        np.testing.assert_allclose(scored[m], only.score(ScoreBatch(ids[m], group[m], probs[m])))
        assert np.all(scored[~m] == OUTSIDE_SCORE)
    # z* smaller than the budget: all of z*, then the rest filled from other groups
    strat = make_strategy("jin", seed=1, worst_group=1)
    out = select_in_memory(strat, ids, group, 25, probs=probs)
    assert (group[(out - 1) // 3] == 1).sum() == 20 and len(set(out.tolist())) == 25


# ---------------------------------------------------------------------------- known answers
# An implementation of Eq. 2-3 written from the paper, independent of rayfal's: plain torch
# forward passes, a plain PGD loop and KL(p || q) = sum_c p_c (log p_c - log q_c).


def _kl(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
    p, q = p.double(), q.double()
    return (p * (p.log() - q.log())).sum(1).numpy()


def _reference_jin_terms(m_s, m_r, x, row_keys, *, eps, alpha, steps, seed, clamp=(0.0, 1.0)):
    """``(KL(p_S(x) || p_R(x)), KL(p_R(x) || p_R(A(x))))``, ``A`` = CE-PGD on ``M_R`` against
    ``M_R``'s predicted label, from the documented row-keyed uniform start in the eps-ball."""
    lo, hi = clamp if clamp is not None else (-np.inf, np.inf)
    with torch.no_grad(), deterministic_dropout():
        p_s, p_r = F.softmax(m_s(x), 1), F.softmax(m_r(x), 1)
    y = p_r.argmax(1)
    start = row_noise(tuple(x.shape[1:]), row_keys, seed, "uniform") * eps
    x_adv = torch.minimum(torch.maximum(x + start, x - eps), x + eps).clamp(lo, hi)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with deterministic_dropout():
            loss = F.cross_entropy(m_r(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(lo, hi)
    with torch.no_grad(), deterministic_dropout():
        p_adv = F.softmax(m_r(x_adv), 1)
    return _kl(p_s, p_r), _kl(p_r, p_adv)


def _linear(w: list[list[float]]) -> torch.nn.Linear:
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
        lin.bias.zero_()
    return lin.eval()


def test_jin_terms_known_answer_on_hand_set_linear_models() -> None:
    """Eq. 2 and 3 on two hand-set 2-class linear models, against the closed form.

    For a 2-class linear model the CE gradient's sign w.r.t. x is ``sign(w_other - w_y)``
    wherever x is, so with ``alpha >= 2 eps`` PGD ends at ``A(x) = x + eps sign(w_other - w_y)``
    whatever the random start. ``M_S`` leans on x1 the *opposite* way to ``M_R``: attacking M_S
    (instead of M_R) moves x towards M_R's confident side, and p_S is far more peaked than p_R
    on some rows, so both a wrong attacked model and a reversed KL change the terms by far more
    than the tolerance (checked below, so the construction cannot silently lose its power)."""
    m_r = _linear([[3.0, 1.5], [-3.0, -1.5]])     # M_R: z1 - z0 = -6 x1 - 3 x2
    m_s = _linear([[-4.0, 1.0], [4.0, -1.0]])     # M_S: z1 - z0 = 8 x1 - 2 x2
    x = torch.tensor([[0.02, -0.01], [-0.20, 0.30], [0.05, -0.10], [0.30, 0.20], [-0.4, -0.3]])
    ids = np.array([11, 3, 42, 7, 100], dtype=np.int64)
    eps, alpha, steps = 0.25, 0.6, 2
    attack = AttackSpec(eps=eps, alpha=alpha, steps=steps, loss="ce", clamp=None)
    got_std, got_rob = jin_batch_terms(m_s, m_r, x, ids, attack=attack, seed=9)

    # by hand: p = softmax(x W^T), y = argmax p_R, A(x) = x + eps sign(w_other - w_y) on M_R
    w_r, w_s = m_r.weight.detach().double(), m_s.weight.detach().double()
    xd = x.double()
    p_r, p_s = F.softmax(xd @ w_r.T, 1), F.softmax(xd @ w_s.T, 1)
    y = p_r.argmax(1)

    def attacked(w: torch.Tensor) -> torch.Tensor:
        return xd + eps * torch.sign(w[1 - y] - w[y])

    p_adv = F.softmax(attacked(w_r) @ w_r.T, 1)
    want_std, want_rob = _kl(p_s, p_r), _kl(p_r, p_adv)
    np.testing.assert_allclose(got_std, want_std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_rob, want_rob, rtol=1e-5, atol=1e-6)
    # the diagnostics' by-product: M_R's (not M_S's) confidence on the benign input
    *terms, conf = jin_batch_terms(m_s, m_r, x, ids, attack=attack, seed=9, return_conf=True)
    np.testing.assert_allclose(terms[1], want_rob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conf, p_r.max(1).values.numpy(), rtol=1e-6, atol=1e-7)
    assert np.abs(p_s.max(1).values.numpy() - conf).max() > 0.1
    # the independent implementation (used against Ray below) agrees with the closed form
    ref_std, ref_rob = _reference_jin_terms(m_s, m_r, x, ids, eps=eps, alpha=alpha, steps=steps,
                                            seed=9, clamp=None)
    np.testing.assert_allclose(ref_std, want_std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref_rob, want_rob, rtol=1e-5, atol=1e-6)
    # the wrong answers are far away: the reversed KLs, and the attack computed on M_S
    wrong = {
        "KL(p_R || p_S)": (_kl(p_r, p_s), want_std),
        "KL(p_R(A(x)) || p_R(x))": (_kl(p_adv, p_r), want_rob),
        "A(x) attacks M_S": (_kl(p_r, F.softmax(attacked(w_s) @ w_r.T, 1)), want_rob),
        "A(x) attacks M_S, read by M_S": (_kl(p_s, F.softmax(attacked(w_s) @ w_s.T, 1)),
                                          want_rob),
    }
    for name, (bad, good) in wrong.items():
        assert np.abs(bad - good).max() > 0.1, name
    # and the attack really moved M_R's prediction on some row (the robust term is not ~0)
    assert want_rob.max() > 0.5 and (p_adv.argmax(1) != y).any()


# ---------------------------------------------------------------------------- Ray Data path


def _write_pool(table, out_dir, n_files: int, order: np.ndarray) -> Pool:
    """The same rows, permuted, in ``n_files`` Parquet shards."""
    import pyarrow as pa

    out_dir.mkdir(parents=True)
    table = table.take(pa.array(order))
    for i, part in enumerate(np.array_split(np.arange(len(order)), n_files)):
        pq.write_table(table.take(pa.array(part)), out_dir / f"part-{i:03d}.parquet")
    return Pool(str(out_dir / "*.parquet"))


@pytest.fixture(scope="module")
def tiny_pool_rows(tmp_path_factory):
    from rayfal.data.sources.glyphs import generate_glyphs

    out = tmp_path_factory.mktemp("jin") / "glyphs"
    generate_glyphs(out, scenario="minority_group", n_pool=72, n_test=8, seed=2,
                    minority_fraction=0.4, shard_rows=72, image_size=8, progress=False)
    pool = Pool(str(out / "pool" / "*.parquet"))
    table = pq.read_table(pool.files[0]) if len(pool.files) == 1 else None
    assert table is not None
    return pool.read_all([S.ROW_ID, pool.feature_column, S.GROUP, S.LABEL]), pool, table


def _models():
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        kw = dict(width=4, hidden=8, dropout=0.5)
        model = build_model("cnn", (3, 8, 8), 2, **kw)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        out.append((model.eval(), (model_spec("cnn", (3, 8, 8), 2, **kw), save_safetensors(sd))))
    return out


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_jin_scores_do_not_depend_on_the_shard_split(ray_session, tiny_pool_rows, tmp_path):
    rows, pool0, table = tiny_pool_rows
    (m_s, w_s), (m_r, w_r) = _models()
    ids = rows[S.ROW_ID].astype(np.int64)
    group = rows[S.GROUP].astype(np.int64)
    labelled = ids[::9]
    z = 1
    params = {"worst_group": z, "eps": 8 / 255, "alpha": 4 / 255, "steps": 2,
              "attack_loss": "ce"}
    results = []
    for k, (files, batch) in enumerate([(1, 64), (4, 9)]):
        order = np.random.default_rng(k).permutation(len(ids))
        pool = _write_pool(table, tmp_path / f"split{k}", files, order)
        res = score_pool_jin(pool, strategy="jin", strategy_params=params, seed=4, round=1,
                             budget=6, labelled=labelled, model_std=w_s, model_rob=w_r,
                             cfg=ScoringConfig(compute="tasks", batch_size=batch))
        results.append(res)
    a, b = results
    sa = dict(zip(a.scored_row_id.tolist(), a.scored_score.tolist(), strict=True))
    sb = dict(zip(b.scored_row_id.tolist(), b.scored_score.tolist(), strict=True))
    assert sa.keys() == sb.keys()
    unl_z = set(ids[(group == z) & ~np.isin(ids, labelled)].tolist())
    assert set(sa) == unl_z and len(unl_z) >= 6  # exactly the unlabelled rows of z*
    np.testing.assert_allclose([sb[i] for i in sa], list(sa.values()), rtol=0, atol=1e-9)
    assert a.moments_std.count == len(unl_z)
    sel_a = make_strategy("jin", seed=4, round=1, **params).select(a.candidates, 6)
    sel_b = make_strategy("jin", seed=4, round=1, **params).select(b.candidates, 6)
    np.testing.assert_array_equal(sel_a, sel_b)
    assert set(sel_a.tolist()) <= unl_z
    # equal to the independent reference of Eq. 2-4 (plain torch PGD on M_R and KLs, in this
    # process, not rayfal's scoring functions), z-normalised over the scored rows
    x = torch.from_numpy(S.to_model_input(rows[pool0.feature_column], pool0.input_shape))
    i_std, i_rob = _reference_jin_terms(m_s, m_r, x, ids, eps=8 / 255, alpha=4 / 255, steps=2,
                                        seed=attack_seed(4, 1))
    m = np.isin(ids, list(unl_z))
    want = (i_std[m] - i_std[m].mean()) / i_std[m].std() + (
        i_rob[m] - i_rob[m].mean()) / i_rob[m].std()
    np.testing.assert_allclose([sa[i] for i in ids[m].tolist()], want, rtol=0, atol=1e-9)
    # the per-row raw terms and M_R's confidence kept for the diagnostics are aligned with
    # scored_row_id (whatever the shard order)
    with torch.no_grad(), deterministic_dropout():
        conf_r = F.softmax(m_r(x), 1).max(1).values.numpy()
    pos = {int(i): k for k, i in enumerate(ids.tolist())}
    for res in (a, b):
        k = np.asarray([pos[int(i)] for i in res.scored_row_id])
        np.testing.assert_allclose(res.scored_i_rob, i_rob[k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.scored_i_std, i_std[k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.scored_conf_r, conf_r[k], rtol=0, atol=1e-6)
    assert set(sel_a.tolist()) == set(ids[m][np.argsort(-want)[:6]].tolist())


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_tiny_jin_campaign_through_the_campaign_layer(ray_session, tmp_path):
    from rayfal.campaign import run_job

    raw = {
        "name": "tiny_jin", "seeds": [0],
        "dataset": {"name": "glyphs", "scenario": "minority_group", "n_pool": 60, "n_test": 40,
                    "image_size": 8, "minority_fraction": 0.4},
        "model": {"width": 4, "hidden": 8},
        "training": {"mode": "trades", "mode_params": {"steps": 1, "eps": 0.03, "alpha": 0.03},
                     "epochs": 1, "min_steps": 2, "batch_size": 16},
        "al": {"initial_labels": 12, "query_size": 4, "rounds": 1, "max_frac": None},
        "scoring": {"compute": "tasks", "batch_size": 16},
        "evaluation": {"mc_samples": 2, "robust": True, "robust_steps": 2, "val_fraction": 0.5,
                       "worst_group_by": "robust_accuracy"},
        "campaigns": [{"strategy": "jin", "params": {"steps": 1}},
                      {"strategy": "group_random"}],
    }
    cfg = config_from_dict(raw)
    df = run_job(cfg, cfg.to_dict(), tmp_path / "run", progress=False)
    grand_df = df[df["campaign"] == "group_random"]
    df = df[df["campaign"] == "jin"].reset_index(drop=True)
    assert list(df["round"]) == [0, 1]
    r0 = df.iloc[0]
    for key in ("F_std", "F_rob", "std_disparity", "rob_group_avg", "rob_acc_group_1"):
        assert np.isfinite(r0[key]), key
    assert r0["worst_group_source"] == "validation" and r0["ms_train_seconds"] > 0
    assert r0["worst_group"] in (0, 1)
    assert r0["jin_rows_scored"] > 0
    rec = json.loads((tmp_path / "run/campaigns/jin/seed_0/rounds/round_000.json").read_text())
    pool = Pool(str(next((tmp_path / "run/data").glob("glyphs-*")) / "pool" / "*.parquet"))
    sel_groups = pool.take(np.asarray(rec["selected"], np.int64), [S.GROUP])[S.GROUP]
    assert len(rec["selected"]) == 4 and set(sel_groups.tolist()) == {rec["worst_group"]}
    assert (tmp_path / "run/campaigns/jin/seed_0/round_000/m_std/model.safetensors").exists()
    # diagnostics: every pick in z* (z* has >= B unlabelled rows), as for G-RAND
    assert rec["jin_pick_share_zstar"] == 1.0 and rec["grand_pick_share_zstar"] == 1.0
    # the overlap with G-RAND from the same state equals the overlap with the G-RAND campaign's
    # own round-0 query (same seed, initial labels, round-0 model, hence the same z*)
    grand = json.loads((tmp_path / "run/campaigns/group_random/seed_0/rounds/round_000.json"
                        ).read_text())
    assert grand["worst_group"] == rec["worst_group"] and len(grand_df) == 2
    a, b = set(rec["selected"]), set(grand["selected"])
    assert rec["jin_grand_jaccard"] == pytest.approx(len(a & b) / len(a | b))
    k = 4 * 4 / rec["jin_rows_scored"]
    assert rec["jin_grand_jaccard_chance"] == pytest.approx(k / (8 - k))
    assert -1.0 <= rec["jin_spearman_rob_conf"] <= 1.0
    assert 0.0 < rec["jin_pick_conf_r_mean"] <= 1.0
    # M_S's clean test accuracy, recomputed here from its checkpoint and the reported test set
    from rayfal.data.splits import validation_mask
    from rayfal.models.checkpoint import load_checkpoint
    from rayfal.models.predict import deterministic_probs

    test = Pool(str(next((tmp_path / "run/data").glob("glyphs-*")) / "test" / "*.parquet"))
    rows = test.read_all([S.ROW_ID, test.feature_column, S.LABEL, S.GROUP])
    keep = ~validation_mask(rows[S.ROW_ID], 0.5)
    xt = torch.from_numpy(S.to_model_input(rows[test.feature_column][keep], test.input_shape))
    m_std = load_checkpoint(tmp_path / "run/campaigns/jin/seed_0/round_000/m_std")[0]
    pred = deterministic_probs(m_std, xt).argmax(1)
    assert rec["ms_std_accuracy"] == pytest.approx(float(np.mean(pred == rows[S.LABEL][keep])))
    for g in (0, 1):
        m = rows[S.GROUP][keep] == g
        assert rec[f"ms_std_acc_group_{g}"] == pytest.approx(
            float(np.mean(pred[m] == rows[S.LABEL][keep][m])))
    assert 0.0 <= rec["mr_std_accuracy"] <= 1.0
    # the reported test set excludes the validation rows
    assert df.iloc[1]["n_labelled"] == 16
