"""``training.warm_start``: round r > 0 starts from round r-1's trained weights
(:mod:`rayfal.campaign.warm_start`), and ``--resume`` after a crash reproduces the
uninterrupted run exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from rayfal.campaign.warm_start import round_init_state
from rayfal.models import build_model
from rayfal.models.checkpoint import CheckpointError, model_spec, save_checkpoint

SPEC = model_spec("mlp", (3,), 2, hidden=4)


def _weights(seed: int) -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in build_model("mlp", (3,), 2, hidden=4)
             .state_dict().items()}
    return state, save_safetensors(state)


def test_round_init_state_unit(tmp_path: Path) -> None:
    _, init = _weights(0)
    trained, trained_bytes = _weights(1)
    save_checkpoint(tmp_path / "round_000", trained, SPEC)
    # off, or round 0: the initial state, whatever is on disk
    for warm, r in ((False, 0), (False, 1), (False, 5), (True, 0)):
        assert round_init_state(tmp_path, r, init, warm_start=warm, spec=SPEC) is init
    # on: round 1 starts from round 0's checkpoint, byte for byte
    got = round_init_state(tmp_path, 1, init, warm_start=True, spec=SPEC)
    assert got == (tmp_path / "round_000" / "model.safetensors").read_bytes()
    assert got != init
    # a second model of the round (JIN's M_S) from its own sub-directory
    save_checkpoint(tmp_path / "round_000" / "m_std", _weights(2)[0], SPEC)
    sub = round_init_state(tmp_path, 1, init, warm_start=True, spec=SPEC, checkpoint="m_std")
    assert sub == (tmp_path / "round_000" / "m_std" / "model.safetensors").read_bytes()
    # never a silent fall-back to the initial weights
    with pytest.raises(FileNotFoundError, match=r"round 2 starts from round 1.*round_001"):
        round_init_state(tmp_path, 2, init, warm_start=True, spec=SPEC)
    other = model_spec("mlp", (3,), 2, hidden=5)
    with pytest.raises(ValueError, match="another job"):
        round_init_state(tmp_path, 1, init, warm_start=True, spec=other)
    (tmp_path / "round_000" / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        round_init_state(tmp_path, 1, init, warm_start=True, spec=SPEC)


# ---------------------------------------------------------------------------- a real campaign


def _job(glyph_data: Path, warm_start: bool):
    from rayfal.config import config_from_dict

    raw = {
        "name": "warm",
        "seeds": [0],
        "dataset": {"name": "parquet", "pool": str(glyph_data / "pool" / "*.parquet"),
                    "test": str(glyph_data / "test" / "*.parquet")},
        "model": {"width": 4, "hidden": 8},
        "training": {"epochs": 1, "min_steps": 3, "batch_size": 16, "warm_start": warm_start,
                     "optimizer": "sgd", "lr": 0.05, "schedule": "cosine"},
        "al": {"initial_labels": 10, "query_size": 6, "rounds": 2, "max_frac": None},
        "scoring": {"mc_samples": 2, "batch_size": 128},
        "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "random"}],
    }
    cfg = config_from_dict(raw)
    return cfg, cfg.to_dict()


def _records(run_dir: Path) -> list[dict]:
    paths = sorted(run_dir.glob("campaigns/*/seed_*/rounds/round_*.json"))
    return [{k: v for k, v in json.loads(p.read_text()).items() if not k.endswith("_seconds")}
            for p in paths]


def _checkpoints(run_dir: Path) -> list[bytes]:
    sdir = run_dir / "campaigns" / "random" / "seed_0"
    return [(sdir / f"round_{r:03d}" / "model.safetensors").read_bytes() for r in range(3)]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_warm_start_campaign_and_resume(ray_session, glyph_data, tmp_path, monkeypatch) -> None:
    from rayfal import campaign as driver
    from rayfal.campaign import campaign as campaign_mod

    real_fit = campaign_mod.fit_round
    real_eval = campaign_mod.evaluate_round
    seen: list[tuple[Path, bytes, bytes]] = []  # (round dir, init_state, its checkpoint)

    def spy_fit(**kw):
        logs = real_fit(**kw)
        seen.append((kw["out_dir"], kw["init_state"],
                     (kw["out_dir"] / "model.safetensors").read_bytes()))
        return logs

    monkeypatch.setattr(campaign_mod, "fit_round", spy_fit)

    # 1) uninterrupted, warm start: round 0 from the initial weights, round r from round r-1's
    cfg, resolved = _job(glyph_data, warm_start=True)
    ref = tmp_path / "ref"
    driver.run_job(cfg, resolved, ref, progress=False)
    assert [d.name for d, _, _ in seen] == ["round_000", "round_001", "round_002"]
    init = seen[0][1]
    for r in (1, 2):
        assert seen[r][1] == seen[r - 1][2] != init  # the previous round's trained weights
    ref_ckpts = _checkpoints(ref)
    assert ref_ckpts == [c for _, _, c in seen]

    # the same job without warm start resets every round (today's behaviour)
    seen.clear()
    cfg0, resolved0 = _job(glyph_data, warm_start=False)
    driver.run_job(cfg0, resolved0, tmp_path / "reset", progress=False)
    assert [s[1] for s in seen] == [init] * 3
    assert _checkpoints(tmp_path / "reset")[2] != ref_ckpts[2]

    # 2) a crash in round 2 after its training wrote round_002's checkpoint, then --resume:
    # round 2 retrains from round_001's checkpoint and everything equals the uninterrupted run
    calls = {"n": 0}

    def flaky_eval(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_eval(*a, **kw)

    monkeypatch.setattr(campaign_mod, "evaluate_round", flaky_eval)
    crash = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated crash"):
        driver.run_job(cfg, resolved, crash, progress=False)
    sdir = crash / "campaigns" / "random" / "seed_0"
    assert (sdir / "round_002" / "model.safetensors").exists()
    assert not (sdir / "rounds" / "round_002.json").exists()
    seen.clear()
    driver.run_job(cfg, resolved, crash, resume=True, progress=False)
    assert [d.name for d, _, _ in seen] == ["round_002"]
    assert seen[0][1] == ref_ckpts[1]
    assert _checkpoints(crash) == ref_ckpts
    assert _records(crash) == _records(ref)
