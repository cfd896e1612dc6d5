"""torchvision backbones by name: the backbone is the trunk, an MC-dropout head sits on top.

``model: {name: torchvision, arch: resnet18, weights: PATH.safetensors | null,
freeze_trunk: true}`` builds :class:`TorchvisionModel`:

* ``trunk`` = ImageNet normalisation (inputs are pixels in ``[0, 1]``, as every rayfal image
  pool gives them; a 1-channel input is repeated to 3) -> the torchvision network without its
  classifier (``fc`` / ``classifier`` / ``heads`` replaced by the identity) -> ``[N, D]``
  features (512 resnet18, 2048 resnet50, 576 mobilenet_v3_small, 1280 efficientnet_b0,
  768 vit_b_16). Deterministic in eval mode, so MC-dropout sampling runs it once per row
  (:func:`rayfal.models.predict.mc_probs`) and only the head ``T`` times.
* ``head`` = MCDropout -> Linear(D, hidden) -> ReLU -> MCDropout -> Linear(hidden, classes),
  as :class:`~rayfal.models.cnn.SmallCNN`'s.

Weights: random initialisation (torchvision's, under the job's seed) or a safetensors file of
the torchvision model's ``state_dict`` (e.g. saved once with ``safetensors.torch.save_file(
torchvision.models.resnet18(weights="DEFAULT").state_dict(), "resnet18.safetensors")`` on a
machine with internet access); the classifier's keys in it are ignored, every other key must
match. Nothing is downloaded at run time. The weights are loaded by :func:`load_backbone_weights`
when the job's initial model is built (on the driver); workers receive them in the model's
state like any other weights. ``freeze_trunk`` freezes the backbone
(:func:`rayfal.models.pretrain.freeze_trunk`: no gradients, batch-norm statistics kept).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rayfal.models.mc_dropout import MCDropout, TwoStageModel

#: arch -> (classifier attribute replaced by the identity, feature size)
ARCHS: dict[str, tuple[str, int]] = {
    "resnet18": ("fc", 512),
    "resnet50": ("fc", 2048),
    "mobilenet_v3_small": ("classifier", 576),
    "efficientnet_b0": ("classifier", 1280),
    "vit_b_16": ("heads", 768),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """``(x - mean) / std`` per channel; a 1-channel input is first repeated to 3 channels."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def backbone(arch: str, image_size: int) -> tuple[nn.Module, int]:
    """The torchvision network ``arch`` (random init) without its classifier, and its
    feature size."""
    import torchvision

    if arch not in ARCHS:
        raise ValueError(f"unknown torchvision arch {arch!r}; known: {sorted(ARCHS)}")
    attr, dim = ARCHS[arch]
    kwargs = {"weights": None}
    if arch == "vit_b_16":
        if image_size % 16:
            raise ValueError(f"vit_b_16 needs an image size divisible by 16, got {image_size}")
        kwargs["image_size"] = image_size
    net = getattr(torchvision.models, arch)(**kwargs)
    setattr(net, attr, nn.Identity())
    return net, dim


class TorchvisionModel(TwoStageModel):
    """A torchvision backbone as the trunk under an MC-dropout head (module docstring)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *,
                 arch: str = "resnet18", hidden: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise ValueError(f"torchvision backbones take images (1 or 3, H, W), got "
                             f"input shape {tuple(input_shape)}")
        _, h, w = input_shape
        if h < 32 or w < 32:
            raise ValueError(f"torchvision backbones need images of at least 32x32 px, got "
                             f"{h}x{w}")
        net, dim = backbone(arch, int(h))
        self.arch = arch
        self.trunk = nn.Sequential(ImageNormalize(), net)
        self.embedding_dim = dim
        self.num_classes = int(num_classes)
        self.head = nn.Sequential(
            MCDropout(dropout),
            nn.Linear(dim, hidden),
            nn.ReLU(inplace=True),
            MCDropout(dropout),
            nn.Linear(hidden, num_classes),
        )


def load_backbone_weights(model: nn.Module, path: str | Path, arch: str) -> dict[str, int]:
    """Load a torchvision ``arch`` ``state_dict`` saved as safetensors into ``model``'s
    backbone (``model.trunk[1]`` of a :class:`TorchvisionModel`, also when wrapped in a
    :class:`~rayfal.models.fair.FairModel`, which shares the trunk). The classifier's keys are
    ignored; a missing, unexpected or mis-shaped backbone key is a ``ValueError`` naming it.
    Returns ``{"loaded": n, "ignored": m}``."""
    from safetensors.torch import load_file

    trunk = getattr(model, "trunk", None)
    if not (isinstance(trunk, nn.Sequential) and len(trunk) == 2
            and isinstance(trunk[0], ImageNormalize)):
        raise ValueError("model.weights: the model is not a torchvision backbone")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model.weights: {path} not found")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"model.weights: {path} is not a readable safetensors file: "
                         f"{exc}") from None
    attr, _ = ARCHS[arch]
    net = trunk[1]
    ignored = [k for k in state if k.split(".", 1)[0] == attr]
    wanted = {k: v for k, v in state.items() if k.split(".", 1)[0] != attr}
    own = net.state_dict()
    missing = sorted(set(own) - set(wanted))
    unknown = sorted(set(wanted) - set(own))
    if missing or unknown:
        raise ValueError(f"model.weights: {path} does not fit torchvision {arch}: "
                         f"missing {missing[:5]}, unexpected {unknown[:5]}")
    bad = [k for k, v in wanted.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"model.weights: {path}: shapes differ from {arch} for {bad[:5]}")
    net.load_state_dict(wanted, strict=True)
    return {"loaded": len(wanted), "ignored": len(ignored)}


__all__ = ["ARCHS", "ImageNormalize", "TorchvisionModel", "backbone", "load_backbone_weights"]
