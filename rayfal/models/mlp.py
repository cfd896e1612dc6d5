"""An MLP for tabular features, with MC dropout after its first hidden layer."""

from __future__ import annotations

from torch import nn

from rayfal.models.mc_dropout import MCDropout, TwoStageModel


class MLP(TwoStageModel):
    """``Linear-BN-ReLU`` trunk, then ``MCDropout-Linear-ReLU-MCDropout-Linear`` head."""

    def __init__(
        self,
        input_shape: tuple[int],
        num_classes: int,
        *,
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        (d,) = input_shape
        self.trunk = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.embedding_dim = hidden
        self.num_classes = num_classes
        self.head = nn.Sequential(
            MCDropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            MCDropout(dropout),
            nn.Linear(hidden, num_classes),
        )
