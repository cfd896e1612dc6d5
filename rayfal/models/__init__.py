"""Models: a small CNN for images and an MLP for tabular data, both with MC dropout; optionally
wrapped in a :class:`FairModel` that adds a group head (GRAD / GBA training modes)."""

from __future__ import annotations

from typing import Any

from rayfal.models.cnn import SmallCNN
from rayfal.models.fair import FairModel, GradientReversal, GroupHead, grad_reverse
from rayfal.models.linear import Linear
from rayfal.models.mc_dropout import (
    MCDropout,
    TwoStageModel,
    deterministic_dropout,
    dropout_masks,
)
from rayfal.models.mlp import MLP
from rayfal.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("cnn")(SmallCNN)
MODELS.register("mlp")(MLP)
MODELS.register("linear")(Linear)  # logistic regression (PANDA's learner, rayfal/models/linear.py)


@MODELS.register("torchvision")
def _torchvision(input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> TwoStageModel:
    """A torchvision backbone under an MC-dropout head (rayfal/models/torchvision_backbone.py);
    torchvision's model code is imported only when one is built."""
    from rayfal.models.torchvision_backbone import TorchvisionModel

    return TorchvisionModel(tuple(input_shape), num_classes, **kwargs)


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    num_groups: int | None = None,
    group_hidden: int | None = None,
    **kwargs: Any,
) -> TwoStageModel:
    """Build a registered model; ``name='auto'`` picks ``cnn`` for images, ``mlp`` for vectors;
    ``name='custom'`` with ``target='pkg.mod:Class'`` builds a user's model
    (:mod:`rayfal.models.custom`).

    With ``num_groups=G`` the model is wrapped in a :class:`FairModel` with a ``G``-way group
    head (hidden size ``group_hidden``, default 64) for the ``grad``/``gba`` training modes.
    Passing the same keys to :func:`rayfal.models.checkpoint.model_spec` makes checkpoints
    rebuild the group head.
    """
    if name == "auto":
        name = "cnn" if len(input_shape) == 3 else "mlp"
    if name == "custom":  # a user's model by import path (rayfal/models/custom.py)
        from rayfal.models.custom import build_custom

        base = build_custom(kwargs.pop("target"), tuple(input_shape), num_classes, **kwargs)
    else:
        base = MODELS.get(name)(tuple(input_shape), num_classes, **kwargs)
    if num_groups is None:
        if group_hidden is not None:
            raise ValueError("group_hidden is only meaningful with num_groups (a group head)")
        return base
    return FairModel(base, int(num_groups),
                     group_hidden=64 if group_hidden is None else int(group_hidden))


__all__ = [
    "MLP",
    "MODELS",
    "FairModel",
    "GradientReversal",
    "GroupHead",
    "MCDropout",
    "SmallCNN",
    "TwoStageModel",
    "build_model",
    "deterministic_dropout",
    "dropout_masks",
    "grad_reverse",
]
