"""Models: a small CNN for images and an MLP for tabular data, both with MC dropout."""

from __future__ import annotations

from typing import Any

from rayfal.models.cnn import SmallCNN
from rayfal.models.mc_dropout import MCDropout, TwoStageModel
from rayfal.models.mlp import MLP
from rayfal.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("cnn")(SmallCNN)
MODELS.register("mlp")(MLP)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any
) -> TwoStageModel:
    """Build a registered model; ``name='auto'`` picks ``cnn`` for images, ``mlp`` for vectors."""
    if name == "auto":
        name = "cnn" if len(input_shape) == 3 else "mlp"
    return MODELS.get(name)(tuple(input_shape), num_classes, **kwargs)


__all__ = ["MLP", "MODELS", "MCDropout", "SmallCNN", "TwoStageModel", "build_model"]
