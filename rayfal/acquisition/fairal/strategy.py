"""``fairal``: Fair Active Learning (Anahideh et al. 2022) as a whole-pool strategy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import nn

from rayfal.acquisition.base import STRATEGIES, StrategyParams
from rayfal.acquisition.fairal.refit import (
    LogisticHead,
    RefitConfig,
    fit_exact,
    fit_logistic_head,
)
from rayfal.acquisition.fairal.scores import FairALScores
from rayfal.acquisition.fairal.select import fairal_select
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_ids, subsample_size

__all__ = ["FAITHFUL_DEFAULTS", "AlphaSchedule", "FairALParams", "FairALStrategy",
           "sensitive_columns"]


class AlphaSchedule(BaseModel):
    """``alpha`` from ``start`` to ``end`` over the campaign
    (:func:`~rayfal.acquisition.fairal.scores.resolve_alpha`): linear over the rounds by
    default; ``levels: L`` makes it the FairAL authors' staircase of ``L`` equal steps
    (``np.linspace(start, end, L)``, FAL/FAL_sklearn.py line 25); ``per: label`` indexes it by
    the label (FAL's ``Iter``) instead of the round."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(ge=0, le=1)
    end: float = Field(ge=0, le=1)
    levels: int | None = Field(None, ge=2)
    per: Literal["round", "label"] = "round"


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


#: ``protocol: faithful``: FairAL as its authors ran it (anahideh/FAL--Fair-Active-Learning;
#: keys given in the job file win). Sequential, one label then a refit (FAL/FAL_sklearn.py lines
#: 21-54); every refit an L2 logistic regression from scratch to convergence, liblinear's C = 1
#: objective and tolerance (lines 19, 38, 51; sklearn's defaults ``C=1``, ``tol=1e-4``,
#: ``max_iter=100``); the fairness set is the unlabelled pool U (FAL/prep.py lines 58-61:
#: ``_Cset = np.copy(_Xu)``; U is capped at 10,000 rows, line 45, hence ``fair_size`` and
#: ``subsample``); the sensitive attribute is not a feature (their X excludes A, lines 17-28);
#: unfairness = mutual information between group and prediction (``demo_option=0``,
#: FAL/test_FAL.py line 36); alpha their "adaptive" staircase 1 -> 0 in 11 levels over the
#: labels (FAL/test_FAL.py line 46, FAL/FAL_sklearn.py line 25).
FAITHFUL_DEFAULTS: dict[str, Any] = {
    "mode": "sequential",
    "sequential_rule": "combined",
    "refit": "scratch",
    "engine": "fast",
    "measure": "mi",
    "alpha": {"start": 1.0, "end": 0.0, "levels": 11, "per": "label"},
    "fair_set": "pool",
    "fair_size": 10000,
    "subsample": 10000,
    "drop_features": "auto",
    "C": 1.0,
    "tol": 1e-4,
    "penalize_bias": True,
    "max_iter": 100,
}


class FairALParams(StrategyParams):
    """FairAL's job-file parameters (see :class:`FairALStrategy`)."""

    protocol: Literal["rayfal", "faithful"] = "rayfal"
    alpha: AlphaParam = 0.6
    measure: Literal["dp", "eo", "mi"] = "dp"
    mode: Literal["batch", "nested", "sequential"] = "batch"
    subsample: int | None = Field(1000, ge=1)
    fair_size: int | None = Field(1000, ge=1)
    fair_set: Literal["fairness", "pool"] = "fairness"
    nested_k: int | None = Field(None, ge=1)
    refit: Literal["head", "model", "scratch"] = "head"
    steps: int = Field(20, ge=0)
    lr: float = Field(0.5, gt=0)
    l2: float = Field(1e-3, ge=0)
    method: Literal["gd", "newton"] = "gd"
    head_steps: int = Field(300, ge=0)
    C: float = Field(1.0, gt=0)
    tol: float = Field(1e-4, gt=0)
    penalize_bias: bool = True
    max_iter: int = Field(100, ge=1)
    drop_features: list[Annotated[int, Field(ge=0)]] | Literal["auto"] | None = None
    engine: Literal["fast", "reference", "sklearn"] = "fast"
    sequential_rule: Literal["combined", "nested"] = "combined"

    @model_validator(mode="before")
    @classmethod
    def _faithful_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("protocol") == "faithful":
            return {**FAITHFUL_DEFAULTS, **data}
        return data

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

    @field_validator("fair_set")
    @classmethod
    def _pool_has_no_labels(cls, fair_set: str, info: ValidationInfo) -> str:
        if fair_set == "pool" and info.data.get("measure") == "eo":
            raise ValueError("measure 'eo' needs labels, and the pool U has none: use "
                             "fair_set: fairness (the authors' EO runs use a labelled held-out "
                             "set, FAL/prep.py lines 31-38)")
        return fair_set

    @field_validator("engine")
    @classmethod
    def _sklearn_is_liblinear_from_scratch(cls, engine: str, info: ValidationInfo) -> str:
        if engine == "sklearn" and info.data.get("refit") != "scratch":
            raise ValueError("engine 'sklearn' (liblinear refits from scratch) needs "
                             "refit: scratch")
        if engine == "sklearn" and info.data.get("penalize_bias") is False:
            raise ValueError("engine 'sklearn': liblinear penalises the intercept; "
                             "penalize_bias must be true")
        return engine

    def alpha_value(self) -> float | dict[str, Any]:
        """``alpha`` as :func:`~rayfal.acquisition.fairal.scores.resolve_alpha` takes it."""
        if isinstance(self.alpha, AlphaSchedule):
            return self.alpha.model_dump(exclude_defaults=True)
        return float(self.alpha)

    def refit_config(self) -> RefitConfig:
        if self.refit == "scratch":
            return RefitConfig(method="exact", C=self.C, tol=self.tol,
                               penalize_bias=self.penalize_bias, max_iter=self.max_iter)
        return RefitConfig(steps=self.steps, lr=self.lr, l2=self.l2, method=self.method)


def sensitive_columns(x: np.ndarray, groups: np.ndarray) -> list[int]:
    """Feature columns that are a function of the group: constant within every group and not
    the same constant in all of them (the sensitive attribute, or its one-hot columns, kept as
    features; Adult: ``sex=Female``, ``sex=Male``, columns 62 and 63)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    groups = np.asarray(groups)
    levels = np.unique(groups)
    if len(levels) < 2 or len(x) == 0:
        return []
    lo = np.stack([x[groups == a].min(0) for a in levels])
    hi = np.stack([x[groups == a].max(0) for a in levels])
    constant = (lo == hi).all(0)
    differ = (lo != lo[:1]).any(0)
    return np.flatnonzero(constant & differ).tolist()


@STRATEGIES.register("fairal")
class FairALStrategy(WholePoolStrategy):
    """Fair Active Learning (Anahideh et al. 2022),
    :func:`~rayfal.acquisition.fairal.select.fairal_select`.

    Parameters (:class:`FairALParams`): ``alpha`` (a number in [0, 1] or ``{start, end}``:
    linear over the rounds, or ``levels``/``per`` as :class:`AlphaSchedule`; PANDA §4.3 uses
    0.6), ``measure`` ``dp|eo|mi``, ``mode``
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
      fast path avoids; use ``head``);
    * ``refit: scratch``: FairAL's own learner (the authors refit sklearn's liblinear logistic
      regression): a binary logistic regression on the model *inputs* (flattened; the columns
      ``drop_features`` removed: a list of indices, or ``auto`` = :func:`sensitive_columns`),
      fitted on ``L`` and refitted per candidate and label from scratch to convergence
      (:func:`~rayfal.acquisition.fairal.refit.fit_exact`: ``C``, ``tol``, ``penalize_bias``,
      ``max_iter``). Binary labels only; the round's model is not used.

    ``steps``, ``lr``, ``l2``, ``method`` form the
    :class:`~rayfal.acquisition.fairal.refit.RefitConfig` of ``head``/``model``; ``engine``
    ``fast|reference|sklearn`` (``sklearn``: liblinear per refit, the slow oracle; needs
    ``refit: scratch``).

    ``fair_set``: ``fairness`` (the campaign's labelled fairness set, above) or ``pool`` (the
    unlabelled pool U as the authors use it, a seeded sample of ``fair_size`` rows of it; no
    labels, so not with ``measure: eo``).

    ``protocol: faithful`` fills every key the job file leaves out with the authors' setting
    (:data:`FAITHFUL_DEFAULTS`): sequential, ``refit: scratch`` with liblinear's ``C = 1``,
    ``tol = 1e-4`` and penalised intercept, ``fair_set: pool``, ``drop_features: auto``,
    ``measure: mi``, alpha ``{start: 1, end: 0, levels: 11, per: label}``, at most 10,000
    candidates and fairness rows. Deviations that stay: the campaign's initial labels and
    feature scaling are the data set's (the authors: 3 labelled rows per class, min-max
    scaling), and U as fairness set is re-read each round (the authors freeze U's copy at the
    start; it differs by the rows labelled since).
    ``method: newton`` is refused when the job is loaded: Newton refits need a one-column
    sigmoid head and this strategy's head is a softmax head (with ``gd`` only).

    ``requires``: the round's ``model``, a ``fairness`` set and the ``oracle`` — the oracle is
    only called in ``mode: sequential`` (``requires`` is per class, so it is always declared).

    Ray: when the job's ``scoring`` section asks for Ray compute (``compute: actors|tasks``, or
    ``auto`` from ``actor_min_rows`` pool rows), the campaign layer hands ``engine: fast`` the
    Ray Data refit job (:meth:`use_refit_scorer`,
    :func:`rayfal.scoring.fairal_refits.fairal_fast_ray`): the same scores bit for bit, the
    refits on an actor pool, the driver keeping only the candidate table. ``mode: sequential``
    runs one such job per pick.
    """

    name = "fairal"
    summary = "FairAL: entropy vs expected unfairness after per-candidate refits (Anahideh 2022)"
    requires = frozenset({"model", "fairness", "oracle"})
    Params = FairALParams

    def __init__(self, *, seed: int, round: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, round=round, **params)
        self.refit_cfg = self.params.refit_config()
        #: the per-candidate scorer of ``engine: fast`` when not the in-process
        #: :func:`~rayfal.acquisition.fairal.scores.fairal_fast` (:meth:`use_refit_scorer`)
        self.refit_scorer: Callable[..., FairALScores] | None = None
        self.refit_info: dict[str, Any] = {}

    def use_refit_scorer(self, scorer: Callable[..., FairALScores] | None,
                         info: Mapping[str, Any] | None = None) -> None:
        """Compute ``engine: fast``'s per-candidate expected unfairness with ``scorer`` (same
        signature and results as :func:`~rayfal.acquisition.fairal.scores.fairal_fast`; the
        campaign layer passes the Ray Data job
        :func:`rayfal.scoring.fairal_refits.fairal_fast_ray` when the job's ``scoring`` asks for
        Ray compute); ``info`` goes to the round's ``selection_info.json``. ``None``: in
        process. The ``reference`` and ``sklearn`` engines always run in process."""
        self.refit_scorer = scorer
        self.refit_info = dict(info or {}) if scorer is not None else {}

    def _score_fn(self, view: PoolView) -> Callable[..., FairALScores] | None:
        if self.refit_scorer is None or self.params.engine != "fast":
            return None
        view.info.update(self.refit_info)
        return self.refit_scorer

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
        if p.refit == "scratch":
            return self._select_scratch(view, cand, budget)
        g = view.gather(cand, ("x", "emb"))
        emb_l = view.labelled_embeddings()
        fair = view.fairness if view.fairness is not None else view.labelled
        emb_f = view.embed(fair.x)
        head = self._head(view, emb_l)
        idx = fairal_select(
            head, emb_l, view.labelled.y, g["emb"], emb_f, fair.group, budget,
            mode=p.mode, alpha=p.alpha_value(), round=view.round, n_rounds=view.n_rounds,
            nested_k=p.nested_k, oracle=self._oracle(view, g), sequential_rule=p.sequential_rule,
            y_fair=fair.y, measure=p.measure, refit=self.refit_cfg, engine=p.engine,
            score_fn=self._score_fn(view),
        )
        view.info.update({"strategy": self.name, "candidates": len(cand),
                          "fairness_rows": len(fair.y), "refit": p.refit})
        return g["row_id"][np.asarray(idx, np.int64)]

    def _oracle(self, view: PoolView, g: dict[str, np.ndarray]):
        if self.params.mode != "sequential":
            return None
        if view.oracle is None:
            raise ValueError("strategy 'fairal' mode 'sequential' needs the view's oracle")

        def oracle(i: int) -> int:
            return int(view.oracle(g["row_id"][[i]])[0])
        return oracle

    def _select_scratch(self, view: PoolView, cand: np.ndarray, budget: int) -> np.ndarray:
        """``refit: scratch``: FairAL's logistic regression on the inputs (class docstring)."""
        p = self.params
        y_l = np.asarray(view.labelled.y, dtype=np.int64)
        if len(y_l) and (y_l.min() < 0 or y_l.max() > 1):
            raise ValueError("fairal refit 'scratch' is binary logistic regression: labels must "
                             "be 0/1")
        g = view.gather(cand, ("x",))
        x_c = g["x"].reshape(len(cand), -1)
        x_l = np.asarray(view.labelled.x).reshape(len(y_l), -1)
        if p.fair_set == "pool":
            fair_ids = subsample_ids(view.unlabelled_ids, p.fair_size, self.seed, 0xFA1A)
            fg = view.gather(fair_ids, ("x",))
            x_f, g_f, y_f = fg["x"].reshape(len(fair_ids), -1), fg["group"], None
        else:
            fair = view.fairness if view.fairness is not None else view.labelled
            x_f = np.asarray(fair.x).reshape(len(fair.y), -1)
            g_f, y_f = fair.group, fair.y
        if p.drop_features == "auto":
            drop = sensitive_columns(np.concatenate([x_l, x_c, x_f]),
                                     np.concatenate([view.labelled.group, g["group"], g_f]))
        else:
            drop = sorted(set(p.drop_features or []))
        if drop and max(drop) >= x_l.shape[1]:
            raise ValueError(f"fairal drop_features {drop} out of range for "
                             f"{x_l.shape[1]} input features")
        keep = np.setdiff1d(np.arange(x_l.shape[1]), drop)
        x_l, x_c, x_f = (a[:, keep].astype(np.float64) for a in (x_l, x_c, x_f))
        head = fit_exact(x_l, y_l, self.refit_cfg)
        idx = fairal_select(
            head, x_l, y_l, x_c, x_f, g_f, budget,
            mode=p.mode, alpha=p.alpha_value(), round=view.round, n_rounds=view.n_rounds,
            nested_k=p.nested_k, oracle=self._oracle(view, g), sequential_rule=p.sequential_rule,
            y_fair=y_f, measure=p.measure, refit=self.refit_cfg, engine=p.engine,
            score_fn=self._score_fn(view),
        )
        view.info.update({"strategy": self.name, "candidates": len(cand),
                          "fairness_rows": len(x_f), "refit": p.refit, "protocol": p.protocol,
                          "dropped_features": [int(i) for i in drop]})
        return g["row_id"][np.asarray(idx, np.int64)]
