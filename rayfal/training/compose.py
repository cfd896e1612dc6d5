"""Composed training modes: one robustness term plus one adversarial fairness term.

A composed mode is named ``"<robust>+<fairness>"`` (either order is accepted) and gets the union
of its parts' parameters, e.g. ``make_loss("trades+grad", beta=6.0, lam=0.5, eps=4/255)``.
The robust part decides on which inputs the classifier is trained; the fairness part decides how
the classifier reads the features and adds ``λ·CE(group head behind gradient reversal)``:

* ``pgd_at+grad`` — ``CE(f(x_adv), y) + λ·CE_a(x_adv)``: PGD-CE attack on the plain classifier,
  then the GRAD objective (Eq. 2) on the adversarial batch.
* ``pgd_at+gba`` — the GBA objective (Eq. 4-8, mask computed at ``x_adv``) on the adversarial
  batch.
* ``trades+grad`` — ``CE(f(x), y) + β·KL(p(x) ‖ p(x_adv)) + λ·CE_a(x)``: the clean forward is
  GRAD's (class and group logits from one pass), the adversarial forward is the plain classifier.

Rejected, with an error naming the combination:

* two robust terms (``pgd_at+trades``) or two fairness terms (``grad+gba``): they optimise the
  same thing two ways; pick one;
* ``trades+gba``: TRADES' KL would compare GBA's *masked* clean prediction (its mask needs the
  clean features and group labels) with an *unmasked* adversarial one, which is not the TRADES
  objective; use ``pgd_at+gba`` or ``trades+grad``;
* anything with ``standard`` (the plain mode is what every other mode extends: use the other part
  alone), a repeated part, or more than two parts.

This module also holds the dispatch by name (:func:`make_loss`, :func:`needs_group_head`,
:func:`inference_model`) and the checks the job-file validation uses without building anything
(:func:`check_mode`, :func:`mode_params_model`). It imports the registry only
(:mod:`rayfal.training.registry`), so :mod:`rayfal.training.modes` can re-export it without an
import circle.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
from pydantic import create_model

from rayfal.training.registry import MODES, Batch, LossFn, ModeParams, mode_parts

#: (robust, fairness) pairs that compose
SUPPORTED: frozenset[tuple[str, str]] = frozenset(
    {("pgd_at", "grad"), ("pgd_at", "gba"), ("trades", "grad")}
)
_REASONS = {
    ("trades", "gba"): "TRADES' KL would compare GBA's masked clean prediction with an unmasked "
                       "adversarial one; use 'pgd_at+gba' or 'trades+grad'",
}


def supported_compositions() -> list[str]:
    return sorted(f"{r}+{f}" for r, f in SUPPORTED)


def mode_names() -> list[str]:
    """Every accepted ``training.mode``: the registered modes, then the compositions."""
    return MODES.names() + supported_compositions()


def _reject(name: str, why: str) -> ValueError:
    return ValueError(f"unsupported training mode combination '{name}': {why}. Supported "
                      f"combinations: {', '.join(supported_compositions())}")


def check_mode(name: str) -> tuple[str, ...]:
    """The parts of a registered mode or a supported composition (nothing is built).

    Unknown names raise ``KeyError`` listing the known modes; malformed or unsupported
    compositions ``ValueError`` naming the combination and the supported ones.
    """
    parts = mode_parts(name)
    if len(parts) == 1:
        MODES.get(parts[0])
        return parts
    joined = "+".join(parts)
    if len(parts) != 2:
        raise _reject(joined, "compose exactly one robust mode with one fairness mode")
    if parts[0] == parts[1]:
        raise _reject(joined, f"'{parts[0]}' is repeated")
    roles = [getattr(MODES.get(p), "role", "base") for p in parts]  # unknown names: KeyError listing the known ones
    if "base" in roles:
        base = parts[roles.index("base")]
        raise _reject(joined, f"'{base}' does not compose; use the other mode alone")
    if roles[0] == roles[1]:
        kind = "robustness" if roles[0] == "robust" else "fairness"
        raise _reject(joined, f"'{parts[0]}' and '{parts[1]}' are both {kind} terms; pick one")
    r_i = roles.index("robust")
    pair = (parts[r_i], parts[1 - r_i])
    if pair not in SUPPORTED:
        raise _reject(joined, _REASONS.get(pair, "this pair is not implemented"))
    return parts


@cache
def _params_model(parts: tuple[str, ...]) -> type[ModeParams]:
    models = [getattr(MODES.get(p), "Params", ModeParams) for p in parts]
    if len(models) == 1:
        return models[0]
    fields: dict[str, Any] = {}
    for model in models:
        for key, info in model.model_fields.items():
            if key in fields:
                raise ValueError(f"parameter '{key}' is ambiguous in mode '{'+'.join(parts)}'")
            fields[key] = (info.annotation, info)
    cls = create_model("".join(p.title().replace("_", "") for p in parts) + "Params",
                       __base__=ModeParams, **fields)
    # the parts' constraints travel with their FieldInfo (Field(ge=...), Annotated validators)
    cls.__doc__ = f"Parameters of the composed mode '{'+'.join(parts)}' (union of its parts')."
    return cls


def mode_params_model(name: str) -> type[ModeParams]:
    """The pydantic model of ``mode_params`` for mode ``name`` (a composition takes the union
    of its parts' parameters)."""
    return _params_model(check_mode(name))


def validate_mode_params(name: str, params: dict[str, Any]) -> ModeParams:
    """``params`` checked against the mode's parameter model(s); raises pydantic's
    ``ValidationError`` (locations relative to ``mode_params``)."""
    return _params_model(check_mode(name)).model_validate(dict(params))


def mode_summary(name: str) -> str:
    parts = check_mode(name)
    return " + ".join(getattr(MODES.get(p), "summary", "") for p in parts)


def _split_params(parts: Sequence[str], factories: Sequence[Any],
                  params: dict[str, Any]) -> list[dict[str, Any]]:
    accepted = [set(inspect.signature(f).parameters) for f in factories]
    out: list[dict[str, Any]] = [{} for _ in parts]
    unknown = []
    for key, value in params.items():
        owners = [i for i, acc in enumerate(accepted) if key in acc]
        if not owners:
            unknown.append(key)
        elif len(owners) > 1:
            raise ValueError(f"parameter '{key}' is ambiguous in mode '{'+'.join(parts)}' "
                             f"(taken by {[parts[i] for i in owners]})")
        else:
            out[owners[0]][key] = value
    if unknown:
        takes = "; ".join(f"'{p}' takes {sorted(a)}" for p, a in zip(parts, accepted, strict=True))
        raise TypeError(f"training mode '{'+'.join(parts)}' got unknown parameter(s) "
                        f"{sorted(unknown)}; {takes}")
    return out


def compose(parts: Sequence[str], **params: Any) -> LossFn:
    """The loss of a ``robust+fairness`` composition (see the module docstring)."""
    parts = check_mode("+".join(parts))
    if len(parts) != 2:  # a single registered name: not a composition
        raise _reject(parts[0], "compose exactly one robust mode with one fairness mode")
    factories = [MODES.get(p) for p in parts]
    r_i = [getattr(f, "role", "base") for f in factories].index("robust")
    kwargs = _split_params(parts, factories, params)
    robust = factories[r_i](**kwargs[r_i])
    fair = factories[1 - r_i](**kwargs[1 - r_i])

    def loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return robust.term(model, batch, fair.forward)

    def set_progress(p: float) -> None:  # the parts' schedules (a fairness λ ramp)
        for part in (robust, fair):
            if hasattr(part, "set_progress"):
                part.set_progress(p)

    loss.robust = robust  # type: ignore[attr-defined]
    loss.fair = fair  # type: ignore[attr-defined]
    loss.set_progress = set_progress  # type: ignore[attr-defined]
    return loss


def make_loss(name: str, **params: Any) -> LossFn:
    """Build the loss function of a registered training mode or a supported composition."""
    parts = mode_parts(name)
    if len(parts) > 1:
        return compose(parts, **params)
    return MODES.get(parts[0])(**params)


def inference_model(name: str, params: dict[str, Any],
                    model: torch.nn.Module) -> torch.nn.Module:
    """The trained ``model`` as it predicts under mode ``name`` with ``mode_params`` ``params``.

    The model itself for every mode but those declaring an ``inference`` transform (GBA with
    ``test_time_mask: true``: a view of the same modules whose class head reads masked
    features). Apply it to a loaded checkpoint before evaluation and scoring; the returned
    model shares the parameters (and state-dict keys) of ``model``.
    """
    parts = check_mode(name)
    validated = _params_model(parts).model_validate(dict(params))
    for part in parts:
        transform = getattr(MODES.get(part), "inference", None)
        if transform is not None:
            model = transform(model, validated)
    return model


def needs_group_head(name: str) -> bool:
    """Whether the mode (or any part of a composition) trains a group head."""
    return any(getattr(MODES.get(p), "needs_group_head", False) for p in mode_parts(name))
