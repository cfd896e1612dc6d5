"""Tests of the group head / gradient reversal (rayfal.models.fair) and of the robust and fair
training modes (pgd_at, trades, grad, gba and their compositions), without Ray."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rayfal.attacks import pgd
from rayfal.models import (
    MLP,
    FairModel,
    GradientReversal,
    GroupHead,
    SmallCNN,
    build_model,
    deterministic_dropout,
    grad_reverse,
)
from rayfal.models.checkpoint import load_checkpoint, model_spec, save_checkpoint, state_dict_cpu
from rayfal.models.predict import deterministic_probs, mc_probs
from rayfal.training import (
    MODES,
    inference_model,
    make_loss,
    needs_group_head,
    supported_compositions,
    validate_mode_params,
)
from rayfal.training.gba import GBATestTimeMask, gba_mask, rescale_mask
from rayfal.training.grad import ganin_ramp, scheduled_lambda
from rayfal.training.loop import LoopSettings, train_model

ALL_MODES = ["pgd_at", "trades", "grad", "gba", "pgd_at+grad", "pgd_at+gba", "trades+grad"]
ATTACK = {"eps": 0.1, "alpha": 0.05, "steps": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(seed: int = 0, n: int = 48, d: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    group = (x[:, 2] + 0.3 * torch.randn(n, generator=g) > 0).long()  # learnable from x
    return {"x": x, "y": y, "group": group}


def _fair(seed: int = 0, dropout: float = 0.0, hidden: int = 12, groups: int = 2) -> FairModel:
    torch.manual_seed(seed)
    return build_model("mlp", (4,), 2, num_groups=groups, group_hidden=8, hidden=hidden,
                       dropout=dropout)


def _params(mode: str) -> dict:
    out: dict = {}
    if "pgd_at" in mode or "trades" in mode:
        out.update(ATTACK)
    if "grad" in mode or "gba" in mode:
        out["lam"] = 0.5
    return out


# ---------------------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("lam", [1.0, 0.3, 2.5, 0.0])
def test_gradient_reversal_flips_and_scales_the_gradient(lam: float) -> None:
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)  # a parameter *after* the reversal layer
    x = torch.randn(5, requires_grad=True)

    def f(h):  # hand-made function: inner(x) -> [GRL] -> outer(h; w)
        return (w * torch.sin(h) ** 2).sum() + (h ** 3).mean()

    inner = x.exp() * 0.5
    ref_x, ref_w = torch.autograd.grad(f(inner), (x, w))
    rev = grad_reverse(x.exp() * 0.5, lam)
    torch.testing.assert_close(rev, inner)  # identity forward
    got_x, got_w = torch.autograd.grad(f(rev), (x, w))
    torch.testing.assert_close(got_x, -lam * ref_x)  # upstream: reversed and scaled
    torch.testing.assert_close(got_w, ref_w)  # downstream parameters: unchanged
    # the layer form, and autograd's own derivative of the inner part (chain rule intact)
    layer = GradientReversal(lam)
    got_x2, = torch.autograd.grad(f(layer(x.exp() * 0.5)), x)
    torch.testing.assert_close(got_x2, got_x)
    analytic = (w.detach() * torch.sin(2 * inner.detach()) + 3 * inner.detach() ** 2 / 5)
    torch.testing.assert_close(got_x, -lam * analytic * inner.detach())


# ---------------------------------------------------------------------------- the group-head model


def test_fair_model_class_path_is_the_base_model() -> None:
    torch.manual_seed(1)
    base = MLP((4,), 3, hidden=12, dropout=0.3)
    fair = FairModel(copy.deepcopy(base), 2, group_hidden=5)
    x = torch.randn(7, 4)
    base.eval()
    fair.eval()
    with deterministic_dropout():
        logits, glogits, z = fair.forward_with_groups(x)
        torch.testing.assert_close(fair(x), base(x))
        torch.testing.assert_close(logits, base(x))
        torch.testing.assert_close(z, base.embed(x))
        torch.testing.assert_close(glogits, fair.group_head(z))
    assert glogits.shape == (7, 2)
    # MC prediction (BALD, evaluation, scoring) sees the class head only
    a = mc_probs(fair, x, mc_samples=4, generator_seed=3, row_keys=torch.arange(7).numpy())
    b = mc_probs(base, x, mc_samples=4, generator_seed=3, row_keys=torch.arange(7).numpy())
    torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(b))
    # the class part of the state dict is the base's, key for key
    keys = set(fair.state_dict())
    assert {k for k in keys if not k.startswith("group_head.")} == set(base.state_dict())
    assert any(k.startswith("group_head.") for k in keys)


def test_build_model_group_head_options() -> None:
    m = build_model("mlp", (4,), 2, num_groups=3, hidden=8)
    assert isinstance(m, FairModel) and m.num_groups == 3
    assert not isinstance(build_model("mlp", (4,), 2, hidden=8), FairModel)
    with pytest.raises(ValueError, match="group_hidden"):
        build_model("mlp", (4,), 2, group_hidden=4)
    with pytest.raises(ValueError, match="num_groups"):
        GroupHead(8, 1)
    assert isinstance(GroupHead(8, 2, hidden=0).net, nn.Linear)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_checkpoint_round_trip_of_the_group_head_model(kind: str, tmp_path) -> None:
    torch.manual_seed(2)
    if kind == "mlp":
        shape, kw = (5,), {"hidden": 8, "dropout": 0.2}
        x = torch.randn(6, 5)
    else:
        shape, kw = (3, 8, 8), {"hidden": 8, "width": 2, "dropout": 0.2}
        x = torch.rand(6, 3, 8, 8)
    model = build_model(kind, shape, 3, num_groups=4, group_hidden=6, **kw)
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial batch-norm statistics
    spec = model_spec(kind, shape, 3, num_groups=4, group_hidden=6, **kw)
    save_checkpoint(tmp_path, state_dict_cpu(model), spec)
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["spec"] == spec
    assert isinstance(loaded, FairModel) and loaded.num_groups == 4 and not loaded.training
    model.eval()
    with deterministic_dropout():
        for a, b in zip(model.forward_with_groups(x), loaded.forward_with_groups(x), strict=True):
            torch.testing.assert_close(a, b)
    # without num_groups in the spec the group-head weights do not fit: a loud error
    with pytest.raises(RuntimeError, match="group_head"):
        build_model(kind, shape, 3, **kw).load_state_dict(loaded.state_dict())


# ---------------------------------------------------------------------------- GBA mask (Eq. 4-8)


def _linear_head(weight: list[list[float]]) -> GroupHead:
    head = GroupHead(len(weight[0]), len(weight), hidden=0)
    with torch.no_grad():
        head.net.weight.copy_(torch.tensor(weight))
        head.net.bias.zero_()
    return head


def test_gba_mask_follows_eq7_on_a_hand_made_case() -> None:
    # D(f) = W f: the gradient of the max logit w.r.t. f is the winning row of W (Eq. 5-6)
    head = _linear_head([[1.0, -2.0, 0.0, 3.0, -0.5],
                         [-1.0, 2.0, 0.5, -3.0, 0.0]])
    z = torch.tensor([[2.0, 0.0, 0.0, 1.0, 0.0],   # logits (5, -5): predicts 0, label 0: correct
                      [2.0, 0.0, 0.0, 1.0, 0.0],   # predicts 0, label 1: wrong
                      [0.0, 1.0, 0.0, 0.0, 0.0],   # logits (-2, 2): predicts 1, label 1: correct
                      [0.0, 1.0, 0.0, 0.0, 0.0]])  # predicts 1, label 0: wrong
    group = torch.tensor([0, 1, 1, 0])
    mask = gba_mask(head, z, group)
    # correct (ind=+1): drop features with positive gradient (a=0 iff g>0); g=0 is kept
    # wrong (ind=-1): drop features with negative gradient, keep positive and zero
    expected = torch.tensor([[0, 1, 1, 0, 1],    # g = W[0] = ( 1, -2, 0,  3, -.5)
                             [1, 0, 1, 1, 0],
                             [1, 0, 0, 1, 1],    # g = W[1] = (-1,  2, .5, -3,  0)
                             [0, 1, 1, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(mask, expected)
    assert not mask.requires_grad
    # rescale: kept features scaled by D / #kept per row
    scaled = gba_mask(head, z, group, rescale=True)
    torch.testing.assert_close(scaled, expected * (5.0 / expected.sum(1, keepdim=True)))


def _gba_case() -> tuple[GroupHead, torch.Tensor, torch.Tensor]:
    """A hand-made linear discriminator D(f) = W f on D = 4 features and four rows."""
    head = _linear_head([[1.0, 2.0, -1.0, 0.0],
                         [-1.0, -1.0, -1.0, -1.0]])
    z = torch.tensor([[1.0, 1.0, 0.0, 0.0],     # logits (3, -2): predicts 0; label 0: correct
                      [1.0, 1.0, 0.0, 0.0],     # predicts 0; label 1: wrong
                      [-1.0, -1.0, 0.0, 0.0],   # logits (-3, 2): predicts 1; label 1: correct
                      [-1.0, -1.0, 0.0, 0.0]])  # predicts 1; label 0: wrong
    return head, z, torch.tensor([0, 1, 1, 0])


def test_gba_rescaled_mask_known_answer() -> None:
    head, z, group = _gba_case()
    # Eq. 7 with g = W[pred]: row 0 (g = (1, 2, -1, 0), ind +1) keeps (0, 0, 1, 1); row 1
    # (ind -1) keeps (1, 1, 0, 1); row 2 (g = (-1, -1, -1, -1), ind +1) keeps everything; row 3
    # (ind -1: every g * ind > 0) drops everything
    torch.testing.assert_close(gba_mask(head, z, group), torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    # inverted dropout: kept features / keep fraction (2/4, 3/4, 4/4); a row with none kept
    # stays all zeros
    t = 4.0 / 3.0
    want = torch.tensor([[0.0, 0.0, 2.0, 2.0], [t, t, 0.0, t], [1.0, 1.0, 1.0, 1.0],
                         [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(gba_mask(head, z, group, rescale=True), want)
    torch.testing.assert_close(rescale_mask(gba_mask(head, z, group)), want)
    # the rescaled rows with something kept have the feature count as their sum (magnitude)
    assert want[:3].sum(1).tolist() == pytest.approx([4.0, 4.0, 4.0])
    # test time (group=None): D's own prediction is the label, ind = +1 for every row
    torch.testing.assert_close(gba_mask(head, z, None), torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    torch.testing.assert_close(gba_mask(head, z, None, rescale=True), torch.tensor(
        [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    with torch.inference_mode():  # the test-time mask is computed inside inference mode too
        torch.testing.assert_close(gba_mask(head, z.clone(), None), gba_mask(head, z, None))


def test_gba_loss_with_rescale_feeds_the_rescaled_features() -> None:
    model = _fair(6)
    data = _data(6, n=16)
    model.train()
    seen: dict[str, torch.Tensor] = {}
    hook = model.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("cls", a[0]))
    _, logs = make_loss("gba", lam=0.7, rescale=True)(model, data)
    hook.remove()
    z = model.trunk(data["x"])
    plain = gba_mask(model.group_head, z, data["group"])
    scale = plain.shape[1] / plain.sum(1, keepdim=True).clamp(min=1.0)
    torch.testing.assert_close(seen["cls"], z * plain * scale)
    assert logs["gba_kept"] == pytest.approx(float(plain.mean()))  # the 0/1 keep fraction


def test_gba_mask_uses_the_max_logit_gradient_of_a_nonlinear_head() -> None:
    torch.manual_seed(4)
    head = GroupHead(6, 3, hidden=7)
    z = torch.randn(9, 6)
    group = torch.randint(0, 3, (9,))
    mask = gba_mask(head, z, group)
    for i in range(9):  # per-row reference with autograd on that row alone
        zi = z[i:i + 1].clone().requires_grad_(True)
        logits = head(zi)
        g, = torch.autograd.grad(logits.max(), zi)
        ind = 1.0 if int(logits.argmax()) == int(group[i]) else -1.0
        torch.testing.assert_close(mask[i], ((g[0] * ind) <= 0).float())


def test_gba_loss_masks_the_class_input_only_and_reverses_the_group_gradient() -> None:
    model = _fair(5)
    data = _data(5, n=16)
    model.train()
    seen: dict[str, torch.Tensor] = {}
    h1 = model.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("cls", a[0]))
    h2 = model.group_head.register_forward_pre_hook(lambda m, a: seen.__setitem__("grp", a[0]))
    loss, logs = make_loss("gba", lam=0.7)(model, data)
    h1.remove()
    h2.remove()
    z = model.trunk(data["x"])  # train-mode batch statistics: the same z
    mask = gba_mask(model.group_head, z, data["group"])
    torch.testing.assert_close(seen["cls"], z * mask)  # Eq. 8
    torch.testing.assert_close(seen["grp"], z)  # the discriminator reads unmasked features
    assert 0.0 < logs["gba_kept"] < 1.0
    assert logs["gba_kept"] == pytest.approx(float(mask.mean()))
    # gradients: trunk <- CE_c(head(z*a)) - lam * CE_g ; group head <- +lam * CE_g
    model.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_c = _grads(model, lambda: F.cross_entropy(model.head(model.trunk(data["x"]) * mask),
                                                  data["y"]))
    ref_g = _grads(model, lambda: F.cross_entropy(model.group_head(model.trunk(data["x"])),
                                                  data["group"]))
    _check_reversed(model, got, ref_c, ref_g, 0.7)


def _grads(model: nn.Module, fn) -> dict[str, torch.Tensor]:
    model.zero_grad()
    fn().backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters()}


def _check_reversed(model, got, ref_c, ref_g, lam) -> None:
    for n, _ in model.named_parameters():
        if n.startswith("trunk."):
            want = ref_c[n] - lam * ref_g[n]
        elif n.startswith("group_head."):
            want = lam * ref_g[n]
        else:
            want = ref_c[n]
        torch.testing.assert_close(got[n], want, msg=n)


def test_grad_mode_is_eq2_with_a_reversed_group_gradient() -> None:
    model = _fair(6)
    data = _data(6, n=16)
    model.train()
    loss, logs = make_loss("grad", lam=0.4)(model, data)
    with torch.no_grad():
        logits, glogits, _ = model.forward_with_groups(data["x"])
    ce, gce = F.cross_entropy(logits, data["y"]), F.cross_entropy(glogits, data["group"])
    assert float(loss.detach()) == pytest.approx(float(ce + 0.4 * gce), rel=1e-6)  # Eq. 2's value
    assert logs["ce"] == pytest.approx(float(ce)) and logs["group_ce"] == pytest.approx(float(gce))
    model.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_c = _grads(model, lambda: F.cross_entropy(model(data["x"]), data["y"]))
    ref_g = _grads(model, lambda: F.cross_entropy(model.group_head(model.trunk(data["x"])),
                                                  data["group"]))
    assert any(float(v.abs().sum()) > 0 for k, v in ref_g.items() if k.startswith("trunk."))
    _check_reversed(model, got, ref_c, ref_g, 0.4)


# ---------------------------------------------------------------------------- robust modes


def test_pgd_at_is_cross_entropy_on_the_pgd_batch() -> None:
    model = _fair(7).train()
    data = _data(7, n=16)
    ref = copy.deepcopy(model)  # the loss's train-mode forward moves batch-norm statistics
    torch.manual_seed(11)
    loss, logs = make_loss("pgd_at", **ATTACK)(model, data)
    torch.manual_seed(11)
    x_adv = pgd(ref, data["x"], data["y"], clamp=None, **ATTACK)
    assert model.training
    with torch.no_grad():
        want = F.cross_entropy(ref(x_adv), data["y"])
        clean = F.cross_entropy(ref(data["x"]), data["y"])
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-6)
    assert float(want) > float(clean)


def test_trades_is_ce_plus_beta_kl_on_the_kl_attack() -> None:
    model = _fair(8).train()
    data = _data(8, n=16)
    ref = copy.deepcopy(model)
    attack = {"eps": 0.5, "alpha": 0.25, "steps": 2}
    torch.manual_seed(12)
    loss, logs = make_loss("trades", beta=3.0, **attack)(model, data)
    torch.manual_seed(12)
    x_adv = pgd(ref, data["x"], None, loss="kl", clamp=None, **attack)
    with torch.no_grad():
        clean, adv = ref(data["x"]), ref(x_adv)
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1).mean()
    ce = F.cross_entropy(clean, data["y"])
    assert logs["kl"] == pytest.approx(float(kl), rel=1e-4) and float(kl) > 1e-3
    assert float(loss.detach()) == pytest.approx(float(ce + 3.0 * kl), rel=1e-5)
    assert make_loss("trades").beta == 6.0  # the paper's default


def test_trades_pairs_dropout_masks_of_the_clean_and_adversarial_forward() -> None:
    model = _fair(9, dropout=0.5).train()
    data = _data(9, n=16)
    torch.manual_seed(0)
    _, paired = make_loss("trades", eps=0.0, alpha=0.1, steps=1)(model, data)
    torch.manual_seed(0)
    _, indep = make_loss("trades", eps=0.0, alpha=0.1, steps=1, paired_dropout=False)(model, data)
    assert paired["kl"] == pytest.approx(0.0, abs=1e-7)  # x_adv = x and the same masks
    assert indep["kl"] > 1e-3  # independent masks: dropout noise alone


# ---------------------------------------------------------------------------- every mode trains


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_mode_lowers_its_loss_in_a_few_steps(mode: str) -> None:
    model = _fair(10, dropout=0.1).train()
    data = _data(10)
    loss_fn = make_loss(mode, **_params(mode))

    def evaluate() -> dict[str, float]:
        torch.manual_seed(99)  # same attack start and dropout masks before and after
        return loss_fn(model, data)[1]

    before = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    torch.manual_seed(1)
    for _ in range(25):
        loss, logs = loss_fn(model, data)
        assert torch.isfinite(loss) and logs["loss"] == pytest.approx(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["ce"] < 0.8 * before["ce"], (before, after)
    if "grad" in mode or "gba" in mode:
        assert {"group_ce", "group_acc"} <= set(after)


def test_train_model_runs_a_composed_mode_with_group_batches() -> None:
    model = _fair(11, dropout=0.2)
    data = _data(11, n=40)
    s = LoopSettings(epochs=1, min_steps=3, batch_size=16, lr=0.01, weight_decay=0.0, seed=0)
    logs = train_model(model, data, make_loss("trades+grad", lam=0.5, **ATTACK), s)
    assert {"train_loss", "train_ce", "train_kl", "train_group_ce", "train_group_acc"} <= set(logs)
    assert not model.training


# ---------------------------------------------------------------------------- GBA at test time


@pytest.mark.parametrize("rescale", [False, True])
def test_gba_test_time_mask_masks_every_inference_path(rescale: bool) -> None:
    model = _fair(7, dropout=0.3).eval()
    x = _data(7, n=20)["x"]
    masked = inference_model("gba", {"test_time_mask": True, "rescale": rescale}, model)
    assert isinstance(masked, GBATestTimeMask) and isinstance(masked, FairModel)
    assert masked.state_dict().keys() == model.state_dict().keys()  # the same modules
    assert all(a is b for a, b in zip(masked.parameters(), model.parameters(), strict=True))
    with torch.no_grad():
        z = model.trunk(x)
        want_z = z * gba_mask(model.group_head, z, None, rescale=rescale)
        torch.testing.assert_close(masked.embed(x), want_z)
        with deterministic_dropout():
            torch.testing.assert_close(masked(x), model.head(want_z))
            assert not torch.allclose(masked(x), model(x))
    # MC-dropout prediction (embed then head, inside inference mode) and the deterministic path
    got = mc_probs(masked, x, mc_samples=4, row_keys=np.arange(20), generator_seed=1)
    ref = mc_probs(model, x, mc_samples=4, row_keys=np.arange(20), generator_seed=1)
    assert got.shape == ref.shape and not np.allclose(got, ref)
    probs = deterministic_probs(masked, x)
    with torch.no_grad(), deterministic_dropout():
        np.testing.assert_allclose(probs, F.softmax(model.head(want_z), 1).double().numpy(),
                                   rtol=1e-5, atol=1e-6)
    # an attack differentiates through the masked model (the mask as a constant)
    x_adv = pgd(masked, x, torch.zeros(20, dtype=torch.long), eps=0.1, alpha=0.05, steps=2)
    assert x_adv.shape == x.shape and not torch.equal(x_adv, x)
    # training forward: the plain FairModel's
    with torch.no_grad(), deterministic_dropout():
        for a, b in zip(masked(x, with_groups=True), model(x, with_groups=True), strict=True):
            torch.testing.assert_close(a, b)


def test_inference_model_is_the_model_itself_by_default() -> None:
    model = _fair(8)
    for mode, params in [("gba", {}), ("gba", {"rescale": True}), ("grad", {"lam": 0.5}),
                         ("standard", {}), ("pgd_at+grad", {"lam": 0.5})]:
        assert inference_model(mode, params, model) is model
    composed = inference_model("pgd_at+gba", {"test_time_mask": True, "eps": 0.1}, model)
    assert isinstance(composed, GBATestTimeMask) and not composed.rescale
    with pytest.raises(Exception, match="test_time_mask"):
        inference_model("gba", {"test_time_mask": "yes"}, model)


# ---------------------------------------------------------------------------- λ schedule (Ganin)


def test_ganin_ramp_known_values() -> None:
    # 2 / (1 + exp(-10 p)) - 1 = tanh(5 p)
    assert ganin_ramp(0.0) == 0.0
    assert ganin_ramp(0.1) == pytest.approx(0.46211715726000974)   # tanh(0.5)
    assert ganin_ramp(0.5) == pytest.approx(0.9866142981514303)    # tanh(2.5)
    assert ganin_ramp(1.0) == pytest.approx(0.9999092042625951)    # tanh(5)
    assert scheduled_lambda(0.5, "ganin", 0.1) == pytest.approx(0.5 * 0.46211715726000974)
    assert scheduled_lambda(0.5, "ganin", 2.0) == pytest.approx(0.5 * 0.9999092042625951)
    assert scheduled_lambda(0.5, "constant", 0.1) == 0.5
    with pytest.raises(ValueError, match="lambda_schedule"):
        scheduled_lambda(0.5, "linear", 0.1)


@pytest.mark.parametrize("mode", ["grad", "gba", "pgd_at+grad", "pgd_at+gba", "trades+grad"])
def test_ganin_schedule_weights_the_group_loss_by_the_ramp(mode: str) -> None:
    data = _data(9, n=16)
    params = _params(mode) | {"lam": 2.0}
    const = make_loss(mode, **params)
    ramp = make_loss(mode, **params, lambda_schedule="ganin")
    for p in (0.0, 0.1, 0.5):
        ramp.set_progress(p)
        const.set_progress(p)  # no effect on a constant λ
        logs = {}
        for name, fn in (("const", const), ("ramp", ramp)):
            model = _fair(9).train()
            torch.manual_seed(0)
            _, logs[name] = fn(model, data)
        lam_p = 2.0 * ganin_ramp(p)
        assert logs["ramp"]["lam"] == pytest.approx(lam_p)
        assert "lam" not in logs["const"]
        group_ce = logs["const"]["group_ce"]
        assert logs["ramp"]["group_ce"] == pytest.approx(group_ce)
        # loss = the rest + λ·group CE: the constant and the ramp differ by (2 - λ_p)·group CE
        assert logs["const"]["loss"] - logs["ramp"]["loss"] == \
            pytest.approx((2.0 - lam_p) * group_ce, rel=1e-5, abs=1e-6)


def test_lambda_schedule_is_a_checked_mode_parameter() -> None:
    from pydantic import ValidationError

    for mode in ("grad", "gba", "pgd_at+gba", "trades+grad"):
        ok = validate_mode_params(mode, {"lambda_schedule": "ganin"})
        assert ok.lambda_schedule == "ganin"
        with pytest.raises(ValidationError):
            validate_mode_params(mode, {"lambda_schedule": "linear"})
    p = validate_mode_params("gba", {"rescale": True, "test_time_mask": True})
    assert (p.rescale, p.test_time_mask, p.lambda_schedule) == (True, True, "constant")
    with pytest.raises(ValueError, match="lambda_schedule"):
        make_loss("grad", lambda_schedule="linear")


# ---------------------------------------------------------------------------- composition rules


@pytest.mark.parametrize(("name", "match"), [
    ("pgd_at+trades", "both robustness"),
    ("trades+pgd_at", "both robustness"),
    ("grad+gba", "both fairness"),
    ("trades+gba", "masked clean prediction"),
    ("standard+grad", "'standard' does not compose"),
    ("grad+grad", "repeated"),
    ("pgd_at+grad+trades", "exactly one robust"),
])
def test_unsupported_combinations_raise_naming_them(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        make_loss(name)
    assert f"'{name}'" in str(err.value) and "trades+grad" in str(err.value)


def test_composition_names_parameters_and_errors() -> None:
    assert supported_compositions() == ["pgd_at+gba", "pgd_at+grad", "trades+grad"]
    loss = make_loss("grad + trades", beta=2.0, lam=0.25, steps=3)  # order and spaces are free
    assert loss.robust.beta == 2.0 and loss.robust.attack.steps == 3 and loss.fair.lam == 0.25
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['gamma'\].*'grad' takes"):
        make_loss("trades+grad", gamma=1.0)
    with pytest.raises(KeyError, match="unknown training mode 'nope'.*known: .*trades"):
        make_loss("nope+grad")
    with pytest.raises(ValueError, match="malformed"):
        make_loss("trades+")
    with pytest.raises(TypeError):
        make_loss("grad", beta=1.0)
    for bad in ({"eps": -1.0}, {"clamp": "sometimes"}, {"beta": -1.0}):
        with pytest.raises(ValueError):
            make_loss("trades", **bad)


def test_needs_group_head_and_registry() -> None:
    assert set(MODES.names()) >= {"standard", "pgd_at", "trades", "grad", "gba"}
    assert [needs_group_head(m) for m in ("standard", "pgd_at", "trades")] == [False] * 3
    assert all(needs_group_head(m) for m in ("grad", "gba", "trades+grad", "pgd_at+gba"))


@pytest.mark.parametrize("mode", ["grad", "gba", "pgd_at+grad"])
def test_fair_modes_check_model_and_groups(mode: str) -> None:
    data = _data(12, n=8)
    loss_fn = make_loss(mode, **_params(mode))
    with pytest.raises(TypeError, match="num_groups"):
        loss_fn(MLP((4,), 2, hidden=8).train(), data)
    with pytest.raises(ValueError, match=r"\[0, 2\).*max 2"):
        loss_fn(_fair().train(), data | {"group": data["group"] + 1})
    with pytest.raises(KeyError, match="group"):
        loss_fn(_fair().train(), {"x": data["x"], "y": data["y"]})


# ---------------------------------------------------------------------------- DDP wrapper


@pytest.mark.parametrize("mode", ["grad", "gba", "trades+grad", "pgd_at+gba"])
def test_modes_run_through_a_ddp_wrapper(mode: str, tmp_path) -> None:
    """One-process gloo DDP: the same loss and gradients as the bare model, and no reducer error
    over consecutive steps (every parameter gets its gradient through the wrapper)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        bare = _fair(13, dropout=0.2).train()
        wrapped = DDP(copy.deepcopy(bare))
        data = _data(13, n=16)
        loss_fn = make_loss(mode, **_params(mode))
        for step in range(2):
            torch.manual_seed(step)
            lb, _ = loss_fn(bare, data)
            torch.manual_seed(step)
            lw, _ = loss_fn(wrapped, data)
            assert float(lw.detach()) == pytest.approx(float(lb.detach()), rel=1e-5)
            for m in (bare, wrapped):
                m.zero_grad()
            lb.backward()
            lw.backward()
            for (n, p), q in zip(bare.named_parameters(), wrapped.module.parameters(),
                                 strict=True):
                torch.testing.assert_close(q.grad, p.grad, msg=n)
    finally:
        dist.destroy_process_group()


def test_fair_model_cnn_modes_smoke() -> None:
    torch.manual_seed(14)
    model = build_model("cnn", (3, 8, 8), 2, num_groups=2, width=2, hidden=8).train()
    data = {"x": torch.rand(6, 3, 8, 8), "y": torch.tensor([0, 1] * 3),
            "group": torch.tensor([1, 0, 0, 1, 1, 0])}
    loss, logs = make_loss("pgd_at+gba", eps=0.03, alpha=0.01, steps=1)(model, data)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= logs["gba_kept"] <= 1.0
    # build_model(num_groups=2) gives the CNN wrapped with a group head (a FairModel sharing the
    # CNN's trunk and head), and the combined loss trains all three parts
    assert isinstance(model, FairModel) and model.num_groups == 2
    assert isinstance(model.trunk[0], nn.Conv2d) and model.group_head is not None
    bare = build_model("cnn", (3, 8, 8), 2, width=2, hidden=8)
    assert isinstance(bare, SmallCNN) and not isinstance(bare, FairModel)
    assert set(model.state_dict()) == set(bare.state_dict()) | {
        k for k in model.state_dict() if k.startswith("group_head.")}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name  # trunk, class head and group head all learn
