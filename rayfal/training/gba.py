"""GBA — Gradient Based Activations (Kurmi et al. 2022, Eq. 1-8) with gradient reversal.

Per training row ``i`` with features ``f_i = F(x_i)`` (our ``z = trunk(x)``), group label
``y_i^d`` and the discriminator ``D`` (the :class:`~rayfal.models.fair.FairModel` group head):

* Eq. 4: ``ind_i = +1`` if ``argmax D(f_i) = y_i^d`` else ``-1``;
* Eq. 5: ``ŷ_i = max_k D(f_i)_k`` (the maximally activated logit);
* Eq. 6: ``g_i = ∂ŷ_i / ∂f_i``;
* Eq. 7: ``a_i = 0`` where ``g_i · ind_i > 0``, ``1`` where ``g_i · ind_i <= 0`` — features the
  discriminator uses when it is right are dropped; when it is wrong, features it pushes towards
  its (wrong) prediction are kept and the ones it pushes against are dropped;
* Eq. 8: the class head sees ``f_i^cls = f_i * a_i``;
* Eq. 2-3: ``C = L_c - λ·L_d`` with θ_f, θ_c minimising and θ_d maximising C, implemented as
  ``loss = CE(C(f * a), y) + λ·CE(D(GRL(f)), y^d)`` (gradient-reversal layer, coefficient 1).

Choices the paper leaves open (all documented here; change them only with a reason):

1. ``ŷ`` in Eq. 5 is the max *logit* (pre-softmax), as "maximally activated logit" says.
2. ``f`` is the trunk's embedding ``z`` — the same tensor the class head and the discriminator
   read (for our models: the input of the class head's first MC-dropout layer).
3. The mask is a constant (stop-gradient): ``g`` is computed on ``z.detach()`` with the current
   θ_d, before the step, so no second-order terms flow into the trunk or the discriminator.
4. Rows are independent: the group head has no batch-norm/dropout, so ``∂(Σ_i ŷ_i)/∂z`` gives
   every row's own ``g_i``. Ties in ``argmax`` take torch's choice.
5. ``g = 0`` (e.g. behind a dead ReLU) falls in Eq. 7's ``<= 0`` branch: the feature is kept.
6. The discriminator sees the *unmasked* ``f`` through the reversal layer (Fig. 2); only the
   classifier's input is masked.
7. Scale of the kept features (``rescale``). ``False`` (default): Eq. 8 as written, a plain
   0/1 product. The class head is then trained on features of which only a fraction survives
   but, at inference (choice 8), reads all of them: a train/test mismatch of scale, the one
   dropout has. ``True``: the inverted-dropout variant of Eq. 8,
   ``f_i^cls = f_i * a_i * D / Σ_k a_ik`` — each row's kept features are divided by that row's
   keep fraction ``Σ_k a_ik / D`` (``D`` = the feature size), so ``Σ_k f_ik^cls`` has the
   magnitude of the unmasked ``Σ_k f_ik`` when the kept features are typical; a row with every
   feature dropped stays all zeros.
8. Inference (evaluation, BALD, pool scoring, attacks) — ``test_time_mask``. ``False``
   (default): the plain ``head(trunk(x))`` on unmasked features (the mask of Eq. 4 needs the
   group label, which a test row does not have). ``True`` (an ablation): the class head also
   reads masked features at inference, with the mask of Eq. 5-7 computed from the
   discriminator's *own* prediction as the label (``ind = +1`` for every row: drop the
   features that push ``D`` towards the group it predicts), rescaled as in training when
   ``rescale``. It applies through :func:`rayfal.training.compose.inference_model` (the
   evaluation and the scoring must call it on the loaded checkpoint); attacks see the masked
   model with the mask as a constant (its gradient is not differentiated, as in training).
9. With more than two groups Eq. 4-7 apply unchanged (argmax/max over the G logits).
10. λ: GRL coefficient 1 and λ weights the loss, so the discriminator's own gradient is also
    scaled by λ (as in Eq. 3). ``lambda_schedule: constant`` (default) keeps it constant;
    ``ganin`` ramps it as ``λ_p = λ · (2 / (1 + exp(-10 p)) - 1)`` over each round's training
    progress ``p`` (:mod:`rayfal.training.grad`).

Parameters (:class:`GBAParams`): ``lam`` (λ, 1.0), ``rescale`` (False), ``test_time_mask``
(False), ``lambda_schedule`` (``constant``). Needs a model built with ``num_groups=G``. The
whole training computation (mask included) runs inside ``model(x, with_groups=True, ...)``,
through the DDP wrapper when there is one; the mask's ``autograd.grad`` w.r.t. ``z`` does not
touch parameter gradients.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from rayfal.models.fair import FairModel, FeatureMask
from rayfal.training.grad import AdversarialWeight, LambdaSchedule, fair_module, group_logs
from rayfal.training.modes import Batch, ModeParams, check_groups, register_mode


class GBAParams(ModeParams):
    """Parameters of ``gba`` (module docstring: choices 7, 8 and 10)."""

    lam: float = Field(1.0, ge=0, description="lambda: weight of the reversed group loss (Eq. 3)")
    rescale: bool = Field(False, description="inverted-dropout variant of Eq. 8: divide each "
                                             "row's kept features by its keep fraction")
    test_time_mask: bool = Field(False, description="ablation: mask the class head's input at "
                                                    "inference too, with the discriminator's "
                                                    "own prediction as the group (ind = +1)")
    lambda_schedule: LambdaSchedule = Field(
        "constant", description="lambda over a round's steps: constant, or ganin "
                                "(lam * (2 / (1 + exp(-10 p)) - 1), p = training progress)")


def rescale_mask(mask: torch.Tensor) -> torch.Tensor:
    """The inverted-dropout form of a 0/1 mask ``[N, ...]``: each row times ``D / #kept``
    (``D`` = the row's size), i.e. divided by its keep fraction; an all-zero row stays zero."""
    flat = mask.reshape(len(mask), -1)
    kept = flat.sum(dim=1).clamp(min=1.0)
    return (flat * (flat.shape[1] / kept).unsqueeze(1)).reshape(mask.shape)


def gba_mask(group_head: nn.Module, z: torch.Tensor, group: torch.Tensor | None,
             *, rescale: bool = False) -> torch.Tensor:
    """The GBA mask ``a`` of Eq. 4-7 (``[N, D]``, 0/1 unless ``rescale``), a constant tensor.

    ``group=None`` is the test-time mask (choice 8): the discriminator's own prediction stands
    for the label, so ``ind = +1`` for every row. Works inside ``torch.inference_mode()``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        zd = (z.clone() if z.is_inference() else z).detach().requires_grad_(True)
        logits = group_head(zd)
        top, pred = logits.max(dim=1)  # Eq. 5
        (g,) = torch.autograd.grad(top.sum(), zd)  # Eq. 6 (rows are independent)
    if group is None:
        ind = torch.ones(len(g), dtype=g.dtype, device=g.device)
    else:
        ind = torch.where(pred == group.to(pred.device), 1.0, -1.0).to(g.dtype)  # Eq. 4
    mask = ((g * ind.view(-1, *([1] * (g.dim() - 1)))) <= 0).to(z.dtype)  # Eq. 7
    if rescale:
        mask = rescale_mask(mask)
    return mask.detach()


class GBATestTimeMask(FairModel):
    """A trained GBA model whose class head reads test-time-masked features (choice 8).

    Shares the trunk, class head and group head of ``model`` (same parameters, same state-dict
    keys); ``embed(x)`` is ``z * gba_mask(group_head, z, None)`` and ``forward(x)`` is
    ``head(embed(x))``, so MC-dropout prediction (``embed`` then ``head``), deterministic
    prediction and attacks all see the masked class input. ``forward(x, with_groups=True, ...)``
    (training) is the plain :class:`FairModel`'s.
    """

    def __init__(self, model: FairModel, *, rescale: bool) -> None:
        nn.Module.__init__(self)
        self.trunk = model.trunk
        self.head = model.head
        self.group_head = model.group_head
        self.embedding_dim = model.embedding_dim
        self.num_classes = model.num_classes
        self.num_groups = model.num_groups
        self.rescale = bool(rescale)
        self.train(model.training)

    def test_mask(self, z: torch.Tensor) -> torch.Tensor:
        return gba_mask(self.group_head, z, None, rescale=self.rescale)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x)
        return z * self.test_mask(z)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        *,
        with_groups: bool = False,
        reverse: float | None = None,
        feature_mask: FeatureMask | None = None,
    ):
        if with_groups or feature_mask is not None:
            return super().forward(x, with_groups=with_groups, reverse=reverse,
                                   feature_mask=feature_mask)
        return self.head(self.embed(x))


def gba_inference(model: nn.Module, params: ModeParams) -> nn.Module:
    """``inference`` transform of ``gba``: the model itself, or with ``test_time_mask`` a
    :class:`GBATestTimeMask` view of it."""
    if not getattr(params, "test_time_mask", False):
        return model
    rescale = bool(params.rescale)  # type: ignore[attr-defined]
    return GBATestTimeMask(fair_module(model, "gba"), rescale=rescale)


class GBALoss(AdversarialWeight):
    role = "fair"

    def __init__(self, lam: float, rescale: bool, lambda_schedule: str = "constant") -> None:
        super().__init__(lam, lambda_schedule, "GBA")
        self.rescale = bool(rescale)

    def forward(self, model: torch.nn.Module, x: torch.Tensor,
                batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        inner = fair_module(model, "gba")
        group = check_groups(batch, inner.num_groups, "gba")
        kept: list[float] = []

        def mask_fn(group_head: nn.Module, z: torch.Tensor) -> torch.Tensor:
            mask = gba_mask(group_head, z, group, rescale=self.rescale)
            kept.append(float((mask > 0).float().mean()))
            return mask

        logits, group_logits, _ = model(x, with_groups=True, reverse=1.0, feature_mask=mask_fn)
        group_ce = F.cross_entropy(group_logits, group)
        logs = group_logs(group_logits, group, group_ce) | {"gba_kept": kept[0]} | self.lam_logs()
        return logits, self.current_lam * group_ce, logs

    def __call__(self, model: torch.nn.Module, batch: Batch):
        logits, extra, logs = self.forward(model, batch["x"], batch)
        ce = F.cross_entropy(logits, batch["y"])
        loss = ce + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), **logs}


@register_mode("gba", params=GBAParams, role="fair", needs_group_head=True,
               inference=gba_inference,
               summary="GBA: class head on group-gradient-masked features + reversed group CE")
def gba_loss(*, lam: float = 1.0, rescale: bool = False, test_time_mask: bool = False,
             lambda_schedule: LambdaSchedule = "constant") -> GBALoss:
    # test_time_mask changes inference only (gba_inference), not the training loss
    del test_time_mask
    return GBALoss(lam, rescale, lambda_schedule)
