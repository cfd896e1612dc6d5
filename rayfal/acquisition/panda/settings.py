"""PANDA's meta-training settings (:class:`PandaSettings`), a pydantic model checked up front.

Every field is range-checked (``extra="forbid"``: an unknown name is an error), so a job file's
``params.train`` or a ``rayfal panda-train --set`` is refused before any data or Ray exists.
:meth:`PandaSettings.to_dict` is the JSON form stored in checkpoints (``train_state.json``,
``policy.json``); :meth:`PandaSettings.from_dict` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayfal.acquisition.panda.meta import DISPARITIES, InnerConfig

__all__ = ["DISPARITY_ALIASES", "PandaSettings", "settings_error_lines"]

#: long names accepted for ``disparity`` (stored as the short one)
DISPARITY_ALIASES = {
    "demographic_parity": "dp",
    "error_rate_balance": "eb",
    "equalized_odds": "eo",
}


class PandaSettings(BaseModel):
    """Meta-hyperparameters of PANDA (the tunable ones first) and run bookkeeping.

    Policy (§3.3, §4.2): ``n_layers``, ``d_model``, ``n_heads``, ``dim_feedforward``,
    ``init_temperature`` (the Gumbel temperature's initial value; it is then learned).
    Pretraining on D0 (§3.3): ``pretrain_steps`` sets of ``pretrain_set_size`` items, Adam
    ``pretrain_lr``. Algorithm 1: ``steps`` meta-iterations, Adam ``lr`` (line 4),
    ``tasks_per_step`` tasks per iteration, each a reshuffle of D into a pool of ``pool_size``
    and a validation set of ``val_size`` (line 3), ``budget`` B picks per task; the
    constraint ``disparity < rho`` with ``disparity`` in ``dp`` (demographic parity), ``eb``
    (error-rate balance) or ``eo`` (equalised odds), Table 1; the proximal step (line 5):
    ``prox_steps`` gradient steps of size ``prox_lr`` with weight ``prox_weight`` on the
    smoothed indicator (``None`` = the meta step size ``lr``, literally line 5); the simulated
    learner A (lines 8-15): ``inner_steps`` gradient steps of size ``inner_lr`` (L2
    ``inner_l2``) of a linear classifier, on all B picks at once (``inner_mode="batch"``) or
    per pick as in lines 10-12 (``"sequential"``, B times longer), see
    :class:`~rayfal.acquisition.panda.meta.InnerConfig`; ``inner_optimizer``: ``gd`` or
    ``adam`` (unrolled full-batch Adam, the campaign's optimiser). ``train_encoder``:
    meta-train every parameter instead of the final layer + temperature (§3.3).
    ``d0_size``: per task a D0 of that many rows of D; the simulated learner starts at
    ``h^0 = A(D^0)`` and trains on D0 plus the picks (0 = from zero on the picks only).
    ``temperature_final``: anneal the Gumbel temperature geometrically from
    ``init_temperature`` to this value over the steps instead of learning it.
    ``sharpness``: compute and check the constraint on ``softmax(logits / sharpness)``
    (close to the hard disparity for small values; ``None`` = the probability).

    Bookkeeping (may change between a run and its resume): ``steps``, ``checkpoint_every``,
    ``report_every``, ``keep_checkpoints`` (0 = keep all), ``threads`` (torch threads per
    worker; 0 = the process default in local mode, 1 per worker otherwise).

    Immutable; :meth:`replace` gives a validated copy with some fields changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_layers: int = Field(1, ge=1)
    d_model: int = Field(32, ge=1)
    n_heads: int = Field(4, ge=1)
    dim_feedforward: int = Field(64, ge=1)
    init_temperature: float = Field(1.0, gt=0)
    pretrain_steps: int = Field(200, ge=0)
    pretrain_set_size: int = Field(256, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)
    steps: int = Field(500, ge=0)
    lr: float = Field(1e-3, gt=0)
    tasks_per_step: int = Field(1, ge=1)
    pool_size: int = Field(1000, ge=1)
    val_size: int = Field(1000, ge=1)
    budget: int = Field(400, ge=1)
    rho: float = Field(0.04, ge=0)
    disparity: Literal["dp", "eb", "eo"] = "dp"
    prox_steps: int = Field(10, ge=0)
    prox_lr: float = Field(0.5, gt=0)
    prox_weight: float | None = Field(1.0, ge=0)
    inner_steps: int = Field(5, ge=0)
    inner_lr: float = Field(1.0, gt=0)
    inner_l2: float = Field(0.0, ge=0)
    inner_mode: Literal["batch", "sequential"] = "batch"
    inner_optimizer: Literal["gd", "adam"] = "gd"
    d0_size: int = Field(0, ge=0)
    temperature_final: float | None = Field(None, gt=0)
    sharpness: float | None = Field(None, gt=0)
    train_encoder: bool = False
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(50, ge=1)
    report_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=0)
    threads: int = Field(0, ge=0)

    #: fields that may differ between a run and the run that resumes it
    BOOKKEEPING: ClassVar[tuple[str, ...]] = (
        "steps", "checkpoint_every", "report_every", "keep_checkpoints", "threads")

    @field_validator("disparity", mode="before")
    @classmethod
    def _disparity_alias(cls, value: Any) -> Any:
        value = DISPARITY_ALIASES.get(value, value) if isinstance(value, str) else value
        if value not in DISPARITIES:
            raise ValueError(f"unknown disparity {value!r}; known: "
                             f"{', '.join([*DISPARITIES, *DISPARITY_ALIASES])}")
        return value

    @field_validator(
        "n_layers", "d_model", "n_heads", "dim_feedforward", "init_temperature",
        "pretrain_steps", "pretrain_set_size", "pretrain_lr", "steps", "lr", "tasks_per_step",
        "pool_size", "val_size", "budget", "rho", "prox_steps", "prox_lr", "prox_weight",
        "inner_steps", "inner_lr", "inner_l2", "d0_size", "temperature_final", "sharpness",
        "seed", "checkpoint_every", "report_every",
        "keep_checkpoints", "threads", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError(f"must be a number, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PandaSettings:
        if self.budget > self.pool_size:
            raise ValueError(f"budget ({self.budget}) must be in 1..pool_size "
                             f"({self.pool_size})")
        if self.d0_size and self.inner_mode == "sequential":
            raise ValueError("d0_size > 0 (D0 in the simulated learner's training set) needs "
                             "inner_mode 'batch'")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads})")
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PandaSettings:
        """Settings from a dict of field values (unknown names: one ``ValueError`` naming
        them and the known ones)."""
        known = set(cls.model_fields)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PANDA setting(s) {unknown}; known: {sorted(known)}")
        return cls.model_validate(dict(values))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> PandaSettings:
        """A validated copy with ``changes`` applied."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def core(self) -> dict[str, Any]:
        """The settings that determine the result (everything but :attr:`BOOKKEEPING`)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.BOOKKEEPING}

    def inner(self) -> InnerConfig:
        return InnerConfig(n_classes=2, steps=self.inner_steps, lr=self.inner_lr,
                           l2=self.inner_l2, mode=self.inner_mode,
                           optimizer=self.inner_optimizer)


def settings_error_lines(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic error of :class:`PandaSettings` as ``prefix<field>=<value>: <message>``
    phrases (``prefix: <message>`` for a cross-field one) joined by ``'; '``, for messages
    that name the job-file keys."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        out.append(f"{prefix}{loc}={err.get('input')!r}: {msg}" if loc
                   else f"{prefix.rstrip('.') or 'settings'}: {msg}")
    return "; ".join(out)
