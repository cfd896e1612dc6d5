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
7. No rescaling of the kept features (Eq. 8 is a plain product). ``rescale=True`` multiplies
   each row's kept features by ``D / (#kept)`` (inverted-dropout style) instead.
8. Inference (evaluation, BALD, pool scoring, attacks) uses the unmasked features: the mask
   needs the group label, and the class head is the plain ``head(trunk(x))``.
9. With more than two groups Eq. 4-7 apply unchanged (argmax/max over the G logits).
10. λ is constant over training (no Ganin-style schedule); GRL coefficient 1, λ weights the loss,
    so the discriminator's own gradient is also scaled by λ (as in Eq. 3).

Parameters: ``lam`` (λ, 1.0), ``rescale`` (False). Needs a model built with ``num_groups=G``.
The whole computation (mask included) runs inside ``model(x, with_groups=True, ...)``, through
the DDP wrapper when there is one; the mask's ``autograd.grad`` w.r.t. ``z`` does not touch
parameter gradients.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from rayfal.training.grad import fair_module, group_logs
from rayfal.training.modes import Batch, ModeParams, check_groups, register_mode


class GBAParams(ModeParams):
    """Parameters of ``gba``."""

    lam: float = Field(1.0, ge=0, description="lambda: weight of the reversed group loss")
    rescale: bool = Field(False, description="rescale each row's kept features by D / #kept")


def gba_mask(group_head: nn.Module, z: torch.Tensor, group: torch.Tensor,
             *, rescale: bool = False) -> torch.Tensor:
    """The GBA mask ``a`` of Eq. 4-7 (``[N, D]``, 0/1 unless ``rescale``), a constant tensor."""
    with torch.enable_grad():
        zd = z.detach().requires_grad_(True)
        logits = group_head(zd)
        top, pred = logits.max(dim=1)  # Eq. 5
        (g,) = torch.autograd.grad(top.sum(), zd)  # Eq. 6 (rows are independent)
    ind = torch.where(pred == group.to(pred.device), 1.0, -1.0).to(g.dtype)  # Eq. 4
    mask = ((g * ind.view(-1, *([1] * (g.dim() - 1)))) <= 0).to(z.dtype)  # Eq. 7
    if rescale:
        flat = mask.reshape(len(mask), -1)
        kept = flat.sum(dim=1).clamp(min=1.0)
        mask = (flat * (flat.shape[1] / kept).unsqueeze(1)).reshape(mask.shape)
    return mask.detach()


class GBALoss:
    role = "fair"

    def __init__(self, lam: float, rescale: bool) -> None:
        if not lam >= 0:
            raise ValueError(f"GBA lambda (lam) must be >= 0, got {lam!r}")
        self.lam = float(lam)
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
        logs = group_logs(group_logits, group, group_ce) | {"gba_kept": kept[0]}
        return logits, self.lam * group_ce, logs

    def __call__(self, model: torch.nn.Module, batch: Batch):
        logits, extra, logs = self.forward(model, batch["x"], batch)
        ce = F.cross_entropy(logits, batch["y"])
        loss = ce + extra
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), **logs}


@register_mode("gba", params=GBAParams, role="fair", needs_group_head=True,
               summary="GBA: class head on group-gradient-masked features + reversed group CE")
def gba_loss(*, lam: float = 1.0, rescale: bool = False) -> GBALoss:
    return GBALoss(lam, rescale)

