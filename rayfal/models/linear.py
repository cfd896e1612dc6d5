"""A linear (logistic-regression) classifier for tabular features, as a :class:`TwoStageModel`.

PANDA's experiments (Sharaf et al. 2022, §4.2) train "a linear classifier" on the selected
samples. The trunk is the identity (the embedding is the input vector, so coreset/BADGE work on
the features themselves) and the head one ``Linear`` layer; there is no dropout, so MC sampling
returns T identical samples (BALD is 0; entropy/margin are those of the logistic model).
"""

from __future__ import annotations

from torch import nn

from rayfal.models.mc_dropout import TwoStageModel


class Linear(TwoStageModel):
    """``head(trunk(x)) = x W + b`` with ``trunk = Identity``."""

    def __init__(self, input_shape: tuple[int], num_classes: int, *, hidden: int = 0,
                 dropout: float = 0.0) -> None:
        """``hidden``/``dropout`` (the job's ``model`` section) do not apply and are ignored."""
        super().__init__()
        (d,) = input_shape
        self.trunk = nn.Identity()
        self.embedding_dim = d
        self.num_classes = num_classes
        self.head = nn.Linear(d, num_classes)
