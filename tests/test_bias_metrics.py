"""Bias-aligned / bias-conflicting accuracy and the bias gap (GBA paper, Tables 1/4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rayfal import report
from rayfal.fairness.bias import bias_report


def test_known_answer() -> None:
    y_true = np.array([0, 1, 2, 3, 4, 5, 6])
    y_pred = np.array([0, 1, 9, 3, 9, 9, 9])
    aligned = np.array([1, 1, 1, 0, 0, 0, 0])
    out = bias_report(y_true, y_pred, bias_aligned=aligned)
    assert out["acc_bias_aligned"] == pytest.approx(2 / 3)
    assert out["acc_bias_conflicting"] == pytest.approx(1 / 4)
    assert out["acc_bias_mean"] == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert out["bias_gap"] == pytest.approx(2 / 3 - 1 / 4)
    # a negative gap when the conflicting rows do better (signed, not absolute)
    flipped = bias_report(y_true, y_pred, bias_aligned=1 - aligned)
    assert flipped["bias_gap"] == pytest.approx(1 / 4 - 2 / 3)


def test_empty_subset_and_bad_input() -> None:
    out = bias_report(np.array([1, 2]), np.array([1, 0]), bias_aligned=np.array([1, 1]))
    assert out["acc_bias_aligned"] == 0.5
    assert math.isnan(out["acc_bias_conflicting"]) and math.isnan(out["bias_gap"])
    with pytest.raises(ValueError, match="lengths differ"):
        bias_report(np.array([1, 2]), np.array([1]), bias_aligned=np.array([1, 0]))
    with pytest.raises(ValueError, match=r"0/1.*\[2\].*positions \[1\]"):
        bias_report(np.array([1, 2]), np.array([1, 2]), bias_aligned=np.array([1, 2]))


def _rounds(tmp_path: Path) -> Path:
    rows = []
    for campaign, (al, co) in {"vanilla": (0.9, 0.3), "gba": (0.8, 0.7)}.items():
        for seed, jitter in enumerate((0.0, 0.02)):
            for r in range(2):
                a, c = al + jitter - 0.1 * (1 - r), co + jitter
                rows.append({"scenario": "colored_mnist", "campaign": campaign, "seed": seed,
                             "round": r, "n_labelled": 100 * (r + 1), "frac_labelled": 0.1 * (r + 1),
                             "accuracy": 0.1 * a + 0.9 * c, "acc_bias_aligned": a,
                             "acc_bias_conflicting": c, "acc_bias_mean": (a + c) / 2,
                             "bias_gap": a - c})
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows).to_csv(run / "rounds.csv", index=False)
    return run


def test_report_bias_table(tmp_path: Path) -> None:
    # (write_report calls this only when rounds.csv has the columns; tests/test_report.py checks
    # that a run without them gets exactly the usual files)
    rounds = report.load_rounds(_rounds(tmp_path))
    paths = report.write_bias_report(rounds, tmp_path)
    assert set(paths) == {"bias_table.md", "bias_table.csv", "bias_curves.png"}
    assert paths["bias_curves.png"].read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(paths["bias_table.csv"]).set_index("campaign")
    # last round (frac 0.2), mean over the two seeds
    assert table.loc["vanilla", "acc_bias_aligned_mean"] == pytest.approx(0.91)
    assert table.loc["gba", "bias_gap_mean"] == pytest.approx(0.1)
    assert table.loc["vanilla", "bias_gap_std"] == pytest.approx(0.0, abs=1e-12)
    md = paths["bias_table.md"].read_text("utf-8")
    assert "| vanilla | 91.00 ± 1.41 | 31.00 ± 1.41 | 61.00 ± 1.41 | 60.00 ± 0.00 |" in md
    assert "Bias gap (aligned − conflicting) (%)" in md


class _IdentityTrunkModel(torch.nn.Module):
    """Features = the inputs; an optional discriminator that predicts group 1 iff x0 > 0."""

    def __init__(self, with_head: bool) -> None:
        super().__init__()
        self.trunk = torch.nn.Identity()
        self.head = torch.nn.Linear(2, 2)
        if with_head:
            self.group_head = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.group_head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))


def test_discriminator_bias_report_known_answer() -> None:
    from rayfal.fairness.bias import discriminator_bias_report

    # test rows: 4 aligned (x0's sign = the group), 4 conflicting (2 with the sign right)
    group = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    x0 = np.array([-1, 1, -2, 2, -1, 1, 1, -1], dtype=np.float32)
    x1 = (2.0 * group - 1.0).astype(np.float32)  # x1 always carries the group
    x = torch.tensor(np.stack([x0, x1], axis=1))
    aligned = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    rng = np.random.default_rng(0)
    train_group = np.repeat([0, 1], 50)
    train_x = np.stack([rng.normal(size=100), 2.0 * train_group - 1.0 + 0.1 * rng.normal(size=100)],
                       axis=1).astype(np.float32)
    out = discriminator_bias_report(_IdentityTrunkModel(True), x, group, aligned,
                                    train_x=train_x, train_group=train_group)
    assert out["disc_acc_bias_aligned"] == 1.0
    assert out["disc_acc_bias_conflicting"] == 0.5
    assert out["probe_acc_bias_aligned"] == 1.0 and out["probe_acc_bias_conflicting"] == 1.0
    # no discriminator: NaN for it, the probe still reads the group
    plain = discriminator_bias_report(_IdentityTrunkModel(False), x, group, aligned,
                                      train_x=train_x, train_group=train_group)
    assert math.isnan(plain["disc_acc_bias_aligned"]) and math.isnan(plain["disc_acc_bias_conflicting"])
    assert plain["probe_acc_bias_conflicting"] == 1.0
    # a probe on features without group information is at chance on the conflicting rows
    blind = np.stack([rng.normal(size=100), rng.normal(size=100)], axis=1).astype(np.float32)
    chance = discriminator_bias_report(_IdentityTrunkModel(False), x, group, aligned,
                                       train_x=blind, train_group=train_group)
    assert chance["probe_acc_bias_conflicting"] < 1.0
    with pytest.raises(ValueError, match="lengths differ"):
        discriminator_bias_report(_IdentityTrunkModel(True), x, group[:3], aligned,
                                  train_x=train_x, train_group=train_group)
