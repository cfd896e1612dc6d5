"""Fair Active Learning (FAL / "FairAL"; Anahideh, Asudeh & Thirumuruganathan 2022).

Pure maths (torch + numpy), no Ray. The method, as described in PANDA (Sharaf et al. 2022, §2
and §4.1) and JIN (Wu et al. 2023, §Related work and Table 2):

* **informativeness**: the entropy ``e(x) = -sum_k p(k|x) log p(k|x)`` of the current model;
* **expected unfairness**: for every candidate ``x`` and every label ``k`` refit the classifier
  on ``L ∪ {(x, k)}`` and measure the unfairness ``F_k(x)`` of the refitted model on a fixed
  fairness set; ``E(x) = sum_k p(k|x) F_k(x)``;
* **score** (larger = query first), both terms min-max scaled over the candidates::

      score(x) = alpha * (e(x) - min e) / (max e - min e)
                 + (1 - alpha) * (max E - E(x)) / (max E - min E)

  (a term whose range is 0 over the candidates is 0 for all of them).

JIN's Table 2 reports FairAL as the most expensive selector (a refit per candidate and label);
here the refit is a logistic-regression *head* on fixed features, which makes the per-candidate
refits cheap and, above all, batchable.

Refit (the "learning algorithm" of FAL, fixed here so that reference and fast paths agree):
multinomial (softmax, ``C >= 2`` output columns) or binary (sigmoid, one output column)
logistic regression ``z = x W + b`` minimising ::

    J(W, b) = (1/n) sum_j CE(y_j, link(x_j W + b)) + (l2/2) ||W||_F^2      (bias not penalised)

(``n = |L| + 1`` rows) by ``steps`` deterministic full-batch gradient-descent steps of size
``lr``, warm-started from the current head: ``W <- W - lr (X^T (P - Y) / n + l2 W)``,
``b <- b - lr 1^T (P - Y) / n`` (:class:`RefitConfig`). Option ``method="newton"`` (sigmoid head):
one damped Newton step instead, which :func:`fairal_fast` evaluates for all candidates at
``O(|F| D)`` each by Sherman-Morrison, the Hessian of ``L ∪ {x}`` being the Hessian of ``L`` plus
a rank-one term (:func:`_chunk_newton_unfairness`).

Where the sources are open: the original FAL paper is not among the provided texts (PANDA §2
and §4.1 and JIN only describe it), so the score normalisation above, the hard-prediction
measures and the refit learner are this module's documented choices; PANDA's experiments use
``alpha = 0.6`` (§4.3).

Unfairness measures (``measure=``), all on *hard* predictions ``y_hat = argmax_k p(k|x)``
(sigmoid: ``y_hat = 1[z > 0]``) of the refitted head on the fairness set, as in
:mod:`rayfal.fairness.metrics`:

* ``"dp"`` (default) demographic parity difference: ``max_c (max_a P(y_hat=c|a) -
  min_a P(y_hat=c|a))``. For two labels this is exactly
  :func:`rayfal.fairness.metrics.demographic_parity_difference` (the c=0 and c=1 spreads are
  equal).
* ``"eo"`` equal-opportunity difference (needs the fairness set's labels): two labels: the TPR
  spread ``max_a P(y_hat=1|y=1,a) - min_a P(y_hat=1|y=1,a)``, exactly
  :func:`rayfal.fairness.metrics.equal_opportunity_difference`; more labels: the worst
  one-vs-rest recall spread ``max_c`` of the same with ``c`` in place of 1. Groups without rows
  of label ``c`` are skipped; fewer than two defined groups give 0.
* ``"mi"`` mutual information ``I(A; Y_hat) = sum_{a,c} P(a,c) log(P(a,c) / (P(a) P(c)))`` in
  nats between group and hard prediction (empirical distribution on the fairness set,
  ``0 log 0 = 0``).

Entry points: :func:`fairal_reference` (a plain loop, one refit at a time: the test oracle),
:func:`fairal_fast` (all ``(candidate, label)`` refits of a chunk as one tensor program) and
:func:`fairal_select` (modes ``"batch"``, ``"sequential"``, ``"nested"``).

Tolerance of ``fairal_fast`` vs ``fairal_reference`` (same dtype): the refitted weights agree to
rounding (float64: ~1e-12 relative), so the unfairness values are *identical* unless a
fairness-set logit lies within that rounding of the decision boundary (then one hard prediction
may flip, changing a rate by 1/|group|). The tests assert ``|dE| <= 1e-9`` in float64 and
identical selections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from rayfal.fairness import metrics

__all__ = [
    "MEASURES",
    "FairALScores",
    "LogisticHead",
    "RefitConfig",
    "combine_scores",
    "fairal_fast",
    "fairal_reference",
    "fairal_select",
    "fit_logistic_head",
    "refit_head",
    "resolve_alpha",
    "unfairness",
    "unfairness_batched",
]

MEASURES = ("dp", "eo", "mi")

#: An alpha: a constant, a callable ``f(round, n_rounds) -> alpha``, or ``{"start", "end"}``.
Alpha = float | Callable[[int, int], float] | Mapping[str, float]


# --------------------------------------------------------------------------- the refit target


@dataclass
class LogisticHead:
    """A logistic-regression head ``z = x @ weight + bias`` on fixed features.

    ``weight`` is ``[D, C_out]``; ``C_out == 1`` is binary logistic regression (sigmoid; labels
    {0, 1}), ``C_out >= 2`` multinomial (softmax; labels 0..C_out-1).
    """

    weight: Tensor
    bias: Tensor

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[1],):
            raise ValueError(
                f"head weight must be [D, C_out] and bias [C_out], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )

    @property
    def n_labels(self) -> int:
        c = self.weight.shape[1]
        return 2 if c == 1 else c

    def to(self, dtype: torch.dtype) -> LogisticHead:
        return LogisticHead(self.weight.to(dtype), self.bias.to(dtype))

    def logits(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias

    def probs(self, x: Tensor) -> Tensor:
        """``p(k|x)`` as ``[n, K]`` (``K = 2`` for the sigmoid head: ``[1 - s, s]``)."""
        z = self.logits(x)
        if z.shape[1] == 1:
            s = torch.sigmoid(z)
            return torch.cat([1.0 - s, s], dim=1)
        return torch.softmax(z, dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """Hard predictions: ``1[z > 0]`` (sigmoid) or ``argmax`` (softmax; first max on ties)."""
        return _hard(self.logits(x))


@dataclass(frozen=True)
class RefitConfig:
    """How a refit minimises the L2-penalised mean cross-entropy ``J`` (module docstring).

    ``method="gd"``: ``steps`` full-batch gradient steps of size ``lr``. ``method="newton"``:
    ``steps`` (damped, size ``lr``) Newton steps ``theta <- theta - lr H^{-1} grad J`` on the
    sigmoid head only; :func:`fairal_fast` supports exactly one Newton step (then every refit's
    Hessian is a shared matrix plus a rank-one term, see :func:`_chunk_newton_unfairness`).
    One Newton step from a head fitted on ``L`` is the classical one-step / influence-function
    estimate of the refit on ``L ∪ {(x, k)}``. Newton needs ``H`` invertible: use ``l2 > 0``.
    """

    steps: int = 20
    lr: float = 0.5
    l2: float = 1e-3
    method: str = "gd"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.l2 < 0 or self.method not in ("gd", "newton"):
            raise ValueError(f"invalid RefitConfig {self}")


def _hard(z: Tensor) -> Tensor:
    if z.shape[-1] == 1:
        return (z[..., 0] > 0).long()
    return torch.argmax(z, dim=-1)


def _link(z: Tensor) -> Tensor:
    return torch.sigmoid(z) if z.shape[-1] == 1 else torch.softmax(z, dim=-1)


def _targets(y: Tensor, c_out: int, dtype: torch.dtype) -> Tensor:
    """``[n, C_out]`` targets: ``y`` itself (sigmoid) or one-hot (softmax)."""
    if c_out == 1:
        return y.to(dtype)[:, None]
    return torch.nn.functional.one_hot(y.long(), c_out).to(dtype)


def refit_head(head: LogisticHead, x: Tensor, y: Tensor, cfg: RefitConfig) -> LogisticHead:
    """``cfg.steps`` gradient (or, ``method="newton"``, Newton) steps on ``J(W, b)`` over
    ``(x, y)``, warm-started from ``head``. One refit at a time (the reference path); see the
    module docstring for ``J``.
    """
    w, b = head.weight.clone(), head.bias.clone()
    t = _targets(y, w.shape[1], w.dtype)
    n = x.shape[0]
    if cfg.method == "newton":
        return _newton_refit(head, x, t, cfg)
    for _ in range(cfg.steps):
        r = _link(x @ w + b) - t
        gw = x.T @ r / n + cfg.l2 * w
        gb = r.sum(0) / n
        w = w - cfg.lr * gw
        b = b - cfg.lr * gb
    return LogisticHead(w, b)


def _newton_refit(head: LogisticHead, x: Tensor, t: Tensor, cfg: RefitConfig) -> LogisticHead:
    """Damped Newton steps on ``J`` for the sigmoid head, explicit Hessian and solve (reference).

    With ``theta = [W; b]`` and ``X~ = [X 1]``: ``grad = X~^T (p - y) / n + l2 L theta``,
    ``H = X~^T diag(p (1 - p)) X~ / n + l2 L`` (``L`` = identity without the bias entry).
    """
    if head.weight.shape[1] != 1:
        raise ValueError("method 'newton' supports the binary (one-column sigmoid) head only")
    n, d = x.shape
    xa = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    theta = torch.cat([head.weight[:, 0], head.bias])
    pen = torch.ones(d + 1, dtype=x.dtype)
    pen[d] = 0.0
    for _ in range(cfg.steps):
        p = torch.sigmoid(xa @ theta)
        grad = xa.T @ (p - t[:, 0]) / n + cfg.l2 * pen * theta
        hess = (xa.T * (p * (1 - p))) @ xa / n + torch.diag(cfg.l2 * pen)
        theta = theta - cfg.lr * torch.linalg.solve(hess, grad)
    return LogisticHead(theta[:d, None].clone(), theta[d:].clone())


def fit_logistic_head(
    x: ArrayLike | Tensor,
    y: ArrayLike | Tensor,
    n_labels: int,
    *,
    binary: bool | None = None,
    steps: int = 500,
    lr: float = 0.5,
    l2: float = 1e-3,
    dtype: torch.dtype = torch.float64,
) -> LogisticHead:
    """Fit a head from zeros with :func:`refit_head` (``binary`` defaults to ``n_labels == 2``:
    a one-column sigmoid head; ``binary=False`` gives a softmax head with ``n_labels`` columns).
    """
    xt = _as_tensor(x, dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    binary = (n_labels == 2) if binary is None else binary
    if binary and n_labels != 2:
        raise ValueError(f"a binary (sigmoid) head has 2 labels, got n_labels={n_labels}")
    c_out = 1 if binary else n_labels
    head = LogisticHead(torch.zeros(xt.shape[1], c_out, dtype=dtype), torch.zeros(c_out, dtype=dtype))
    return refit_head(head, xt, yt, RefitConfig(steps=steps, lr=lr, l2=l2))


# --------------------------------------------------------------------------- unfairness


def unfairness(
    y_pred: ArrayLike, groups: ArrayLike, y_true: ArrayLike | None = None, *, measure: str = "dp",
    n_labels: int = 2,
) -> float:
    """Unfairness of hard predictions (reference implementation; see the module docstring).

    Two labels use :mod:`rayfal.fairness.metrics` directly (``"dp"``, ``"eo"``); more labels and
    ``"mi"`` use plain per-group loops.
    """
    yp = np.asarray(y_pred).astype(np.int64)
    g = np.asarray(groups)
    if measure == "dp":
        if n_labels == 2:
            return metrics.demographic_parity_difference(yp, groups=g)
        gaps = []
        for c in range(n_labels):
            rates = [np.mean(yp[g == a] == c) for a in np.unique(g)]
            gaps.append(max(rates) - min(rates))
        return float(max(gaps))
    if measure == "eo":
        if y_true is None:
            raise ValueError("measure 'eo' needs the fairness set's labels (y_fair)")
        yt = np.asarray(y_true).astype(np.int64)
        if n_labels == 2:
            return metrics.equal_opportunity_difference(yt, yp, groups=g)
        gaps = []
        for c in range(n_labels):
            rates = [np.mean(yp[(g == a) & (yt == c)] == c) for a in np.unique(g)
                     if np.any((g == a) & (yt == c))]
            gaps.append(max(rates) - min(rates) if len(rates) >= 2 else 0.0)
        return float(max(gaps))
    if measure == "mi":
        n = len(yp)
        mi = 0.0
        for a in np.unique(g):
            pa = np.mean(g == a)
            for c in np.unique(yp):
                pac = np.sum((g == a) & (yp == c)) / n
                if pac > 0:
                    mi += pac * math.log(pac / (pa * np.mean(yp == c)))
        return float(mi)
    raise ValueError(f"unknown unfairness measure '{measure}'; known: {', '.join(MEASURES)}")


class _FairnessSet:
    """The fixed fairness set with group (and label) indicator matrices for batched measures."""

    def __init__(self, x: Tensor, groups: ArrayLike, y: ArrayLike | None, measure: str,
                 n_labels: int) -> None:
        if measure not in MEASURES:
            raise ValueError(f"unknown unfairness measure '{measure}'; known: {', '.join(MEASURES)}")
        if measure == "eo" and y is None:
            raise ValueError("measure 'eo' needs the fairness set's labels (y_fair)")
        g = np.asarray(groups)
        if g.ndim != 1 or len(g) != x.shape[0]:
            raise ValueError(f"groups_fair must be 1-D with {x.shape[0]} entries, got {g.shape}")
        _, inv = np.unique(g, return_inverse=True)
        self.x = x
        self.measure = measure
        self.k = n_labels
        # counts and rates in float64 whatever the compute dtype of the refits
        self.gmat = torch.nn.functional.one_hot(
            torch.from_numpy(inv.reshape(-1)).long()).T.to(torch.float64)
        self.n = x.shape[0]
        self.group_sizes = self.gmat.sum(1)  # [A]
        if y is not None:
            yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
            if yt.shape != (self.n,):
                raise ValueError(f"y_fair must be 1-D with {self.n} entries, got {tuple(yt.shape)}")
            self.y = yt
        else:
            self.y = None

    def batched(self, preds: Tensor) -> Tensor:
        """Unfairness of each column of ``preds`` (``[n_fair, M]`` hard labels) -> ``[M]``."""
        m = preds.shape[1]
        dtype = self.gmat.dtype

        def indicator(c: int) -> Tensor:
            return (preds == c).to(dtype)  # [n, M]

        if self.measure == "dp":
            # for two labels the c=0 and c=1 spreads are equal: one class suffices
            worst = torch.zeros(m, dtype=dtype)
            for c in [1] if self.k == 2 else range(self.k):
                rates = (self.gmat @ indicator(c)) / self.group_sizes[:, None]  # [A, M]
                worst = torch.maximum(worst, rates.amax(0) - rates.amin(0))
            return worst
        if self.measure == "mi":
            pa = (self.group_sizes / self.n)[:, None]
            mi = torch.zeros(m, dtype=dtype)
            for c in range(self.k):
                joint = (self.gmat @ indicator(c)) / self.n  # [A, M]
                pc = joint.sum(0, keepdim=True)
                ratio = torch.where(joint > 0, joint / (pa * pc).clamp_min(1e-300),
                                    torch.ones_like(joint))
                mi += (joint * torch.log(ratio)).sum(0)
            return mi
        # "eo": per-class recall spread over groups having rows of that class
        worst = torch.zeros(m, dtype=dtype)
        for c in [1] if self.k == 2 else range(self.k):
            gc = self.gmat * (self.y == c).to(dtype)[None, :]
            sizes = gc.sum(1)
            defined = sizes > 0
            if int(defined.sum()) < 2:
                continue
            rates = (gc[defined] @ indicator(c)) / sizes[defined][:, None]  # [A', M]
            worst = torch.maximum(worst, rates.amax(0) - rates.amin(0))
        return worst


def unfairness_batched(
    y_pred: ArrayLike | Tensor, groups: ArrayLike, y_true: ArrayLike | None = None, *,
    measure: str = "dp", n_labels: int = 2,
) -> np.ndarray:
    """:func:`unfairness` of every column of hard predictions ``y_pred`` ``[n, M]`` at once
    (the vectorised form used by :func:`fairal_fast`; group/label indicator matrices times
    prediction indicators). Returns ``[M]`` float64."""
    preds = torch.as_tensor(np.asarray(y_pred), dtype=torch.long)
    if preds.ndim == 1:
        preds = preds[:, None]
    fair = _FairnessSet(torch.zeros(preds.shape[0], 0, dtype=torch.float64), groups, y_true,
                        measure, n_labels)
    return fair.batched(preds).numpy()


# --------------------------------------------------------------------------- scores


@dataclass
class FairALScores:
    """Per-candidate FAL quantities (candidate order as given)."""

    entropy: np.ndarray  # [N] e(x)
    expected_unfairness: np.ndarray  # [N] E(x)
    unfairness_per_label: np.ndarray  # [N, K] F_k(x)
    probs: np.ndarray  # [N, K] p(k|x) of the current head
    score: np.ndarray  # [N] combined score (larger = query first)
    alpha: float


def _as_tensor(a: ArrayLike | Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _minmax(v: np.ndarray) -> np.ndarray:
    if len(v) == 0:
        return v
    r = v.max() - v.min()
    return (v - v.min()) / r if r > 0 else np.zeros_like(v)


def combine_scores(entropy: np.ndarray, expected: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * minmax(e) + (1 - alpha) * (max E - E) / (max E - min E)`` (module docstring)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    expected = np.asarray(expected, dtype=np.float64)
    r = float(np.ptp(expected)) if len(expected) else 0.0
    fair = (expected.max() - expected) / r if r > 0 else np.zeros_like(expected)
    return alpha * _minmax(np.asarray(entropy, dtype=np.float64)) + (1.0 - alpha) * fair


def _entropy(p: Tensor) -> np.ndarray:
    p64 = p.double()
    return (-(p64 * torch.log(torch.where(p64 > 0, p64, torch.ones_like(p64)))).sum(1)).numpy()


def resolve_alpha(alpha: Alpha, round: int = 0, n_rounds: int = 1) -> float:
    """The trade-off alpha at ``round`` (0-based) of ``n_rounds``.

    A float is constant; a callable is called as ``alpha(round, n_rounds)``; a mapping
    ``{"start": a0, "end": a1}`` is linear from ``a0`` at round 0 to ``a1`` at round
    ``n_rounds - 1`` (``a0`` if ``n_rounds == 1``).
    """
    if callable(alpha):
        value = float(alpha(round, n_rounds))
    elif isinstance(alpha, Mapping):
        unknown = set(alpha) - {"start", "end"}
        if unknown or not {"start", "end"} <= set(alpha):
            raise ValueError(f"alpha schedule needs exactly keys 'start' and 'end', got {sorted(alpha)}")
        frac = round / (n_rounds - 1) if n_rounds > 1 else 0.0
        frac = min(max(frac, 0.0), 1.0)
        value = float(alpha["start"]) + frac * (float(alpha["end"]) - float(alpha["start"]))
    else:
        value = float(alpha)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {value} at round {round}")
    return value


@dataclass
class _Inputs:
    head: LogisticHead
    x_l: Tensor
    y_l: Tensor
    x_c: Tensor
    fair: _FairnessSet


def _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure,
             dtype) -> _Inputs:
    head = head.to(dtype)
    x_l = _as_tensor(x_labelled, dtype)
    y_l = torch.as_tensor(np.asarray(y_labelled), dtype=torch.long)
    x_c = _as_tensor(x_cand, dtype)
    x_f = _as_tensor(x_fair, dtype)
    d = head.weight.shape[0]
    for name, t in (("x_labelled", x_l), ("x_cand", x_c), ("x_fair", x_f)):
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"{name} must be [n, {d}] (the head's input dim), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN/inf")
    if y_l.shape != (x_l.shape[0],):
        raise ValueError(f"y_labelled must have {x_l.shape[0]} entries, got {tuple(y_l.shape)}")
    k = head.n_labels
    if len(y_l) and (y_l.min() < 0 or y_l.max() >= k):
        raise ValueError(f"y_labelled must be in 0..{k - 1}")
    return _Inputs(head, x_l, y_l, x_c, _FairnessSet(x_f, groups_fair, y_fair, measure, k))


def _finish(inp: _Inputs, per_label: np.ndarray, alpha: float) -> FairALScores:
    p = inp.head.probs(inp.x_c)
    pn = p.double().numpy()
    ent = _entropy(p)
    expected = (pn * per_label).sum(1) if len(pn) else np.zeros(0)
    return FairALScores(ent, expected, per_label, pn, combine_scores(ent, expected, alpha), alpha)


def fairal_reference(
    head: LogisticHead,
    x_labelled: ArrayLike | Tensor,
    y_labelled: ArrayLike | Tensor,
    x_cand: ArrayLike | Tensor,
    x_fair: ArrayLike | Tensor,
    groups_fair: ArrayLike,
    *,
    y_fair: ArrayLike | None = None,
    measure: str = "dp",
    refit: RefitConfig = RefitConfig(),  # noqa: B008 (frozen dataclass)
    alpha: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> FairALScores:
    """FAL scores by a plain loop: one :func:`refit_head` per (candidate, label), unfairness by
    :func:`unfairness` (numpy / :mod:`rayfal.fairness.metrics`). The test oracle."""
    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure, dtype)
    k = inp.head.n_labels
    groups = np.asarray(groups_fair)
    per_label = np.zeros((inp.x_c.shape[0], k))
    for i in range(inp.x_c.shape[0]):
        x_aug = torch.cat([inp.x_l, inp.x_c[i : i + 1]])
        for label in range(k):
            y_aug = torch.cat([inp.y_l, torch.tensor([label])])
            refitted = refit_head(inp.head, x_aug, y_aug, refit)
            preds = refitted.predict(inp.fair.x).numpy()
            per_label[i, label] = unfairness(preds, groups, y_fair, measure=measure, n_labels=k)
    return _finish(inp, per_label, alpha)


def _chunk_refit_unfairness(inp: _Inputs, x_chunk: Tensor, cfg: RefitConfig) -> Tensor:
    """``F_k(x)`` for every (candidate in ``x_chunk``, label k) as ``[m, K]``.

    All ``M = m K`` refits run together. Each refit's data is ``L`` (shared) plus one extra row,
    so a step is two GEMMs over the shared rows, ``[X_L 1] @ [W; b]`` with the parameters of
    all pairs laid out as ``[D + 1, M * C_out]`` and ``[X_L 1]^T @ R`` (the bias gradient is
    the last row), plus a rank-one term per pair for its extra row. Same update as
    :func:`refit_head` (the operations are only reordered).
    """
    head, x_l = inp.head, inp.x_l
    k, c = head.n_labels, head.weight.shape[1]
    m = x_chunk.shape[0]
    pairs = m * k
    n, d = x_l.shape
    n_aug = n + 1
    dtype = x_l.dtype
    ones = torch.ones(n, 1, dtype=dtype)
    xa = torch.cat([x_l, ones], dim=1)  # [n, D+1]
    xa_t = xa.T.contiguous()
    # pair p = (candidate p // K, label p % K); its extra row (with the bias input 1)
    x_e = torch.cat([x_chunk, torch.ones(m, 1, dtype=dtype)], dim=1).repeat_interleave(k, dim=0)
    x_e_t = x_e.T.contiguous()  # [D+1, M]
    y_e = _targets(torch.arange(k).repeat(m), c, dtype)  # [M, C]
    # X^T (P - Y) = X^T P - X^T Y, and X^T Y over the shared rows is the same for every pair
    xty = xa_t @ _targets(inp.y_l, c, dtype)  # [D+1, C]
    theta = torch.cat([head.weight, head.bias[None, :]], dim=0)  # [D+1, C]
    theta = theta.repeat(1, pairs)  # [D+1, M*C]; column p*C + j is pair p, output j
    decay = torch.full((d + 1, 1), 1.0 - cfg.lr * cfg.l2, dtype=dtype)
    decay[d] = 1.0  # the bias is not penalised
    softmax = c > 1
    for _ in range(cfg.steps):
        p_l = xa @ theta  # [n, M*C] logits, then probabilities
        if softmax:
            p_l = torch.softmax(p_l.view(n, pairs, c), dim=-1).view(n, pairs * c)
        else:
            p_l.sigmoid_()
        z_e = torch.einsum("dm,dmc->mc", x_e_t, theta.view(d + 1, pairs, c))
        r_e = _link(z_e) - y_e  # [M, C] residual of the extra row
        grad = (xa_t @ p_l).view(d + 1, pairs, c)  # [D+1, M, C]
        grad.sub_(xty[:, None, :]).add_(x_e_t[:, :, None] * r_e[None])
        grad = grad.view(d + 1, pairs * c)
        theta.mul_(decay).add_(grad, alpha=-cfg.lr / n_aug)
    nf = inp.fair.n
    xf = torch.cat([inp.fair.x, torch.ones(nf, 1, dtype=dtype)], dim=1)
    z_f = (xf @ theta).view(nf, pairs, c)
    return inp.fair.batched(_hard(z_f)).reshape(m, k)


def _chunk_newton_unfairness(inp: _Inputs, x_chunk: Tensor, cfg: RefitConfig) -> Tensor:
    """``F_k(x)`` ``[m, 2]`` for one damped Newton step (sigmoid head), by Sherman-Morrison.

    At the warm start ``theta0`` every refit's Hessian is ``A + (s_e / n') x~ x~^T`` with the
    shared ``A = X~_L^T S X~_L / n' + l2 L`` (``n' = |L| + 1``, ``s_e = p_e (1 - p_e)``) and its
    gradient is ``g0 + c_k x~`` with the shared ``g0 = X~_L^T (p - y) / n' + l2 L theta0`` and
    ``c_k = (p_e - k) / n'``. Hence ``H^{-1} grad = a0 + gamma_k u`` with ``a0 = A^{-1} g0``,
    ``u = A^{-1} x~``, ``beta = (s_e / n') / (1 + (s_e / n') x~^T u)`` and
    ``gamma_k = c_k - beta (x~^T a0 + c_k x~^T u)``; the fairness-set logits after the step are
    ``X~_F (theta0 - lr a0) - lr gamma_k (X~_F A^{-1}) x~``: ``O(|F| D)`` per candidate.
    """
    x_l, head = inp.x_l, inp.head
    if head.weight.shape[1] != 1:
        raise ValueError("method 'newton' supports the binary (one-column sigmoid) head only")
    if cfg.steps != 1:
        raise ValueError("fairal_fast supports exactly one Newton step (RefitConfig(steps=1, "
                         "method='newton')); use method='gd' or fairal_reference")
    n, d = x_l.shape
    n_aug = n + 1
    dtype = x_l.dtype
    xa = torch.cat([x_l, torch.ones(n, 1, dtype=dtype)], dim=1)
    theta = torch.cat([head.weight[:, 0], head.bias])
    pen = torch.ones(d + 1, dtype=dtype)
    pen[d] = 0.0
    p = torch.sigmoid(xa @ theta)
    y = inp.y_l.to(dtype)
    g0 = xa.T @ (p - y) / n_aug + cfg.l2 * pen * theta
    a_mat = (xa.T * (p * (1 - p))) @ xa / n_aug + torch.diag(cfg.l2 * pen)
    a0 = torch.linalg.solve(a_mat, g0)
    xf = torch.cat([inp.fair.x, torch.ones(inp.fair.n, 1, dtype=dtype)], dim=1)
    m_f = torch.linalg.solve(a_mat, xf.T).T  # X~_F A^{-1} (A symmetric)
    z_base = xf @ (theta - cfg.lr * a0)  # [nf]
    xe = torch.cat([x_chunk, torch.ones(len(x_chunk), 1, dtype=dtype)], dim=1)  # [m, D+1]
    u = torch.linalg.solve(a_mat, xe.T)  # [D+1, m]
    q = (xe * u.T).sum(1)
    t_e = xe @ a0
    p_e = torch.sigmoid(xe @ theta)
    se = p_e * (1 - p_e) / n_aug
    beta = se / (1 + se * q)
    v = m_f @ xe.T  # [nf, m]
    out = []
    for k in (0, 1):
        c_k = (p_e - k) / n_aug
        gamma = c_k - beta * (t_e + c_k * q)
        z_f = z_base[:, None] - cfg.lr * gamma[None, :] * v
        out.append(inp.fair.batched((z_f > 0).long()))
    return torch.stack(out, dim=1)


def fairal_fast(
    head: LogisticHead,
    x_labelled: ArrayLike | Tensor,
    y_labelled: ArrayLike | Tensor,
    x_cand: ArrayLike | Tensor,
    x_fair: ArrayLike | Tensor,
    groups_fair: ArrayLike,
    *,
    y_fair: ArrayLike | None = None,
    measure: str = "dp",
    refit: RefitConfig = RefitConfig(),  # noqa: B008 (frozen dataclass)
    alpha: float = 0.5,
    dtype: torch.dtype = torch.float64,
    chunk_size: int | None = None,
    max_elements: int = 1 << 22,
) -> FairALScores:
    """The same numbers as :func:`fairal_reference`, batched over (candidate, label) pairs.

    Candidates are processed ``chunk_size`` at a time; by default the chunk is the largest with
    ``m K C_out (2 |L| + |F| + 4 D) <= max_elements`` (the floats held by one chunk's tensors:
    logits/residuals on ``L``, logits on the fairness set, weights and gradients; for one Newton
    step ``m (4 |F| + 3 D)``), so memory is bounded whatever the number of candidates (default
    ``2^22`` floats = 32 MiB in float64).
    """
    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure, dtype)
    k, c = inp.head.n_labels, inp.head.weight.shape[1]
    n, d = inp.x_l.shape
    if chunk_size is None:
        if refit.method == "newton":
            per_cand = 4 * inp.fair.n + 3 * (d + 1)
        else:
            per_cand = k * c * (2 * n + inp.fair.n + 4 * d)
        chunk_size = max(1, max_elements // max(per_cand, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n_cand = inp.x_c.shape[0]
    per_label = np.zeros((n_cand, k))
    chunk_fn = _chunk_newton_unfairness if refit.method == "newton" else _chunk_refit_unfairness
    with torch.no_grad():
        for start in range(0, n_cand, chunk_size):
            xc = inp.x_c[start : start + chunk_size]
            per_label[start : start + len(xc)] = chunk_fn(inp, xc, refit).double().numpy()
    return _finish(inp, per_label, alpha)


# --------------------------------------------------------------------------- selection

_ENGINES = {"fast": fairal_fast, "reference": fairal_reference}


def _top(values: np.ndarray, b: int) -> np.ndarray:
    """Indices of the ``b`` largest values; ties broken by the lower index."""
    order = np.lexsort((np.arange(len(values)), -values))
    return order[:b]


def fairal_select(
    head: LogisticHead,
    x_labelled: ArrayLike | Tensor,
    y_labelled: ArrayLike | Tensor,
    x_cand: ArrayLike | Tensor,
    x_fair: ArrayLike | Tensor,
    groups_fair: ArrayLike,
    budget: int,
    *,
    mode: str = "batch",
    alpha: Alpha = 0.5,
    round: int = 0,
    n_rounds: int = 1,
    nested_k: int | None = None,
    oracle: Callable[[int], int] | None = None,
    sequential_rule: str = "combined",
    y_fair: ArrayLike | None = None,
    measure: str = "dp",
    refit: RefitConfig = RefitConfig(),  # noqa: B008 (frozen dataclass)
    engine: str = "fast",
    dtype: torch.dtype = torch.float64,
    **engine_kwargs: Any,
) -> np.ndarray:
    """Pick ``min(budget, len(x_cand))`` candidate *indices* (positions in ``x_cand``), in order.

    Modes:

    * ``"batch"``: one scoring pass, the top-``budget`` combined scores. An approximation of FAL
      for batch AL: the candidates' effects on fairness are estimated independently (no
      refit between picks), which is what makes FAL affordable for large budgets.
    * ``"nested"``: one scoring pass of the cheap term first: the ``nested_k`` (default
      ``min(N, 10 budget)``) candidates of highest entropy, then the ``budget`` of them with the
      lowest expected unfairness ``E`` (refits only for those ``nested_k``).
    * ``"sequential"``: FAL's original loop (Anahideh et al. 2022): ``budget`` times, score the
      remaining candidates with the current head and ``L``, take the best (rule
      ``sequential_rule``: ``"combined"`` score or ``"nested"``), query its label with
      ``oracle(index) -> label``, add it to ``L`` and refit the head on the new ``L`` (warm start,
      the same :class:`RefitConfig`). Needs ``oracle``.

    ``alpha`` is resolved once per call at ``round`` of ``n_rounds`` (:func:`resolve_alpha`); in
    ``"sequential"`` mode all picks of the call share it. Ties go to the lower index.
    """
    if mode not in ("batch", "nested", "sequential"):
        raise ValueError(f"unknown FairAL mode '{mode}'; known: batch, nested, sequential")
    if engine not in _ENGINES:
        raise ValueError(f"unknown FairAL engine '{engine}'; known: {', '.join(_ENGINES)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    a = resolve_alpha(alpha, round, n_rounds)
    score_fn = _ENGINES[engine]
    kwargs = dict(y_fair=y_fair, measure=measure, refit=refit, dtype=dtype, **engine_kwargs)
    x_c = _as_tensor(x_cand, dtype)
    n_cand = x_c.shape[0]
    budget = min(budget, n_cand)
    if budget == 0:
        return np.zeros(0, np.int64)

    def pick_nested(h: LogisticHead, xl, yl, idx: np.ndarray, b: int) -> np.ndarray:
        k_top = nested_k if nested_k is not None else 10 * b
        k_top = min(max(k_top, b), len(idx))
        ent = _entropy(h.to(dtype).probs(x_c[idx]))
        top = _top(ent, k_top)
        s = score_fn(h, xl, yl, x_c[idx[top]], x_fair, groups_fair, alpha=a, **kwargs)
        return idx[top[_top(-s.expected_unfairness, b)]]

    if mode == "batch":
        s = score_fn(head, x_labelled, y_labelled, x_c, x_fair, groups_fair, alpha=a, **kwargs)
        return _top(s.score, budget).astype(np.int64)
    if mode == "nested":
        return pick_nested(head, x_labelled, y_labelled, np.arange(n_cand), budget).astype(np.int64)

    if oracle is None:
        raise ValueError("FairAL mode 'sequential' needs an oracle(index) -> label callable")
    if sequential_rule not in ("combined", "nested"):
        raise ValueError(f"sequential_rule must be 'combined' or 'nested', got '{sequential_rule}'")
    h = head.to(dtype)
    xl = _as_tensor(x_labelled, dtype)
    yl = torch.as_tensor(np.asarray(y_labelled), dtype=torch.long)
    remaining = np.arange(n_cand)
    picked: list[int] = []
    for _ in range(budget):
        if sequential_rule == "nested":
            best = int(pick_nested(h, xl, yl, remaining, 1)[0])
        else:
            s = score_fn(h, xl, yl, x_c[remaining], x_fair, groups_fair, alpha=a, **kwargs)
            best = int(remaining[_top(s.score, 1)[0]])
        label = int(oracle(best))
        if not 0 <= label < h.n_labels:
            raise ValueError(f"oracle returned label {label} for candidate {best}; "
                             f"expected 0..{h.n_labels - 1}")
        picked.append(best)
        remaining = remaining[remaining != best]
        xl = torch.cat([xl, x_c[best : best + 1]])
        yl = torch.cat([yl, torch.tensor([label])])
        h = refit_head(h, xl, yl, refit)
    return np.asarray(picked, dtype=np.int64)
