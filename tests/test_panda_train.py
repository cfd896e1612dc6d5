"""PANDA meta-training as a Ray Train job (rayfal.acquisition.panda.train), its settings and
checkpoints, the data-parallel / sequential-learner pieces of rayfal.acquisition.panda.meta, and
the ``panda`` strategy fed a meta-trained policy (PoolView.policy)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from rayfal.acquisition.panda import checkpoint as panda_checkpoint
from rayfal.acquisition.panda import train as panda_train
from rayfal.acquisition.panda.checkpoint import latest_checkpoint
from rayfal.acquisition.panda.meta import (
    InnerConfig,
    MetaData,
    fbs_prox_step,
    hard_picks,
    inner_fit,
    meta_train,
    simulate,
)
from rayfal.acquisition.panda.policy import (
    PandaPolicy,
    gumbel_noise,
    load_policy,
    relaxed_top_b,
    relaxed_top_b_picks,
)
from rayfal.acquisition.panda.settings import PandaSettings
from rayfal.acquisition.panda.train import train_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    g = rng.integers(0, 2, n)
    x[:, 2] += g  # the group is visible in the features: disparities are not ~0
    y = ((x[:, 0] + 0.5 * x[:, 2]) > 0.3).astype(np.int64)
    return x, y, g


SETTINGS = PandaSettings(d_model=8, n_heads=2, dim_feedforward=16, pretrain_steps=3,
                         pretrain_set_size=24, steps=5, lr=3e-2, pool_size=24, val_size=32,
                         budget=4, rho=0.05, prox_steps=2, inner_steps=2, checkpoint_every=2,
                         report_every=100, keep_checkpoints=0, seed=3)


def _state(path) -> dict[str, torch.Tensor]:
    return load_policy(path)[0].state_dict()


def _assert_same(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=atol, rtol=1e-5, err_msg=k)


# ----------------------------------------------------------------------------- train_policy


def test_crash_then_resume_equals_uninterrupted_run(tmp_path, monkeypatch) -> None:
    data = _data()
    full = train_policy(data, SETTINGS, tmp_path / "full", progress=False)
    meta = json.loads((full / "policy.json").read_text())
    assert meta["step"] == 5 and meta["settings"]["steps"] == 5
    assert meta["record"]["prox_steps"] >= 0 and np.isfinite(meta["record"]["loss"])
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4, 5]

    # crash in step 4 (after the checkpoint at 2 and the record of 3)
    real = panda_train.meta_train

    def crashing(*args, on_step, **kw):
        def hook(record):
            on_step(record)
            if record["step"] == 3:
                raise KeyboardInterrupt("simulated crash")
        return real(*args, on_step=hook, **kw)

    monkeypatch.setattr(panda_train, "meta_train", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_policy(data, SETTINGS, tmp_path / "crash", progress=False)
    assert latest_checkpoint(tmp_path / "crash").name == "step_00000002"
    assert not (tmp_path / "crash" / "policy.json").exists()
    monkeypatch.setattr(panda_train, "meta_train", real)
    out = train_policy(data, SETTINGS, tmp_path / "crash", progress=False)
    _assert_same(_state(out), _state(full))
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # step 3's stale record replaced, not duplicated

    # a shorter run, then the same run extended: the same policy as the 5-step run
    short = train_policy(data, SETTINGS.replace(steps=3), tmp_path / "ext",
                         progress=False)
    assert json.loads((short / "policy.json").read_text())["step"] == 3
    _assert_same(_state(train_policy(data, SETTINGS, tmp_path / "ext", progress=False)),
                 _state(full))

    # complete: returns without training; other core settings or data: refused
    monkeypatch.setattr(panda_train, "meta_train", None)
    assert train_policy(data, SETTINGS, tmp_path / "full", progress=False) == full
    with pytest.raises(ValueError, match="settings differ.*rho"):
        train_policy(data, SETTINGS.replace(rho=0.1), tmp_path / "full")
    with pytest.raises(ValueError, match="D0 differs"):
        train_policy(_data(seed=1), SETTINGS, tmp_path / "full")


def test_checkpoint_is_safetensors_and_json_with_exact_optimizer_state(tmp_path) -> None:
    policy, params, opt = panda_train.build_policy(SETTINGS, 3)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        policy(x).pow(2).sum().backward()
        opt.step()
    path = panda_checkpoint.write_checkpoint(tmp_path, 7, policy, opt, SETTINGS, "abc", {"loss": 1.0})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["optimizer.safetensors", "policy.json", "policy.safetensors",
                     "train_state.json"]
    for name in names:  # no pickle: JSON text or safetensors (8-byte header length + JSON)
        raw = (path / name).read_bytes()
        assert not raw.startswith(b"\x80"), name
        if name.endswith(".json"):
            json.loads(raw)
        else:
            header = int.from_bytes(raw[:8], "little")
            json.loads(raw[8 : 8 + header])
    state = json.loads((path / "train_state.json").read_text())
    assert state["step"] == 7 and state["data_fingerprint"] == "abc"
    assert load_policy(path)[1]["step"] == 7

    policy2, _, opt2 = panda_train.build_policy(SETTINGS.replace(seed=99), 3)
    torch.manual_seed(12345)  # the checkpoint's torch RNG state is restored over this
    assert panda_checkpoint.load_checkpoint(path, policy2, opt2) == 7
    _assert_same(policy2.state_dict(), policy.state_dict(), atol=0)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx in a["state"]:
        for key in a["state"][idx]:
            assert torch.equal(a["state"][idx][key], b["state"][idx][key])


def test_settings_validation_and_aliases(tmp_path) -> None:
    assert PandaSettings(disparity="error_rate_balance").disparity == "eb"
    with pytest.raises(ValueError, match="unknown PANDA setting"):
        PandaSettings.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="budget"):
        PandaSettings(budget=10, pool_size=5)
    with pytest.raises(ValueError, match="mode"):
        PandaSettings(inner_mode="online")
    with pytest.raises(ValueError, match="pool_size"):
        train_policy(_data(40), SETTINGS, tmp_path / "x")


def test_cli_panda_train_on_npz(tmp_path, capsys) -> None:
    from rayfal.cli import main

    x, y, g = _data()
    np.savez(tmp_path / "d0.npz", x=x, y=y, group=g)
    rc = main(["panda-train", "--data", str(tmp_path / "d0.npz"), "--out", str(tmp_path / "p"),
               "--no-progress", "--set", "steps=1", "--set", "pretrain_steps=1",
               "--set", "pool_size=24", "--set", "val_size=24", "--set", "budget=3",
               "--set", "d_model=8", "--set", "n_heads=2", "--set", "disparity=eb"])
    assert rc == 0 and "step 1" in capsys.readouterr().out
    policy, meta = load_policy(tmp_path / "p")
    assert meta["settings"]["disparity"] == "eb" and policy.config["d_model"] == 8


# ----------------------------------------------------------------------------- data parallel


def test_data_parallel_meta_train_matches_one_worker() -> None:
    """Two "workers" (threads, a barrier all-reduce) over 2 tasks per step = one worker doing
    both tasks: the gradient/prox reductions of meta_train are the data-parallel ones."""
    x, y, g = _data(120, 4)
    d0 = MetaData.from_arrays(x, y, g)
    kw = dict(budget=3, steps=3, pool_size=20, val_size=24, rho=0.0, lr=2e-2, seed=1,
              prox_steps=2, tasks_per_step=2, progress=False, train_encoder=True,
              inner=InnerConfig(steps=2))

    def policy() -> PandaPolicy:
        torch.manual_seed(0)
        return PandaPolicy(3, d_model=8, n_heads=2, dim_feedforward=16)

    single = policy()
    hist1 = meta_train(single, d0, **kw)

    barrier = threading.Barrier(2)
    slots: list = [None, None]

    def allreduce(t: torch.Tensor, op: str, rank: int) -> torch.Tensor:
        slots[rank] = t.detach().clone()
        barrier.wait()
        out = slots[0] + slots[1] if op == "sum" else torch.maximum(slots[0], slots[1])
        barrier.wait()
        return out

    policies = [policy(), policy()]
    hists: list = [None, None]

    def worker(rank: int) -> None:
        hists[rank] = meta_train(policies[rank], d0, rank=rank, world_size=2,
                                 allreduce=lambda t, op: allreduce(t, op, rank), **kw)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert hists[0] is not None and hists[1] is not None
    for pol in policies:
        _assert_same(pol.state_dict(), single.state_dict(), atol=1e-5)
    for key in ("loss", "disparity", "prox_initial", "prox_final"):
        assert hists[0][-1][key] == pytest.approx(hist1[-1][key], rel=1e-4, abs=1e-6)
    assert all(h["prox_steps"] == 2 for h in hist1)  # rho = 0: the prox step always runs


def test_prox_step_on_a_meta_batch_uses_only_violated_tasks() -> None:
    """chi~ = mean over tasks of Delta_t * 1[Delta_t >= rho] (§3.2 smoothed indicator)."""
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    # task 0: disparity theta0^2 (violated at rho=0.5); task 1: 0.1*theta1^2 (satisfied)
    info = fbs_prox_step([theta], lambda: torch.stack([theta[0] ** 2, 0.1 * theta[1] ** 2]),
                         0.5, weight=1.0, steps=1, lr=0.5, n_tasks=2)
    # one step: grad = weight * d(chi~)/d theta + (theta - theta_hat) = [2*1/2, 0] + 0
    np.testing.assert_allclose(theta.detach().numpy(), [0.5, 1.0])
    assert info["initial"] == pytest.approx(1.0) and info["final"] == pytest.approx(0.25)
    assert info["satisfied"] and info["steps"] == 1


# ----------------------------------------------------------------------------- sequential learner


def test_sequential_inner_mode_is_algorithm_1_lines_10_to_12() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([1, 0, 1])
    cfg = InnerConfig(steps=1, lr=0.5, mode="sequential")
    w, b = inner_fit(x, y, hard_picks([2, 1], 3), cfg)
    # by hand: one SGD step on item 2, then one on item 1
    w_ref, b_ref = torch.zeros(2, 2), torch.zeros(2)
    for j in (2, 1):
        p = torch.softmax(x[j] @ w_ref + b_ref, -1)
        r = p - torch.nn.functional.one_hot(y[j], 2).float()
        w_ref, b_ref = w_ref - 0.5 * torch.outer(x[j], r), b_ref - 0.5 * r
    np.testing.assert_allclose(w.numpy(), w_ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(b.numpy(), b_ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="picks"):
        inner_fit(x, y, torch.ones(3), cfg)
    # the order matters in sequential mode, not in batch mode
    w2, _ = inner_fit(x, y, hard_picks([1, 2], 3), cfg)
    assert not torch.allclose(w, w2)
    batch = InnerConfig(steps=1, lr=0.5)
    torch.testing.assert_close(inner_fit(x, y, hard_picks([2, 1], 3), batch)[0],
                               inner_fit(x, y, hard_picks([1, 2], 3), batch)[0])

    # relaxed picks: rows sum to 1, their sum is relaxed_top_b, gradients reach the logits
    logits = torch.randn(3, requires_grad=True)
    noise = gumbel_noise((3,), generator=torch.Generator().manual_seed(0))
    picks = relaxed_top_b_picks(logits, 2, 0.5, noise=noise)
    np.testing.assert_allclose(picks.sum(-1).detach().numpy(), [1.0, 1.0], atol=1e-6)
    torch.testing.assert_close(picks.sum(0), relaxed_top_b(logits, 2, 0.5, noise=noise))
    sim = simulate(None, x, y, x, y, torch.tensor([0, 1, 0]), 2, inner=cfg, weights=picks)
    sim.loss.backward()
    assert logits.grad.abs().sum() > 0 and sim.weights.shape == (3,)


@pytest.mark.ray
def test_two_ray_train_workers_match_local_mode(ray_session, tmp_path) -> None:
    """The only multi-worker PANDA Ray Train run (runs in `make test`): kept small (2 meta-steps,
    one pretraining step, one checkpoint), so its cost is the worker group's start-up;
    the all-reduced meta-gradient must give local mode's policy."""
    s = SETTINGS.replace(tasks_per_step=2, steps=2, pretrain_steps=1, checkpoint_every=2)
    local = train_policy(_data(), s, tmp_path / "local", progress=False)
    workers = train_policy(_data(), s, tmp_path / "workers", num_workers=2, progress=False)
    _assert_same(_state(workers), _state(local), atol=1e-4)


