"""MC dropout that stays stochastic in ``eval()`` (Gal & Ghahramani, 2016).

BALD (Eq. 1 of the BALD-fairness paper) needs samples from p(w | D); MC dropout draws them by
keeping dropout on at prediction time. Batch-norm must stay deterministic while doing so, so
never call ``model.train()`` to sample: use these modules, which ignore the train/eval flag.

Gradient-based attacks (:mod:`rayfal.attacks`) need a deterministic network instead: inside
:func:`deterministic_dropout` every :class:`MCDropout` is the identity (the expected activation,
since MC dropout uses inverted scaling).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

#: (module, activation) -> scaled keep-mask; set by :func:`dropout_masks`.
MaskProvider = Callable[["MCDropout", torch.Tensor], torch.Tensor]
_MASKS: contextvars.ContextVar[MaskProvider | None] = contextvars.ContextVar(
    "rayfal_mc_masks", default=None
)


@contextlib.contextmanager
def dropout_masks(provider: MaskProvider) -> Iterator[None]:
    """Within the block, every :class:`MCDropout` multiplies by ``provider(module, x)``."""
    token = _MASKS.set(provider)
    try:
        yield
    finally:
        _MASKS.reset(token)


_DETERMINISTIC: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rayfal_deterministic_dropout", default=False
)


@contextlib.contextmanager
def deterministic_dropout(enabled: bool = True) -> Iterator[None]:
    """Within the block every :class:`MCDropout` is the identity (also inside
    :func:`dropout_masks`, which it overrides); ``enabled=False`` re-enables sampling."""
    token = _DETERMINISTIC.set(bool(enabled))
    try:
        yield
    finally:
        _DETERMINISTIC.reset(token)


class MCDropout(nn.Dropout):
    """Dropout that is always on (also in ``eval()``); ``p=0`` makes it the identity.

    Inside :func:`dropout_masks` the mask comes from the provider instead of the global RNG,
    which makes MC samples a pure function of (seed, row) whatever the batching. Inside
    :func:`deterministic_dropout` it is the identity.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or _DETERMINISTIC.get():
            return x
        provider = _MASKS.get()
        if provider is not None:
            return x * provider(self, x)
        return F.dropout(x, self.p, training=True, inplace=False)


class TwoStageModel(nn.Module):
    """A classifier split at its first dropout: ``forward(x) = head(trunk(x))``.

    ``trunk`` is deterministic in eval mode (convolutions, batch-norm, ...); ``head`` holds every
    stochastic (MC-dropout) layer. MC sampling therefore runs ``trunk`` once per batch and
    ``head`` T times (see :func:`rayfal.models.predict.mc_probs`).
    """

    trunk: nn.Module
    head: nn.Module
    embedding_dim: int
    num_classes: int

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic features ``[N, D]`` (the input of the first dropout)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
