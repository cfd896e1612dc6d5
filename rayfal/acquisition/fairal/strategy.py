"""``fairal``: Fair Active Learning (Anahideh et al. 2022) as a whole-pool strategy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from torch import nn

from rayfal.acquisition.base import STRATEGIES, StrategyParams
from rayfal.acquisition.fairal.refit import LogisticHead, RefitConfig, fit_logistic_head
from rayfal.acquisition.fairal.select import fairal_select
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_size

__all__ = ["AlphaSchedule", "FairALParams", "FairALStrategy"]


class AlphaSchedule(BaseModel):
    """``alpha`` linear over the campaign's rounds: ``start`` at round 0, ``end`` at the last
    (:func:`~rayfal.acquisition.fairal.scores.resolve_alpha`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(ge=0, le=1)
    end: float = Field(ge=0, le=1)


def _alpha_kind(value: Any) -> str:
    return "schedule" if isinstance(value, (Mapping, AlphaSchedule)) else "constant"


#: a constant in [0, 1] or a ``{start, end}`` schedule (errors name ``alpha.constant`` or
#: ``alpha.schedule.<key>``)
AlphaParam = Annotated[
    Union[  # noqa: UP007 (a tagged union needs the Union form)
        Annotated[float, Field(ge=0, le=1), Tag("constant")],
        Annotated[AlphaSchedule, Tag("schedule")],
    ],
    Discriminator(_alpha_kind),
]


class FairALParams(StrategyParams):
    """FairAL's job-file parameters (see :class:`FairALStrategy`)."""

    alpha: AlphaParam = 0.6
    measure: Literal["dp", "eo", "mi"] = "dp"
    mode: Literal["batch", "nested", "sequential"] = "batch"
    subsample: int | None = Field(1000, ge=1)
    fair_size: int | None = Field(1000, ge=1)
    nested_k: int | None = Field(None, ge=1)
    refit: Literal["head", "model"] = "head"
    steps: int = Field(20, ge=0)
    lr: float = Field(0.5, gt=0)
    l2: float = Field(1e-3, ge=0)
    method: Literal["gd", "newton"] = "gd"
    head_steps: int = Field(300, ge=0)
    engine: Literal["fast", "reference"] = "fast"
    sequential_rule: Literal["combined", "nested"] = "combined"

    @field_validator("method")
    @classmethod
    def _newton_needs_a_sigmoid_head(cls, method: str) -> str:
        # the strategy's head is a softmax head (refit: head fits C columns, refit: model takes
        # the linear model's C outputs), and Newton refits support the one-column sigmoid head
        # only (RefitConfig): refuse at load time what would fail after round 0's training
        if method == "newton":
            raise ValueError("'newton' needs a one-column sigmoid head, but the fairal strategy "
                             "refits a softmax head; use 'gd'")
        return method

    def alpha_value(self) -> float | dict[str, float]:
        """``alpha`` as :func:`~rayfal.acquisition.fairal.scores.resolve_alpha` takes it."""
        if isinstance(self.alpha, AlphaSchedule):
            return self.alpha.model_dump()
        return float(self.alpha)

    def refit_config(self) -> RefitConfig:
        return RefitConfig(steps=self.steps, lr=self.lr, l2=self.l2, method=self.method)


@STRATEGIES.register("fairal")
class FairALStrategy(WholePoolStrategy):
    """Fair Active Learning (Anahideh et al. 2022),
    :func:`~rayfal.acquisition.fairal.select.fairal_select`.

    Parameters (:class:`FairALParams`): ``alpha`` (a number in [0, 1] or ``{start, end}``:
    linear over the rounds; PANDA §4.3 uses 0.6), ``measure`` ``dp|eo|mi``, ``mode``
    ``batch|nested|sequential`` (sequential asks the oracle after each pick, FAL's original
    loop; ``sequential_rule`` ``combined|nested``), ``subsample`` candidates (default 1000),
    ``fair_size`` rows of the fairness set (the campaign layer samples them from the data's
    ``meta`` split; without one the labelled set is used), ``nested_k``, and the refit:

    * ``refit: head`` (default; deep models): a logistic head fitted on the frozen trunk
      features (``model.embed``) of the labelled set (``head_steps`` gradient steps from 0),
      then each per-candidate refit warm-starts from it;
    * ``refit: model``: the whole model is refitted; only for the ``linear`` model (a logistic
      regression, whose whole model *is* the head: warm start from the trained weights). For
      MLPs/CNNs this is refused (refitting a deep net per candidate and label is what FairAL's
      fast path avoids; use ``head``).

    ``steps``, ``lr``, ``l2``, ``method`` form the
    :class:`~rayfal.acquisition.fairal.refit.RefitConfig`; ``engine`` ``fast|reference``.
    ``method: newton`` is refused when the job is loaded: Newton refits need a one-column
    sigmoid head and this strategy's head is a softmax head (with ``gd`` only).

    ``requires``: the round's ``model``, a ``fairness`` set and the ``oracle`` — the oracle is
    only called in ``mode: sequential`` (``requires`` is per class, so it is always declared).
    """

    name = "fairal"
    summary = "FairAL: entropy vs expected unfairness after per-candidate refits (Anahideh 2022)"
    requires = frozenset({"model", "fairness", "oracle"})
    Params = FairALParams

    def __init__(self, *, seed: int, round: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, round=round, **params)
        self.refit_cfg = self.params.refit_config()

    def fairness_rows(self) -> int | None:
        """``fair_size``: rows of the fairness set the campaign samples for ``view.fairness``."""
        return self.params.fair_size

    def _head(self, view: PoolView, emb_l: np.ndarray) -> LogisticHead:
        model = view.model
        n_labels = int(getattr(model, "num_classes", 2))
        if self.params.refit == "model":
            if not isinstance(model.trunk, nn.Identity) or not isinstance(model.head, nn.Linear):
                raise ValueError("fairal refit 'model' needs the 'linear' model (trunk = "
                                 "identity, head = one Linear layer); use refit: head")
            w = model.head.weight.detach().double().T.contiguous()  # [D, C]
            b = model.head.bias.detach().double().clone()
            return LogisticHead(w, b)
        y = view.labelled.y
        return fit_logistic_head(emb_l, y, n_labels, binary=False, steps=self.params.head_steps,
                                 lr=self.refit_cfg.lr, l2=self.refit_cfg.l2)

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        p = self.params
        cand = self.candidates(view, subsample_size(p.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("x", "emb"))
        emb_l = view.labelled_embeddings()
        fair = view.fairness if view.fairness is not None else view.labelled
        emb_f = view.embed(fair.x)
        head = self._head(view, emb_l)
        oracle = None
        if p.mode == "sequential":
            if view.oracle is None:
                raise ValueError("strategy 'fairal' mode 'sequential' needs the view's oracle")

            def oracle(i: int) -> int:
                return int(view.oracle(g["row_id"][[i]])[0])
        idx = fairal_select(
            head, emb_l, view.labelled.y, g["emb"], emb_f, fair.group, budget,
            mode=p.mode, alpha=p.alpha_value(), round=view.round, n_rounds=view.n_rounds,
            nested_k=p.nested_k, oracle=oracle, sequential_rule=p.sequential_rule,
            y_fair=fair.y, measure=p.measure, refit=self.refit_cfg, engine=p.engine,
        )
        view.info.update({"strategy": self.name, "candidates": len(cand),
                          "fairness_rows": len(fair.y), "refit": p.refit})
        return g["row_id"][np.asarray(idx, np.int64)]