# ----------------------------------------------------------------------------- the strategy


def test_panda_params_are_checked_up_front() -> None:
    from rayfal.acquisition import StrategyParamsError, make_strategy

    with pytest.raises(StrategyParamsError, match="unknown parameter 'polcy'"):
        make_strategy("panda", seed=0, polcy="x")
    for bad in (0, -3, True, 2.5):
        with pytest.raises(StrategyParamsError, match="subsample"):
            make_strategy("panda", seed=0, subsample=bad)
    with pytest.raises(StrategyParamsError, match="unknown PANDA setting.*stepz"):
        make_strategy("panda", seed=0, train={"stepz": 3})
    with pytest.raises(StrategyParamsError, match="train.steps"):
        make_strategy("panda", seed=0, train={"steps": -1})
    with pytest.raises(StrategyParamsError, match="budget"):
        make_strategy("panda", seed=0, train={"pool_size": 10, "budget": 20})
    assert make_strategy("panda", seed=0, subsample=None).params.subsample is None


def test_meta_training_settings_and_policy_dir_name() -> None:
    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.panda import PANDA_DEFAULTS, policy_dir_name

    assert make_strategy("panda", seed=0, policy="some/dir",
                         train={"steps": 3}).meta_training_settings(400) is None
    strat = make_strategy("panda", seed=0, train={"steps": 3, "disparity": "eb"})
    got = strat.meta_training_settings(400)
    assert got == {**PANDA_DEFAULTS, "budget": 400, "steps": 3, "disparity": "eb"}
    PandaSettings.from_dict(got)  # a valid settings dict for train_policy
    # a budget from params.train wins over the campaign's total
    assert make_strategy("panda", seed=0, train={"budget": 7}).meta_training_settings(400)[
        "budget"] == 7
    with pytest.raises(ValueError, match="budget \\(4000\\) must be in 1..pool_size"):
        strat.meta_training_settings(4000)
    name = policy_dir_name(got)
    assert name.startswith("policy-") and len(name) == len("policy-") + 12
    assert policy_dir_name(dict(reversed(list(got.items())))) == name  # key order irrelevant
    assert policy_dir_name(strat.meta_training_settings(300)) != name


