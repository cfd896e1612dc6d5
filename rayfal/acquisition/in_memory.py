"""``in_memory``: a per-row strategy run inside the driver as a whole-pool selection."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from rayfal.acquisition.base import (
    STRATEGIES,
    Strategy,
    StrategyParams,
    make_strategy,
    select_in_memory,
)
from rayfal.acquisition.view import PoolView, WholePoolStrategy

__all__ = ["InMemoryParams", "InMemoryStrategy"]

log = logging.getLogger("rayfal")


def _base_class(name: str) -> type[Strategy]:
    try:
        cls = STRATEGIES.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if cls.kind != "per_row":
        per_row = ", ".join(n for n in STRATEGIES.names() if STRATEGIES.get(n).kind == "per_row")
        raise ValueError(f"base '{name}' is a {cls.kind} strategy; in_memory runs a per_row "
                         f"strategy ({per_row})")
    return cls


class InMemoryParams(StrategyParams):
    """``base``: the per-row strategy to run; every other key is a parameter of ``base`` (flat
    in the same mapping, e.g. ``{base: jin_like, eps: 0.1}``), validated by ``base``'s own
    ``Params``: an unknown or invalid one is an error naming the key."""

    model_config = ConfigDict(extra="allow", frozen=True)

    base: str

    @field_validator("base")
    @classmethod
    def _per_row_base(cls, base: str) -> str:
        _base_class(base)
        return base

    @model_validator(mode="after")
    def _base_params(self) -> InMemoryParams:
        base_cls = _base_class(self.base)
        try:
            base_cls.Params.model_validate(self.base_params)
        except ValidationError as exc:
            # re-raised with the keys' own locations (``params.<key>``) and the base named
            allowed = ", ".join(["base", *sorted(base_cls.Params.model_fields)])
            errors: list[InitErrorDetails] = []
            for err in exc.errors():
                if err["type"] == "extra_forbidden":
                    kind = PydanticCustomError(
                        "unknown_base_parameter",
                        "unknown parameter of base strategy '{base}' (allowed: {allowed})",
                        {"base": self.base, "allowed": allowed})
                else:
                    kind = PydanticCustomError(
                        "invalid_base_parameter", "{msg} (base strategy '{base}')",
                        {"msg": err["msg"], "base": self.base})
                errors.append({"type": kind, "loc": err["loc"], "input": err["input"]})
            raise ValidationError.from_exception_data(type(self).__name__, errors) from None
        return self

    @property
    def base_params(self) -> dict[str, Any]:
        """The keys other than ``base``: the base strategy's parameters (raw)."""
        return dict(self.model_extra or {})


@STRATEGIES.register("in_memory")
class InMemoryStrategy(WholePoolStrategy):
    """Any per-row strategy (``base``: random, entropy, margin, bald, group_random, ...) scored
    in the driver process through :func:`~rayfal.acquisition.base.select_in_memory` instead of
    a Ray Data job: the same selection (same scores, reducer and tie-breaks), without Ray
    Data's start-up cost, for pools that fit in memory (``N x C x T`` probabilities). Lets
    small experiments compare selection times of per-row and whole-pool strategies on equal
    terms.

    Parameters (:class:`InMemoryParams`): ``base`` plus the base strategy's own parameters,
    flat. ``worst_group`` (a run-time input, not a parameter) is passed on when the base
    strategy requires it.

    ``requires`` is a class attribute, so it declares the union of what its bases may need:
    ``model`` (for ``probs``: the MC-dropout probabilities are computed from the view's model)
    and ``worst_group``; a given base uses a subset (see ``self.base.requires``).
    """

    name = "in_memory"
    summary = "any per-row strategy (params.base) scored in the driver, without Ray Data"
    requires = frozenset({"model", "worst_group"})
    Params = InMemoryParams

    def __init__(self, *, seed: int, round: int = 0, worst_group: int | None = None,
                 **params: Any) -> None:
        super().__init__(seed=seed, round=round, **params)
        base_params = self.params.base_params
        if "worst_group" in STRATEGIES.get(self.params.base).requires:
            base_params["worst_group"] = worst_group
        self.base = make_strategy(self.params.base, seed=seed, round=round, **base_params)

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        ids, groups = view.unlabelled_ids, view.unlabelled_groups
        probs = None
        if self.base.needs_probs:
            g = view.gather(ids, ("mc",))
            ids, groups, probs = g["row_id"], g["group"], g["mc"]
        return select_in_memory(self.base, ids, groups, budget, probs=probs)
