"""The GRAD and GBA job files load, validate and name registered datasets/strategies/modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfal.acquisition import STRATEGIES
from rayfal.config import ConfigError, campaign_training, load_job
from rayfal.data.sources import SOURCES
from rayfal.training.modes import make_loss, needs_group_head

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def _modes(path: Path) -> dict[str, tuple[str, str, dict]]:
    cfg, _ = load_job(path)
    assert len(cfg.seeds) >= 3
    SOURCES.get(cfg.dataset.name)
    out = {}
    for c in cfg.campaigns:
        STRATEGIES.get(c.strategy)
        t = campaign_training(cfg, c)
        make_loss(t.mode, **t.mode_params)  # parameter names accepted by the mode
        out[c.name] = (c.strategy, t.mode, t.mode_params)
    return out


def test_grad_bald_job() -> None:
    modes = _modes(JOBS / "grad_bald.yaml")
    assert modes == {
        "uniform": ("random", "standard", {}),
        "uniform+grad_0.5": ("random", "grad", {"lam": 0.5}),
        "uniform+grad_1": ("random", "grad", {"lam": 1.0}),
        "bald": ("bald", "standard", {}),
        "bald+grad_0.5": ("bald", "grad", {"lam": 0.5}),
        "bald+grad_1": ("bald", "grad", {"lam": 1.0}),
    }
    cfg, _ = load_job(JOBS / "grad_bald.yaml")
    assert cfg.dataset.name == "glyphs" and cfg.dataset.scenario == "sensitive_attribute"


def test_gba_colored_mnist_job() -> None:
    modes = _modes(JOBS / "gba_colored_mnist.yaml")
    assert [m for _, m, _ in modes.values()] == ["standard", "grad", "gba", "grad", "gba"]
    assert [needs_group_head(m) for _, m, _ in modes.values()] == [False, True, True, True, True]
    assert [p.get("lam") for _, _, p in modes.values()] == [None, 1.0, 1.0, 0.1, 0.1]
    cfg, _ = load_job(JOBS / "gba_colored_mnist.yaml")
    assert cfg.dataset.name == "colored_mnist" and 0.9 <= cfg.dataset.skew < 1
    assert cfg.dataset.image_size % 8 == 0  # the CNN needs sides divisible by 8
    with pytest.raises(ConfigError, match="dataset.skew"):
        load_job(JOBS / "gba_colored_mnist.yaml", ["dataset.skew=1.5"])
    with pytest.raises(ConfigError, match="dataset.image_size"):
        load_job(JOBS / "gba_colored_mnist.yaml", ["dataset.image_size=16"])