def _tiny_pool(tmp_path, n: int = 60):
    import pyarrow.parquet as pq

    from rayfal.acquisition.view import LabelledSet
    from rayfal.data import schema as S
    from rayfal.data.pool import Pool

    x, y, g = _data(n, seed=5)
    ids = np.arange(n, dtype=np.int64) * 13 + 5
    (tmp_path / "pool").mkdir()
    pq.write_table(S.feature_table(ids, x, g, y), tmp_path / "pool" / "part-0.parquet")
    lab = LabelledSet(ids[:10], x[:10], y[:10], g[:10])
    return Pool(str(tmp_path / "pool" / "*.parquet")), lab, ids


def test_strategy_uses_a_policy_trained_by_train_policy(tmp_path) -> None:
    """The campaign's path: settings from the strategy, train_policy, the loaded policy in
    PoolView.policy; the same policy given as params.policy selects the same rows."""
    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.panda import policy_dir_name
    from rayfal.acquisition.view import PoolView

    pool, lab, ids = _tiny_pool(tmp_path)
    train = {**SETTINGS.to_dict(), "steps": 2}
    strat = make_strategy("panda", seed=3, subsample=30, train=train)
    settings = strat.meta_training_settings(total_budget=12)
    assert settings["budget"] == 4  # train's budget wins
    out = train_policy(_data(), settings, tmp_path / "panda" / policy_dir_name(settings))
    policy, meta = load_policy(out)
    assert meta["step"] == 2

    def view(policy=None, work_dir=None) -> PoolView:
        return PoolView(pool=pool, labelled=lab, model=None, budget=6, seed=3, policy=policy,
                        work_dir=work_dir, chunk_rows=7)

    picked = strat.select_pool(view(policy), 6)
    assert len(picked) == 6 == len(np.unique(picked))
    assert np.isin(picked, ids).all() and not np.isin(picked, lab.row_id).any()
    by_path = make_strategy("panda", seed=3, subsample=30, policy=str(out))
    assert by_path.meta_training_settings(12) is None
    np.testing.assert_array_equal(by_path.select_pool(view(), 6), picked)
    # view.policy wins over params.policy; the ranking is stored once in work_dir
    work = tmp_path / "work"
    work.mkdir()
    np.testing.assert_array_equal(by_path.select_pool(view(policy, work), 6), picked)
    assert json.loads((work / "panda_ranking.json").read_text())["row_id"][:6] == picked.tolist()
    with pytest.raises(ValueError, match="needs a meta-trained policy"):
        strat.select_pool(view(), 6)
