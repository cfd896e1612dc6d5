"""Training mode ``fairlearn``: a fairness-constrained reduction fitted on the labelled set.

PANDA's baselines "Fairlearn" and "Fairlearn+AL" (Sharaf et al. 2022, §4.1): select rows
(uniformly, or by an uncertainty strategy), then "run fairlearn to train a classifier to
optimize accuracy subject to a parity constraint" (Agarwal et al. 2018's exponentiated-gradient
reduction). A job expresses them as a campaign whose ``training.mode`` is ``fairlearn``::

    - {label: fairlearn,    strategy: random,  training: {mode: fairlearn, mode_params: {eps: 0.04}}}
    - {label: fairlearn_al, strategy: entropy, training: {mode: fairlearn, mode_params: {eps: 0.04}}}

How it fits the round loop (tabular data; binary labels):

* Ray Train still trains the job's model with the standard cross-entropy (this mode's loss is
  the ``standard`` one): that unconstrained model scores the pool for the uncertainty strategy
  of Fairlearn+AL ("select examples closest to the decision boundary");
* after training, :func:`round_metrics` (the driver's post-evaluation hook) fits
  ``fairlearn.reductions.ExponentiatedGradient(LogisticRegression, constraint)`` on the
  labelled rows' features, labels and groups (sensitive feature = the pool's ``group``) and
  the round's test metrics are those of the reduction's randomized classifier (``predict``
  with ``random_state`` = the campaign seed), replacing the network's.

``mode_params``: ``constraint`` ``dp`` (DemographicParity, default) or ``eo``
(EqualizedOdds, i.e. error-rate balance), ``eps`` (``difference_bound``, default 0.04 as in
PANDA §4.3), ``max_iter`` (default 50), ``C`` (inverse L2 strength of the logistic
regression, default 1.0), ``eta0`` (default 2.0).

:func:`round_metrics` also adds, for binary tasks and every mode, the quantities of PANDA's
Figures 1-2: ``f_score`` (F1 of class 1), ``panda_dp`` (Table 1 demographic parity) and
``error_rate_balance`` (Table 1).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rayfal.fairness import metrics as M
from rayfal.training.modes import MODES, LossFn, ModeParams, register_mode


class FairlearnParams(ModeParams):
    """Parameters of ``fairlearn`` (module docstring)."""

    constraint: Literal["dp", "eo"] = Field(
        "dp", description="dp: DemographicParity, eo: EqualizedOdds (error-rate balance)")
    eps: float = Field(0.04, gt=0, description="difference_bound of the constraint")
    max_iter: int = Field(50, ge=1, description="exponentiated-gradient iterations")
    C: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic regression")
    eta0: float = Field(2.0, gt=0, description="initial step of the exponentiated gradient")


FAIRLEARN_DEFAULTS = {k: f.default for k, f in FairlearnParams.model_fields.items()}


def _check_params(params: dict) -> dict:
    unknown = sorted(set(params) - set(FAIRLEARN_DEFAULTS))
    if unknown:
        raise TypeError(f"training mode 'fairlearn' takes no parameters {unknown}; known: "
                        f"{sorted(FAIRLEARN_DEFAULTS)}")
    p = {**FAIRLEARN_DEFAULTS, **params}
    if p["constraint"] not in ("dp", "eo"):
        raise ValueError(f"fairlearn constraint must be 'dp' or 'eo', got {p['constraint']!r}")
    if not p["eps"] > 0:
        raise ValueError(f"fairlearn eps must be > 0, got {p['eps']}")
    return p


@register_mode("fairlearn", params=FairlearnParams, post_fit=True,
               summary="standard CE for the network; a fairlearn reduction (parity-"
                       "constrained logistic regression) gives the round's metrics")
def fairlearn_loss(**params: Any) -> LossFn:
    """The network's loss in this mode: the standard cross-entropy (module docstring)."""
    from rayfal.training.standard import standard_loss

    _check_params(params)
    return standard_loss()



class _Constant:
    """The classifier of a one-class labelled set (a reduction needs both labels)."""

    def __init__(self, label: int) -> None:
        self.label = int(label)

    def predict(self, x: np.ndarray, random_state: Any = None) -> np.ndarray:
        return np.full(len(x), self.label, dtype=np.int64)


