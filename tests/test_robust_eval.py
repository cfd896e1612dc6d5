"""Robust evaluation (FRAL Eq. 1): known answers, determinism and the validation split (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rayfal.attacks import AttackSpec, pgd_row_keyed
from rayfal.config import ConfigError, config_from_dict
from rayfal.data.splits import validation_mask
from rayfal.evaluation import evaluate_robust
from rayfal.fairness.robust import fral_metrics
from rayfal.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fral_metrics_on_hand_made_numbers() -> None:
    #          group 0: 4 rows          group 1: 2 rows
    y = np.array([0, 1, 1, 0, 1, 0])
    group = np.array([0, 0, 0, 0, 1, 1])
    pred_std = np.array([0, 1, 1, 1, 1, 1])  # g0: 3/4, g1: 1/2
    pred_rob = np.array([0, 0, 0, 1, 1, 0])  # g0: 1/4, g1: 2/2
    m = fral_metrics(y, pred_std, pred_rob, group)
    assert m["std_acc_group_0"] == 0.75 and m["std_acc_group_1"] == 0.5
    assert m["rob_acc_group_0"] == 0.25 and m["rob_acc_group_1"] == 1.0
    assert m["F_std"] == 0.5 and m["F_rob"] == 0.25  # Eq. 1: min over groups
    assert m["std_disparity"] == pytest.approx(0.25) and m["rob_disparity"] == 0.75
    assert m["std_group_avg"] == pytest.approx(0.625) and m["rob_group_avg"] == 0.625
    assert m["robust_accuracy"] == pytest.approx(3 / 6)  # over rows, not groups
    assert m["worst_group_robust_accuracy"] == m["F_rob"]
    assert m["robust_disparity"] == m["rob_disparity"]
    with pytest.raises(ValueError, match="lengths"):
        fral_metrics(y, pred_std[:-1], pred_rob, group)


def _data(n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = np.asarray(torch.randint(0, 3, (n,), generator=g))
    group = np.arange(n) % 2
    keys = np.arange(n, dtype=np.int64) * 13 + 5
    return x, y, group, keys


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (3, 8, 8), 3, width=4, hidden=8, dropout=0.5)


def test_eps_zero_gives_robust_equal_to_standard_accuracy() -> None:
    x, y, group, keys = _data()
    m = evaluate_robust(_model(), x, y, group, attack=AttackSpec(eps=0.0, steps=3),
                        row_keys=keys)
    for g in (0, 1):
        assert m[f"rob_acc_group_{g}"] == m[f"std_acc_group_{g}"]
    assert m["F_rob"] == m["F_std"]


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 2.0, 1.0]).expand(len(x), 3) + 0.0 * self.w * x.sum()


def test_constant_model_is_perfectly_robust() -> None:
    x, y, group, keys = _data()
    m = evaluate_robust(_Constant(), x, y, group, attack=AttackSpec(eps=0.3, steps=5),
                        row_keys=keys)
    assert m["robust_accuracy"] == pytest.approx(np.mean(y == 1))
    for g in (0, 1):
        assert m[f"rob_acc_group_{g}"] == m[f"std_acc_group_{g}"]


def test_attack_lowers_accuracy_stays_in_ball_and_ignores_batching() -> None:
    x, y, group, keys = _data(32, seed=1)
    model = _model(1)
    # make the model fit the labels a little so there is accuracy to attack
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.from_numpy(y)).backward()
        opt.step()
    attack = AttackSpec(eps=16 / 255, alpha=4 / 255, steps=5)
    a = evaluate_robust(model, x, y, group, attack=attack, row_keys=keys, batch_size=32)
    b = evaluate_robust(model, x, y, group, attack=attack, row_keys=keys, batch_size=7)
    assert a == b  # row-keyed random start: batch composition does not matter
    assert a["robust_accuracy"] < np.mean([a["std_acc_group_0"], a["std_acc_group_1"]])
    x_adv = pgd_row_keyed(model, x, torch.from_numpy(y), row_keys=keys, seed=0, attack=attack)
    assert (x_adv - x).abs().max() <= attack.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    other = pgd_row_keyed(model, x, torch.from_numpy(y), row_keys=keys, seed=1, attack=attack)
    assert not torch.equal(other, x_adv)  # the seed changes the random start


def test_validation_mask_is_a_fixed_hash_split() -> None:
    ids = np.arange(4000, dtype=np.int64) * 3 + 11
    m = validation_mask(ids, 0.5)
    assert abs(m.mean() - 0.5) < 0.04
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(validation_mask(ids[perm], 0.5), m[perm])
    assert not validation_mask(ids, 0.0).any()
    with pytest.raises(ValueError, match="val_fraction"):
        validation_mask(ids, 1.0)


def test_config_validates_robust_evaluation_keys() -> None:
    cfg = config_from_dict({"evaluation": {"robust": True, "val_fraction": 0.5,
                                           "worst_group_by": "robust_accuracy"}})
    assert cfg.evaluation.robust_steps == 20 and cfg.evaluation.robust_eps == 8 / 255
    with pytest.raises(ConfigError, match="worst_group_by"):
        config_from_dict({"evaluation": {"worst_group_by": "robust_accuracy"}})
    with pytest.raises(ConfigError, match="val_fraction"):
        config_from_dict({"evaluation": {"val_fraction": 1.5}})
