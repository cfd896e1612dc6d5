"""A small CNN for RGB glyph images, with MC dropout in its head."""

from __future__ import annotations

from torch import nn

from rayfal.models.mc_dropout import MCDropout, TwoStageModel


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class SmallCNN(TwoStageModel):
    """Three conv blocks (conv-BN-ReLU-pool) then a 2-layer MLP head with MC dropout.

    Input ``[N, C, H, W]`` float in [0, 1]; ``H`` and ``W`` divisible by 8.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 8 or w % 8:
            raise ValueError(f"SmallCNN needs H and W divisible by 8, got {h}x{w}")
        self.trunk = nn.Sequential(
            *_block(c, width), *_block(width, 2 * width), *_block(2 * width, 2 * width),
            nn.Flatten(),
        )
        self.embedding_dim = 2 * width * (h // 8) * (w // 8)
        self.num_classes = num_classes
        self.head = nn.Sequential(
            MCDropout(dropout),
            nn.Linear(self.embedding_dim, hidden),
            nn.ReLU(inplace=True),
            MCDropout(dropout),
            nn.Linear(hidden, num_classes),
        )
