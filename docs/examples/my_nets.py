"""A user's own torch model, referenced from a job as ``model.target: "my_nets:Net"``."""

from torch import nn


class Net(nn.Module):
    """Any classifier with the signature ``(input_shape, num_classes, **kwargs)``."""

    def __init__(self, input_shape, num_classes, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)
