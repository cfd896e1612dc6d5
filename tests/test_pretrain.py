"""The glyph-trunk: a disjoint pretraining set, a seeded and cached Ray Train pretraining, and
models built from it (loaded trunk, frozen trunk, unchanged default path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rayfal.campaign import pretrain as cp
from rayfal.config.models import ModelConfig
from rayfal.data.sources.glyphs import FONT_FILES, FOUR_CLASS_CHARS
from rayfal.data.sources.glyphs import pretrain as gp
from rayfal.models import pretrain as mp
from rayfal.models.checkpoint import build_from_config, model_from_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (3, 16, 16)
TINY = {"steps": 200, "n_rows": 600, "n_test": 200, "batch_size": 32, "lr": 3e-3, "seed": 3}


def tiny_cfg(**over) -> ModelConfig:
    kwargs = {"width": 16, "hidden": 32, "dropout": 0.1, "pretrained": "glyph-trunk",
              "pretrain": TINY, **over}
    return ModelConfig(**kwargs)


# ----------------------------------------------------------------------------- the data


def test_pretrain_set_is_disjoint_from_every_campaign_scenario():
    campaign_chars = {"a", "d", *FOUR_CLASS_CHARS}  # generate_glyphs' defaults
    assert set(gp.CAMPAIGN_CHARS) == campaign_chars
    assert not set(gp.PRETRAIN_CHARS) & campaign_chars
    assert len(set(gp.PRETRAIN_CHARS)) == len(gp.PRETRAIN_CHARS) == 10
    assert not set(gp.PRETRAIN_FONTS) & set(FONT_FILES)
    if gp.pretrain_fonts() != ["<pillow-default>"]:
        assert set(gp.pretrain_fonts()) <= set(gp.PRETRAIN_FONTS)
    # every jittered pretraining hue stays away from every jittered campaign hue
    gap = min(gp.hue_distance(a, b) for a in gp.PRETRAIN_HUES for b in gp.CAMPAIGN_HUES)
    assert gap > 2 * gp.HUE_JITTER + 0.02


def test_pretrain_set_written_balanced_and_deterministic(tmp_path):
    m1 = gp.write_pretrain_set(tmp_path / "a", n_train=80, n_test=40, image_size=16, seed=1)
    gp.write_pretrain_set(tmp_path / "b", n_train=80, n_test=40, image_size=16, seed=1)
    for split in ("train", "test"):
        a = (tmp_path / "a" / split / "part-00000.parquet").read_bytes()
        assert a == (tmp_path / "b" / split / "part-00000.parquet").read_bytes()
    train = gp.read_pretrain_split(tmp_path / "a", "train")
    assert train["x"].shape == (80, 16 * 16 * 3)
    assert np.bincount(train["y"], minlength=10).tolist() == [8] * 10
    assert set(np.unique(train["group"])) == {0, 1, 2, 3}
    assert m1["class_names"] == list(gp.PRETRAIN_CHARS)
    assert m1["fonts_disjoint"] == (gp.pretrain_fonts() != ["<pillow-default>"])
    test = gp.read_pretrain_split(tmp_path / "a", "test")
    assert test["x"].shape == (40, 16 * 16 * 3)


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_checks():
    m = ModelConfig()
    assert m.pretrained is None and m.freeze_trunk is False
    with pytest.raises(ValueError, match="pretrained"):
        ModelConfig(freeze_trunk=True)
    with pytest.raises(ValueError, match="cnn"):
        ModelConfig(name="mlp", pretrained="glyph-trunk")
    with pytest.raises(ValueError):
        ModelConfig(pretrained="imagenet")


def test_default_config_takes_the_old_path(tmp_path):
    """``pretrained: None``: the same spec and weights as building the spec directly."""
    torch.manual_seed(5)
    model, spec = build_from_config(ModelConfig(width=8, hidden=16), SHAPE, 2,
                                    run_dir=tmp_path)
    assert set(spec) == {"name", "input_shape", "num_classes", "kwargs"}
    torch.manual_seed(5)
    ref = model_from_spec(spec)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert all(p.requires_grad for p in model.parameters())
    assert not (tmp_path / mp.PRETRAINED_DIR).exists()


def test_pretrained_needs_a_run_dir():
    with pytest.raises(ValueError, match="needs the run directory and the pretrained trunk"):
        build_from_config(tiny_cfg(), SHAPE, 2)


# ----------------------------------------------------------------------------- pretraining


@pytest.fixture(scope="module")
def trunk(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, cp.ensure_pretrained_trunk(tiny_cfg(), SHAPE, run_dir)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_pretraining_reports_above_chance_accuracy(trunk):
    run_dir, directory = trunk
    assert directory.parent == run_dir / "pretrained"
    assert directory.name == f"glyph-trunk-{mp.settings_hash(mp.pretrain_settings(tiny_cfg(), SHAPE))}"
    meta = json.loads((directory / mp.TRUNK_META).read_text())
    assert meta["chance_accuracy"] == pytest.approx(0.1)
    assert meta["n_test"] == TINY["n_test"]
    assert meta["test_accuracy"] > 0.25, meta["test_accuracy"]
    assert meta["train_logs"]["train_steps"] == TINY["steps"]
    assert meta["data"]["chars"] == list(gp.PRETRAIN_CHARS)
    assert (directory / "data" / "dataset.json").is_file()
    assert (directory / "classifier" / "model.safetensors").is_file()
    assert not (directory / ".ray_train").exists()
    assert not list(directory.parent.glob(".*tmp-*"))  # nothing half-written left behind
    with open(directory / mp.TRUNK_WEIGHTS, "rb") as fh:  # safetensors, not a pickle
        header = fh.read(9)
    assert header[8:9] == b"{"


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_pretraining_is_cached_and_reproducible(trunk, tmp_path, monkeypatch):
    run_dir, directory = trunk
    import rayfal.training.distributed as dist

    def no_training(**_):
        raise AssertionError("a cache hit must not train")

    with monkeypatch.context() as m:
        m.setattr(dist, "fit_round", no_training)
        assert cp.ensure_pretrained_trunk(tiny_cfg(), SHAPE, run_dir) == directory
        # other settings -> another directory (and so no cache hit)
        other = tiny_cfg(pretrain={**TINY, "seed": 4})
        assert mp.trunk_dir(other, SHAPE, run_dir) != directory
        with pytest.raises(AssertionError, match="cache hit"):
            cp.ensure_pretrained_trunk(other, SHAPE, run_dir)
    assert not list((run_dir / "pretrained").glob(".*tmp-*"))
    # the same settings in a fresh run directory: the very same trunk bytes
    again = cp.ensure_pretrained_trunk(tiny_cfg(), SHAPE, tmp_path)
    assert again.name == directory.name
    assert (again / mp.TRUNK_WEIGHTS).read_bytes() == (directory / mp.TRUNK_WEIGHTS).read_bytes()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_built_model_has_the_pretrained_trunk(trunk):
    run_dir, directory = trunk
    state, meta = mp.read_trunk(directory)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, spec = build_from_config(tiny_cfg(), SHAPE, 2,
                                run_dir=run_dir, trunk_dir=directory)
        models.append(model)
        for k, v in state.items():
            assert torch.equal(model.trunk.state_dict()[k], v), k
        assert spec["pretrained"] == {"kind": "glyph-trunk", "hash": meta["hash"],
                                      "dir": f"pretrained/{directory.name}",
                                      "test_accuracy": meta["test_accuracy"]}
        assert "freeze_trunk" not in spec
        # the spec rebuilds the architecture (the pretrained keys are extra)
        model_from_spec(spec).load_state_dict(model.state_dict())
    # the head is the seed's own random initialisation
    assert not torch.equal(models[0].head[1].weight, models[1].head[1].weight)
    # with a group head (GRAD/GBA) the trunk is loaded too
    fair, _ = build_from_config(tiny_cfg(), SHAPE, 2, num_groups=2,
                                run_dir=run_dir, trunk_dir=directory)
    for k, v in state.items():
        assert torch.equal(fair.trunk.state_dict()[k], v), k


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_freeze_trunk_keeps_the_trunk_through_training(trunk):
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save as save_bytes

    from rayfal.training.loop import LoopSettings, train_model
    from rayfal.training.modes import make_loss

    run_dir, directory = trunk
    state, _ = mp.read_trunk(directory)
    torch.manual_seed(0)
    _, spec = build_from_config(tiny_cfg(freeze_trunk=True), SHAPE, 2,
                                run_dir=run_dir, trunk_dir=directory)
    assert spec["freeze_trunk"] is True
    # as a training worker does: rebuild from the spec, load the weights, freeze
    torch.manual_seed(0)
    built, _ = build_from_config(tiny_cfg(freeze_trunk=True), SHAPE, 2,
                                run_dir=run_dir, trunk_dir=directory)
    model = model_from_spec(spec)
    model.load_state_dict(load_bytes(save_bytes(
        {k: v.contiguous() for k, v in built.state_dict().items()})))
    mp.freeze_trunk(model)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    rng = np.random.default_rng(0)
    tensors = {"x": torch.from_numpy(rng.random((40, *SHAPE), dtype=np.float32)),
               "y": torch.from_numpy(rng.integers(0, 2, 40)),
               "group": torch.zeros(40, dtype=torch.int64)}
    settings = LoopSettings(epochs=1, min_steps=10, batch_size=8, lr=1e-2, weight_decay=1e-3,
                            seed=0)
    train_model(model, tensors, make_loss("standard"), settings)
    for k, v in state.items():  # weights and batch-norm statistics unchanged
        assert torch.equal(model.trunk.state_dict()[k], v), k
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())
    # without freezing the same training moves the trunk
    free = model_from_spec(spec)
    free.load_state_dict(built.state_dict())
    train_model(free, tensors, make_loss("standard"), settings)
    assert any(not torch.equal(free.trunk.state_dict()[k], v) for k, v in state.items())


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_campaign_starts_from_the_pretrained_frozen_trunk(ray_session, tmp_path):
    """Through the campaign layer and Ray Train: every round's model keeps the pretrained
    trunk bit for bit when it is frozen, and the trunk is pretrained once per run dir."""
    from safetensors.torch import load_file

    import rayfal

    job = rayfal.load_job({
        "name": "pre", "seeds": [0],
        "dataset": {"name": "glyphs", "n_pool": 120, "n_test": 60, "image_size": 16},
        "model": {"name": "cnn", "width": 16, "hidden": 32, "dropout": 0.1,
                  "pretrained": "glyph-trunk", "freeze_trunk": True, "pretrain": TINY},
        "training": {"epochs": 1, "min_steps": 5},
        "al": {"initial_labels": 10, "query_size": 5, "rounds": 1, "max_frac": None},
        "scoring": {"mc_samples": 2}, "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "random"}, {"strategy": "bald"}]})
    run = tmp_path / "run"
    rayfal.run(job, run, progress=False, report=False)
    (directory,) = list((run / mp.PRETRAINED_DIR).glob("glyph-trunk-*"))
    trunk, _ = mp.read_trunk(directory)
    for camp in ("random", "bald"):
        for r in (0, 1):
            state = load_file(str(run / f"campaigns/{camp}/seed_0/round_{r:03d}"
                                  / "model.safetensors"))
            for k, v in trunk.items():
                torch.testing.assert_close(state[f"trunk.{k}"], v, rtol=0, atol=0)