def fit_reduction(x: np.ndarray, y: np.ndarray, group: np.ndarray, *, seed: int = 0,
                  **params: Any) -> Any:
    """``ExponentiatedGradient(LogisticRegression(C), DemographicParity|EqualizedOdds(eps))``
    fitted on ``(x, y)`` with sensitive feature ``group``; a constant predictor when ``y`` has
    a single label. Returns an object with ``predict(x, random_state=...)``."""
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    p = _check_params(params)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.int64)
    if len(np.unique(y)) < 2:
        return _Constant(int(y[0]) if len(y) else 0)
    learner = LogisticRegression(C=p["C"], max_iter=200)
    # one BLAS thread: tiny problems, where thread start-up and contention dominate (4-5x
    # faster on a loaded 2-CPU machine)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # tiny, separable labelled sets
        if len(np.unique(group)) < 2:  # no constraint to enforce
            return learner.fit(x, y)
        cons = DemographicParity(difference_bound=p["eps"]) if p["constraint"] == "dp" else \
            EqualizedOdds(difference_bound=p["eps"])
        red = ExponentiatedGradient(learner, cons, eps=p["eps"], max_iter=p["max_iter"],
                                    eta0=p["eta0"])
        red.fit(x, y, sensitive_features=np.asarray(group))
    return red


def predict(predictor: Any, x: np.ndarray, seed: int) -> np.ndarray:
    """Hard predictions (the reduction's randomized classifier, seeded)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    try:
        return np.asarray(predictor.predict(x, random_state=seed), dtype=np.int64)
    except TypeError:  # plain sklearn estimator
        return np.asarray(predictor.predict(x), dtype=np.int64)


def binary_metrics(y: np.ndarray, pred: np.ndarray, group: np.ndarray) -> dict[str, float]:
    """PANDA's Figure 1-2 quantities: F1 of class 1, Table-1 DP and error-rate balance."""
    y, pred = np.asarray(y), np.asarray(pred)
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y == 0)))
    fn = float(np.sum((pred == 0) & (y == 1)))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
    return {"f_score": f1,
            "panda_dp": M.panda_demographic_parity(pred, groups=group),
            "error_rate_balance": M.error_rate_balance(y, pred, groups=group)}


def round_metrics(campaign: Any, model: Any, data: dict[str, np.ndarray],
                  metrics: dict[str, float]) -> dict[str, float]:
    """Driver hook after a round's evaluation (module docstring). Returns the metrics to
    record: the reduction's (mode ``fairlearn``) or the network's, plus the binary extras."""
    from rayfal.data.schema import to_model_input
    from rayfal.evaluation import evaluate_probs

    ctx = campaign.ctx
    y_test, g_test = ctx.test_y, ctx.test_group
    binary = set(np.unique(y_test).tolist()) <= {0, 1}
    if getattr(MODES.get(campaign.training.mode.split("+")[0]), "post_fit", False):
        if not binary:
            raise ValueError("training mode 'fairlearn' needs binary labels")
        t0 = time.perf_counter()
        x = to_model_input(data["x"], ctx.pool.input_shape)
        red = fit_reduction(x, data["y"], data["group"], seed=campaign.seed,
                            **campaign.training.mode_params)
        pred = predict(red, ctx.test_x.numpy(), campaign.seed)
        probs = np.eye(2)[pred][:, :, None]  # the sampled predictions as [N, C, 1]
        out = evaluate_probs(probs, y_test, g_test)
        out["network_accuracy"] = metrics.get("accuracy", float("nan"))
        out["fair_fit_seconds"] = time.perf_counter() - t0
        return {**metrics, **out, **binary_metrics(y_test, pred, g_test)}
    if not binary:
        return metrics
    import torch

    from rayfal.models.predict import mc_probs

    probs = mc_probs(model, ctx.test_x, mc_samples=ctx.cfg.evaluation.mc_samples,
                     batch_size=ctx.cfg.evaluation.batch_size, generator_seed=campaign.seed,
                     row_keys=ctx.test_row_id)
    with torch.no_grad():
        pred = probs.mean(axis=2).argmax(axis=1)
    return {**metrics, **binary_metrics(y_test, pred, g_test)}
