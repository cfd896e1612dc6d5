"""A group (sensitive-attribute) head on the shared features, and the gradient-reversal layer.

GRAD (Eq. 2 of Branchaud-Charron et al. 2021; Raff & Sylvester 2018) and GBA (Kurmi et al.
2022, Eq. 1-8) both train a group classifier ``f_a`` (GBA's discriminator ``D``) on the shared
features ``z = h(x)`` (GBA's ``f_i = F(x_i)``), behind a gradient-reversal layer (Ganin &
Lempitsky 2015) so that the feature extractor learns to *remove* group information.

:class:`FairModel` wraps a :class:`~rayfal.models.mc_dropout.TwoStageModel`: it keeps the base's
``trunk`` (``h``) and class ``head`` (``f_y``) unchanged and adds ``group_head``. Its plain
``forward(x)`` is the class logits ``head(trunk(x))``, so MC-dropout prediction, BALD, evaluation
and pool scoring (which call ``embed``/``head``) only ever see the class head. Training modes
call ``model(x, with_groups=True, ...)`` — through the DDP wrapper when there is one, so that
gradient synchronisation is armed by the wrapper's forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rayfal.models.mc_dropout import TwoStageModel

#: ``feature_mask(group_head, z) -> mask`` (same shape as ``z``), applied to the class head's input
FeatureMask = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Gradient reversal (Ganin & Lempitsky 2015): identity forward, ``-lambda_ * grad`` backward.

    Layers after it (the group head) minimise their loss; layers before it (the trunk) receive
    the reversed gradient and so maximise it.
    """
    return _GradReverse.apply(x, lambda_)


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a layer with a fixed coefficient ``lambda_``."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class GroupHead(nn.Module):
    """The group classifier ``f_a(z)``: ``Linear-ReLU-Linear`` (or one ``Linear`` if hidden=0).

    It has no batch-norm and no dropout on purpose: it acts on every row independently, so the
    gradient of the batch sum of a per-row output w.r.t. ``z`` is the per-row gradient (GBA's
    Eq. 6 relies on this) and it is deterministic in train and eval mode alike.
    """

    def __init__(self, embedding_dim: int, num_groups: int, hidden: int = 64) -> None:
        super().__init__()
        if num_groups < 2:
            raise ValueError(f"a group head needs num_groups >= 2, got {num_groups}")
        if hidden < 0:
            raise ValueError(f"group head hidden size must be >= 0, got {hidden}")
        if hidden == 0:
            self.net: nn.Module = nn.Linear(embedding_dim, num_groups)
        else:
            self.net = nn.Sequential(
                nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_groups)
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FairModel(TwoStageModel):
    """A :class:`TwoStageModel` plus a group head on its embedding ``z = trunk(x)``.

    The state dict holds ``trunk.*`` and ``head.*`` exactly as the base model's, plus
    ``group_head.*``. Build it with ``build_model(name, ..., num_groups=G)`` so that the JSON
    spec (``model_spec(..., num_groups=G)``) rebuilds it from a checkpoint.
    """

    def __init__(self, base: TwoStageModel, num_groups: int, *, group_hidden: int = 64) -> None:
        super().__init__()
        self.trunk = base.trunk
        self.head = base.head
        self.embedding_dim = base.embedding_dim
        self.num_classes = base.num_classes
        self.num_groups = int(num_groups)
        self.group_head = GroupHead(self.embedding_dim, self.num_groups, group_hidden)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        *,
        with_groups: bool = False,
        reverse: float | None = None,
        feature_mask: FeatureMask | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits; with ``with_groups=True`` ``(class_logits, group_logits, z)``.

        ``reverse=λ`` puts a gradient-reversal layer (coefficient λ) between ``z`` and the
        group head. ``feature_mask(group_head, z)`` multiplies the class head's input
        (GBA's Eq. 8: ``f_cls = f * a``); the group head always sees the unmasked ``z``.
        Keyword arguments pass through a DDP wrapper unchanged.
        """
        z = self.trunk(x)
        z_cls = z if feature_mask is None else z * feature_mask(self.group_head, z)
        logits = self.head(z_cls)
        if not with_groups:
            return logits
        z_grp = z if reverse is None else grad_reverse(z, reverse)
        return logits, self.group_head(z_grp), z

    def forward_with_groups(
        self,
        x: torch.Tensor,
        *,
        reverse: float | None = None,
        feature_mask: FeatureMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(class_logits, group_logits, z)``; same as ``forward(x, with_groups=True, ...)``."""
        return self(x, with_groups=True, reverse=reverse, feature_mask=feature_mask)


__all__ = ["FairModel", "FeatureMask", "GradientReversal", "GroupHead", "grad_reverse"]
