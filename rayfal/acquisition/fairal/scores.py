"""FairAL's scores: unfairness measures, the expected unfairness ``E(x)``, the alpha schedule
and the combined score. Pure torch + numpy, no Ray.

* **informativeness**: the entropy ``e(x) = -sum_k p(k|x) log p(k|x)`` of the current head;
* **expected unfairness**: for every candidate ``x`` and every label ``k`` refit the head on
  ``L ∪ {(x, k)}`` (:mod:`.refit`) and measure the unfairness ``F_k(x)`` of the refitted head
  on a fixed fairness set; ``E(x) = sum_k p(k|x) F_k(x)``;
* **score** (larger = query first), both terms min-max scaled over the candidates::

      score(x) = alpha * (e(x) - min e) / (max e - min e)
                 + (1 - alpha) * (max E - E(x)) / (max E - min E)

  (a term whose range is 0 over the candidates is 0 for all of them).

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

Entry points: :func:`fairal_reference` (a plain loop, one :func:`~.refit.refit_head` at a time:
the test oracle), :func:`fairal_fast` (all ``(candidate, label)`` refits of a chunk as one
tensor program, :func:`~.refit.refit_pairs`) and :func:`fairal_sklearn` (the authors' code
path: sklearn's liblinear ``LogisticRegression`` fitted from scratch per candidate and label;
the oracle of ``RefitConfig(method="exact")``).

Tolerance of ``fairal_fast`` vs ``fairal_reference`` (same dtype): the refitted weights agree to
rounding (float64: ~1e-12 relative), so the unfairness values are *identical* unless a
fairness-set logit lies within that rounding of the decision boundary (then one hard prediction
may flip, changing a rate by 1/|group|). The tests assert ``|dE| <= 1e-9`` in float64 and
identical selections. For ``method="exact"`` each engine stops at liblinear's tolerance from its
own start (zero for the reference and sklearn, the fit on ``L`` for the fast path), so the
refitted weights agree to that tolerance, not to rounding: a few fairness-set predictions near
the boundary may differ; the tests compare rankings (Spearman) there, and values with a tight
``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from rayfal.acquisition.fairal.refit import (
    LogisticHead,
    RefitConfig,
    as_tensor,
    refit_floats_per_candidate,
    refit_head,
    refit_pairs,
)
from rayfal.fairness import metrics

__all__ = [
    "MEASURES",
    "Alpha",
    "FairALScores",
    "combine_scores",
    "entropy",
    "fairal_fast",
    "fairal_reference",
    "fairal_sklearn",
    "resolve_alpha",
    "unfairness",
    "unfairness_batched",
]

MEASURES = ("dp", "eo", "mi")

#: An alpha: a constant, a callable ``f(round, n_rounds) -> alpha``, or ``{"start", "end"}``
#: (optionally ``"levels"``, ``"per"``: :func:`resolve_alpha`).
Alpha = float | Callable[[int, int], float] | Mapping[str, float]


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
    """The fixed fairness set with group (and label) indicator matrices for batched measures.

    Rows are stored sorted by group (``perm``: stored row ``i`` is input row ``perm[i]``;
    ``x``, ``groups``, ``y`` are permuted alike), so per-group prediction counts are sums over
    contiguous slices; every measure is invariant to the row order.
    """

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
        inv = inv.reshape(-1)
        perm = np.argsort(inv, kind="stable")
        inv = inv[perm]
        self.perm = torch.from_numpy(perm)
        self.x = x[self.perm]
        self.groups = g[perm]
        bounds = np.r_[0, np.cumsum(np.bincount(inv))]
        self.slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        self.measure = measure
        self.k = n_labels
        # counts and rates in float64 whatever the compute dtype of the refits
        self.gmat = torch.nn.functional.one_hot(
            torch.from_numpy(inv).long()).T.to(torch.float64)
        self.n = x.shape[0]
        self.group_sizes = self.gmat.sum(1)  # [A]
        if y is not None:
            yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
            if yt.shape != (self.n,):
                raise ValueError(f"y_fair must be 1-D with {self.n} entries, got {tuple(yt.shape)}")
            self.y = yt[self.perm]
        else:
            self.y = None

    def batched(self, preds: Tensor) -> Tensor:
        """Unfairness of each column of ``preds`` (``[n_fair, M]`` hard labels of the *stored*,
        group-sorted rows ``x``; ``bool`` = labels {0, 1}) -> ``[M]``."""
        m = preds.shape[1]
        dtype = self.gmat.dtype

        def indicator(c: int) -> Tensor:
            return (preds == c).to(dtype)  # [n, M]

        def counts(c: int) -> Tensor:
            """``[A, M]`` rows predicted ``c`` per group (exact integers, as ``gmat @ 1[c]``)."""
            hit = (preds if c == 1 else ~preds) if preds.dtype == torch.bool else preds == c
            return torch.stack([hit[a:b].sum(0) for a, b in self.slices]).to(dtype)

        if self.measure == "dp":
            # for two labels the c=0 and c=1 spreads are equal: one class suffices
            worst = torch.zeros(m, dtype=dtype)
            for c in [1] if self.k == 2 else range(self.k):
                rates = counts(c) / self.group_sizes[:, None]  # [A, M]
                worst = torch.maximum(worst, rates.amax(0) - rates.amin(0))
            return worst
        if self.measure == "mi":
            pa = (self.group_sizes / self.n)[:, None]
            mi = torch.zeros(m, dtype=dtype)
            for c in range(self.k):
                joint = counts(c) / self.n  # [A, M]
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
    return fair.batched(preds[fair.perm]).numpy()


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


def entropy(p: Tensor) -> np.ndarray:
    """Row entropies (nats, float64) of class probabilities ``[n, K]`` (``0 log 0 = 0``)."""
    p64 = p.double()
    return (-(p64 * torch.log(torch.where(p64 > 0, p64, torch.ones_like(p64)))).sum(1)).numpy()


def resolve_alpha(alpha: Alpha, round: int = 0, n_rounds: int = 1) -> float:
    """The trade-off alpha at step ``round`` (0-based) of ``n_rounds``.

    A float is constant; a callable is called as ``alpha(round, n_rounds)``; a mapping
    ``{"start": a0, "end": a1}`` is linear from ``a0`` at step 0 to ``a1`` at step
    ``n_rounds - 1`` (``a0`` if ``n_rounds == 1``).

    With ``"levels": L`` the mapping is the FairAL authors' staircase
    (anahideh/FAL--Fair-Active-Learning, FAL/FAL_sklearn.py line 25,
    ``a = alpha[min(10, floor(Iter / int(b / 11)))]``, with ``alpha = np.linspace(1, 0, 11)`` for
    their "adaptive alpha", FAL/test_FAL.py line 46): ``np.linspace(a0, a1, L)[min(L - 1,
    floor(round / max(1, int(n_rounds / L))))]``, the step being FAL's label index ``Iter`` and
    ``n_rounds`` its budget ``b`` (the ``max(1, .)`` guards ``b < L``, where the authors' code
    divides by zero). The key ``"per"`` (``"round"`` or ``"label"``) says what a step is; it is
    read by :func:`~.select.fairal_select`, not here.
    """
    if callable(alpha):
        value = float(alpha(round, n_rounds))
    elif isinstance(alpha, Mapping):
        unknown = set(alpha) - {"start", "end", "levels", "per"}
        if unknown or not {"start", "end"} <= set(alpha):
            raise ValueError(f"alpha schedule needs keys 'start' and 'end' (optional 'levels', "
                             f"'per'), got {sorted(alpha)}")
        if alpha.get("per", "round") not in ("round", "label"):
            raise ValueError(f"alpha schedule 'per' must be 'round' or 'label', got {alpha['per']!r}")
        a0, a1 = float(alpha["start"]), float(alpha["end"])
        levels = alpha.get("levels")
        if levels is not None:
            levels = int(levels)
            if levels < 2:
                raise ValueError(f"alpha schedule 'levels' must be >= 2, got {levels}")
            level = min(levels - 1, max(round, 0) // max(1, int(n_rounds / levels)))
            value = float(np.linspace(a0, a1, levels)[level])
        else:
            frac = round / (n_rounds - 1) if n_rounds > 1 else 0.0
            frac = min(max(frac, 0.0), 1.0)
            value = a0 + frac * (a1 - a0)
    else:
        value = float(alpha)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {value} at round {round}")
    return value


# --------------------------------------------------------------------------- expected unfairness


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
    x_l = as_tensor(x_labelled, dtype)
    y_l = torch.as_tensor(np.asarray(y_labelled), dtype=torch.long)
    x_c = as_tensor(x_cand, dtype)
    x_f = as_tensor(x_fair, dtype)
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
    ent = entropy(p)
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
    """FAL scores by a plain loop: one :func:`~.refit.refit_head` per (candidate, label),
    unfairness by :func:`unfairness` (numpy / :mod:`rayfal.fairness.metrics`). The test oracle."""
    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure, dtype)
    k = inp.head.n_labels
    groups = inp.fair.groups  # the fairness set's rows as stored (sorted by group)
    y_f = None if inp.fair.y is None else inp.fair.y.numpy()
    per_label = np.zeros((inp.x_c.shape[0], k))
    for i in range(inp.x_c.shape[0]):
        x_aug = torch.cat([inp.x_l, inp.x_c[i : i + 1]])
        for label in range(k):
            y_aug = torch.cat([inp.y_l, torch.tensor([label])])
            refitted = refit_head(inp.head, x_aug, y_aug, refit)
            preds = refitted.predict(inp.fair.x).numpy()
            per_label[i, label] = unfairness(preds, groups, y_f, measure=measure, n_labels=k)
    return _finish(inp, per_label, alpha)


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
    """The same numbers as :func:`fairal_reference`, batched over (candidate, label) pairs
    (:func:`~.refit.refit_pairs`, measured by the vectorised :func:`unfairness_batched` form).

    Candidates are processed ``chunk_size`` at a time; by default the chunk is the largest whose
    tensors hold at most ``max_elements`` floats (:func:`~.refit.refit_floats_per_candidate`:
    ``m K C_out (2 |L| + |F| + 4 D)``; one Newton step ``m (4 |F| + 3 D)``), so memory is
    bounded whatever the number of candidates (default ``2^22`` floats = 32 MiB in float64).
    """
    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure, dtype)
    k = inp.head.n_labels
    chunk_size = _chunk_size(inp, refit, chunk_size, max_elements)
    n_cand = inp.x_c.shape[0]
    per_label = np.zeros((n_cand, k))
    for start in range(0, n_cand, chunk_size):
        xc = inp.x_c[start : start + chunk_size]
        per_label[start : start + len(xc)] = _per_label_chunk(inp, xc, refit)
    return _finish(inp, per_label, alpha)


def _chunk_size(inp: _Inputs, refit: RefitConfig, chunk_size: int | None, max_elements: int
                ) -> int:
    """:func:`fairal_fast`'s chunk: ``chunk_size`` or the largest within ``max_elements``."""
    if chunk_size is None:
        per_cand = refit_floats_per_candidate(refit, inp.head, inp.x_l.shape[0], inp.fair.n)
        chunk_size = max(1, max_elements // max(per_cand, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def _per_label_chunk(inp: _Inputs, xc: Tensor, refit: RefitConfig) -> np.ndarray:
    """``F_k(x)`` ``[m, K]`` of one chunk of candidates (all its refits as one program). The
    Ray Data job (:mod:`rayfal.scoring.fairal_refits`) runs this on the same chunks."""
    with torch.no_grad():
        return refit_pairs(inp.head, inp.x_l, inp.y_l, xc, inp.fair.x, refit,
                           inp.fair.batched).double().numpy()


def fairal_sklearn(
    head: LogisticHead,
    x_labelled: ArrayLike | Tensor,
    y_labelled: ArrayLike | Tensor,
    x_cand: ArrayLike | Tensor,
    x_fair: ArrayLike | Tensor,
    groups_fair: ArrayLike,
    *,
    y_fair: ArrayLike | None = None,
    measure: str = "mi",
    refit: RefitConfig = RefitConfig(method="exact"),  # noqa: B008 (frozen dataclass)
    alpha: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> FairALScores:
    """FAL scores as the authors compute them (anahideh/FAL--Fair-Active-Learning,
    FAL/FAL_sklearn.py lines 19 and 31-42): ``clf = LogisticRegression(solver="liblinear")``
    fitted on ``L`` gives ``p(k|x)`` and the entropy; for every candidate and label a new
    ``LogisticRegression(solver="liblinear")`` is fitted *from scratch* on ``L ∪ {(x, k)}``
    and ``F_k(x)`` is the unfairness of its ``predict`` on the fairness set. The reference
    oracle of ``refit=RefitConfig(method="exact")`` (same ``C``, ``tol``, ``max_iter``); slow:
    ``2 N`` sklearn fits. ``head`` only fixes the input width (its ``p(k|x)`` is not used).

    Binary labels only (liblinear's intercept is penalised: ``penalize_bias`` must be true);
    ``L`` must hold both labels (sklearn refuses a one-class fit). Unfairness by
    :func:`unfairness` (``"mi"`` is sklearn's ``mutual_info_score``, the authors' default
    ``demo_option=0``; ``"dp"`` their ``Demo_err``; ``"eo"`` their ``Eqq_odds``).
    """
    from sklearn.linear_model import LogisticRegression

    if refit.method != "exact" or not refit.penalize_bias:
        raise ValueError("engine 'sklearn' is liblinear's refit from scratch: it needs "
                         "RefitConfig(method='exact', penalize_bias=True)")
    inp = _prepare(head, x_labelled, y_labelled, x_cand, x_fair, groups_fair, y_fair, measure,
                   dtype)
    if inp.head.weight.shape[1] != 1:
        raise ValueError("engine 'sklearn' supports the binary (one-column sigmoid) head only")
    xl, yl = inp.x_l.double().numpy(), inp.y_l.numpy()
    xc, xf = inp.x_c.double().numpy(), inp.fair.x.double().numpy()
    groups = inp.fair.groups  # rows as stored (sorted by group)
    y_f = None if inp.fair.y is None else inp.fair.y.numpy()

    def fit(x: np.ndarray, y: np.ndarray):
        return LogisticRegression(solver="liblinear", C=refit.C, tol=refit.tol,
                                  max_iter=refit.max_iter).fit(x, y)

    probs = fit(xl, yl).predict_proba(xc) if len(xc) else np.zeros((0, 2))
    per_label = np.zeros((len(xc), 2))
    for i in range(len(xc)):
        x_aug = np.concatenate([xl, xc[i : i + 1]])
        for label in range(2):
            preds = fit(x_aug, np.append(yl, label)).predict(xf)
            per_label[i, label] = unfairness(preds, groups, y_f, measure=measure)
    ent = entropy(torch.from_numpy(probs))
    expected = (probs * per_label).sum(1)
    return FairALScores(ent, expected, per_label, probs, combine_scores(ent, expected, alpha),
                        alpha)
