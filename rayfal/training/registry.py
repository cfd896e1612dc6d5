"""The training-mode registry: name -> loss factory, with each mode's declared parameters.

A mode registers its factory with :func:`register_mode`, declaring next to it (in its own file)

* ``Params`` — a pydantic model of its ``mode_params`` (:class:`ModeParams`: unknown keys are
  errors, types are strict), so a job file is checked before any data or Ray exists;
* ``summary`` — one line for ``rayfal strategies``;
* ``role`` — ``"base"`` (does not compose), ``"robust"`` or ``"fair"`` (see
  :mod:`rayfal.training.compose`);
* ``needs_group_head`` — the model needs a group head (GRAD, GBA);
* ``post_fit`` — the mode fits something after the network (``fairlearn``);
* ``inference`` — ``inference(model, params) -> model``: how the trained network predicts when
  that is not the plain ``model(x)`` (GBA's ``test_time_mask``); ``params`` is the validated
  ``Params`` instance (of the composition, for a composed mode). See
  :func:`rayfal.training.compose.inference_model`.

A loss whose value depends on the training progress (a λ ramp) has ``set_progress(p)``, called
by the loop before every step (:mod:`rayfal.training.loop`).

This module imports nothing else of rayfal.training: the mode files and the composition rules
import it, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from rayfal.registry import Registry

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
ModeRole = Literal["base", "robust", "fair"]

#: name -> factory(**mode_params) -> LossFn (the factory carries ``Params``, ``summary``, ...)
MODES: Registry = Registry("training mode")


class ModeParams(BaseModel):
    """Base of every mode's ``Params``: unknown keys are errors, no parameters by default."""

    model_config = ConfigDict(extra="forbid", strict=True)


def register_mode(
    name: str,
    *,
    params: type[ModeParams] = ModeParams,
    summary: str,
    role: ModeRole = "base",
    needs_group_head: bool = False,
    post_fit: bool = False,
    inference: Callable[[torch.nn.Module, ModeParams], torch.nn.Module] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a loss factory as training mode ``name`` (module docstring)."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        factory.Params = params  # type: ignore[attr-defined]
        factory.summary = summary  # type: ignore[attr-defined]
        factory.role = role  # type: ignore[attr-defined]
        factory.needs_group_head = needs_group_head  # type: ignore[attr-defined]
        factory.post_fit = post_fit  # type: ignore[attr-defined]
        factory.inference = inference  # type: ignore[attr-defined]
        factory.mode_name = name  # type: ignore[attr-defined]
        return MODES.register(name)(factory)

    return deco


def mode_parts(name: str) -> tuple[str, ...]:
    """``"trades+grad"`` -> ``("trades", "grad")`` (whitespace around parts is ignored)."""
    parts = tuple(p.strip() for p in str(name).split("+"))
    if not all(parts):
        raise ValueError(f"malformed training mode {name!r}: empty part around '+'")
    return parts
