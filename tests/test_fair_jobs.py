"""The GRAD and GBA job files: they load and validate, and the protocol their comments describe
holds in what they build — campaigns of a job differ only in strategy and training mode (paired
comparisons from the same initial labels), every adversarial campaign's loss adds exactly
``lambda x`` the group loss with the lambda of its file, the schedule fits the pool, and a
bad override is refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rayfal.acquisition import STRATEGIES
from rayfal.campaign import initial_selection
from rayfal.campaign.schedule import check_schedule
from rayfal.config import ConfigError, campaign_training, load_job
from rayfal.data.sources import SOURCES
from rayfal.models import build_model
from rayfal.training.modes import make_loss, needs_group_head

JOBS = Path(__file__).resolve().parents[1] / "jobs"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_protocol(name: str, n_groups: int, n_classes: int) -> dict[str, tuple[str, str]]:
    """Load and validate the job; check the paired protocol and each campaign's loss on one
    batch; return ``{campaign: (strategy, mode)}``."""
    cfg, resolved = load_job(JOBS / name)
    assert resolved["name"] == cfg.name and len(cfg.seeds) >= 3
    SOURCES.get(cfg.dataset.name)
    check_schedule(cfg, cfg.dataset.n_pool)  # raises if the labels asked exceed the pool
    base = cfg.training.model_dump()
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    y = torch.arange(16) % n_classes
    group = (torch.arange(16) * 7) % n_groups
    out = {}
    for c in cfg.campaigns:
        STRATEGIES.get(c.strategy)
        t = campaign_training(cfg, c)
        # paired: a campaign overrides nothing but the training mode and its parameters
        diff = {k for k, v in t.model_dump().items() if base[k] != v}
        assert diff <= {"mode", "mode_params"}, (c.name, diff)
        loss_fn = make_loss(t.mode, **t.mode_params)
        grouped = needs_group_head(t.mode)
        model = build_model("cnn", (3, 8, 8), n_classes, width=2, hidden=8,
                            num_groups=n_groups if grouped else None).train()
        torch.manual_seed(1)
        loss, logs = loss_fn(model, {"x": x, "y": y, "group": group})
        assert torch.isfinite(loss), c.name
        if t.mode == "standard":
            assert not grouped and loss.item() == pytest.approx(logs["ce"], rel=1e-6)
        else:  # the adversary's term, weighted by the file's lambda (at progress 0.5 of a ramp)
            lam = t.mode_params["lam"]
            if t.mode_params.get("lambda_schedule") == "ganin":
                loss_fn.set_progress(0.5)
                torch.manual_seed(1)
                loss, logs = loss_fn(model, {"x": x, "y": y, "group": group})
                lam *= 2 / (1 + math.exp(-5.0)) - 1
            assert grouped and logs["group_ce"] > 0
            assert loss.item() == pytest.approx(logs["ce"] + lam * logs["group_ce"], rel=1e-5)
        out[c.name] = (c.strategy, t.mode)
    # every campaign of a seed starts from the same initial labels (a function of the seed)
    ids = np.arange(cfg.dataset.n_pool, dtype=np.int64) * 3 + 1
    for seed in cfg.seeds:
        init = initial_selection(ids, cfg.al.initial_labels, seed)
        assert len(init) == cfg.al.initial_labels
        np.testing.assert_array_equal(init, initial_selection(ids[::-1], cfg.al.initial_labels,
                                                              seed))
    assert not np.array_equal(initial_selection(ids, cfg.al.initial_labels, cfg.seeds[0]),
                              initial_selection(ids, cfg.al.initial_labels, cfg.seeds[1]))
    return out


def test_grad_bald_job_is_a_paired_strategy_by_mode_grid() -> None:
    modes = _check_protocol("grad_bald.yaml", n_groups=2, n_classes=2)
    # the grid the comments describe: {uniform, BALD} x {no GRAD, GRAD(1), GRAD(0.5)}
    assert sorted(modes.values()) == sorted(
        (s, m) for s in ("random", "bald") for m in ("standard", "grad", "grad"))
    cfg, _ = load_job(JOBS / "grad_bald.yaml")
    lams = {(c.strategy, campaign_training(cfg, c).mode_params.get("lam")) for c in cfg.campaigns}
    assert lams == {(s, lam) for s in ("random", "bald") for lam in (None, 0.5, 1.0)}


def test_gba_colored_mnist_job() -> None:
    modes = _check_protocol("gba_colored_mnist.yaml", n_groups=10, n_classes=10)
    assert sorted(m for _, m in modes.values()) == ["gba"] * 4 + ["grad"] * 2 + ["standard"]
    job, _ = load_job(JOBS / "gba_colored_mnist.yaml")
    cfg_c = {c.name: campaign_training(job, c).mode_params for c in job.campaigns}
    # the ablations of GBA's open choices, each against gba_0.1 / a constant lambda = 1
    assert cfg_c["gba_0.1_rescale"] == {"lam": 0.1, "rescale": True}
    assert cfg_c["gba_0.1_test_time_mask"] == {"lam": 0.1, "test_time_mask": True}
    assert cfg_c["gba_1_ganin"] == {"lam": 1.0, "lambda_schedule": "ganin"}
    assert cfg_c["gradient_reversal_1_ganin"] == {"lam": 1.0, "lambda_schedule": "ganin"}
    assert {s for s, _ in modes.values()} == {"random"}  # the modes are the comparison
    cfg, _ = load_job(JOBS / "gba_colored_mnist.yaml")
    assert 0.9 <= cfg.dataset.skew < 1 and cfg.dataset.image_size % 8 == 0
    with pytest.raises(ConfigError, match="dataset.skew"):
        load_job(JOBS / "gba_colored_mnist.yaml", ["dataset.skew=1.5"])
    with pytest.raises(ConfigError, match="dataset.image_size"):
        load_job(JOBS / "gba_colored_mnist.yaml", ["dataset.image_size=16"])
