"""``batchbald``: BatchBALD (Kirsch, van Amersfoort & Gal 2019, arXiv:1906.08158), greedy joint
mutual information between a batch of labels and the model parameters, from MC-dropout samples.

Notation: ``probs[i, c, t] = p(y_i = c | x_i, w_t)`` for ``T`` MC-dropout weight samples
``w_1..w_T`` (each an equally weighted draw of ``p(w | D_train)``), ``C`` classes. Pure numpy
(float64); no Ray, no torch.

**Acquisition** (Kirsch et al. 2019, Eq. 8): for a batch ``B = {x_1..x_n}``::

    a(B) = I(y_1..y_n ; w) = H(y_1..y_n) - sum_{i in B} E_w H(y_i | w)                  (A1)

because the labels are independent given ``w``. The second term uses the MC samples as in BALD
(Houlsby et al. 2011; Eq. 1 of Branchaud-Charron et al. 2021)::

    E_w H(y_i | w) ~= (1/T) sum_t H[p(. | x_i, w_t)]                                    (A2)

and the joint predictive distribution is the MC mixture::

    p(y_1..y_n) ~= (1/T) sum_t prod_i p(y_i | x_i, w_t)                                  (A3)

**Greedy** (Kirsch et al. 2019, Algorithm 1): ``B_0 = {}``; at step ``k`` pick
``argmax_{i not in B_{k-1}} a(B_{k-1} + {i})`` (ties to the lowest index; scores within
``1e-10`` relative of the best count as tied). ``a`` is submodular, so the greedy batch is a
``1 - 1/e`` approximation of the best batch.

**Exact joint entropy**: while the ``C**k`` label configurations of ``B_{k-1} + {i}`` number at
most ``exact_max_configs``, ``H`` is summed over all of them with (A3): the products
``P[m, t] = prod_{j in B_{k-1}} p(y_j = m_j | w_t)`` of the ``C**(k-1)`` chosen-batch
configurations ``m`` are kept (``[C**(k-1), T]``) and ``p(m, c) = (1/T) sum_t P[m, t] p_i(c|w_t)``.

**Sampled joint entropy** (the Monte-Carlo estimate of Kirsch et al. 2019, §3.2, as in baal and
batchbald_redux, Rao-Blackwellised): ``S = num_samples`` configurations ``yhat^s ~ p(y_B)``
of the chosen batch ``B = B_{k-1}`` are drawn from the mixture (A3) (a weight sample ``t_s``
uniformly, then each ``y_j ~ p(.|x_j, w_{t_s})``; a chosen point's label is drawn when it joins
the batch) and the candidate's label is summed exactly::

    H(y_B, y_i)  = H(y_B) + H(y_i | y_B)                                    (chain rule) (E1)
    H(y_i | y_B) = E_{yhat ~ p(y_B)} H[p(. | yhat)]
                ~= (1/S) sum_s H[p(. | yhat^s)]                                           (E2)
    p(c | yhat^s) = sum_t W[s, t] p_i(c | w_t),
    W[s, t] = p(w_t | yhat^s) = P[s, t] / sum_t' P[s, t'],   P[s, t] = prod_{j in B} p(yhat^s_j | w_t)
                                                                                         (E3)

``H(y_B)`` is exact up to the switch (the value computed when the batch's last exact point
joined); after it, each chosen point adds its (E2) term computed on a second, independent set
of ``S`` configurations (the set that scored the candidates overrates the one it picked, the
winner's curse, which would add up over the steps). ``H(y_B)`` is shared by all candidates of
a step, so it never changes which point is picked; it makes the reported ``a(B_k)`` an unbiased
estimate for the batch actually chosen. ``W`` is kept normalised (``W <- W * p(yhat_j | w_t)``,
rows renormalised), so nothing underflows however large the batch.

The paper's form ``-(1/S) sum_s sum_c p(c|yhat^s) log p(yhat^s, c)`` is (E2) plus
``(1/S) sum_s -log p(yhat^s)``, a sample mean of ``H(y_B)`` whose variance grows with the batch;
(E1) replaces that term by the chain rule's sum of conditional entropies (a Rao-Blackwellisation:
each ``-log p(yhat_j | yhat_{<j})`` by its expectation over ``yhat_j``). Only the expectation over
``yhat`` is sampled (``p(c|yhat^s)`` is exact under (A3)), so (E2) is unbiased with
``O(1/sqrt(S))`` error for a fixed batch; for ``k = 1`` it is exact (no earlier labels).

For ``k = 1`` both give ``a({i}) = H[mean_t p_i(.|w_t)] - E_w H(y_i|w)``, the BALD score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from rayfal.acquisition.base import STRATEGIES, StrategyParams
from rayfal.acquisition.scores import bald
from rayfal.acquisition.view import PoolView, WholePoolStrategy, subsample_size

__all__ = ["BatchBaldParams", "BatchBaldStrategy", "batchbald_select", "bald_prefilter",
           "conditional_entropy", "joint_entropy_exact", "joint_entropy_sampled"]

log = logging.getLogger("rayfal")

#: elements of one intermediate ``[n, C, M]`` array (chunks of candidates are scored at once)
_CHUNK_ELEMS = 1 << 22
#: scores within this fraction (of max(1, |best|)) of the best one count as tied
_TIE_RTOL = 1e-10


def _as_mc(probs: ArrayLike, what: str = "probs") -> np.ndarray:
    """``probs`` as float64 ``[N, C, T]`` after checking shape, finiteness and signs."""
    arr = np.asarray(probs)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{what} must have shape [N, C, T] with C, T >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite (found NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"{what} must be non-negative (min value {arr.min()!r})")
    return arr


def _xlogx(x: np.ndarray) -> np.ndarray:
    """Elementwise ``x log x`` with ``0 log 0 = 0``."""
    return x * np.log(np.where(x > 0, x, 1.0))


def conditional_entropy(probs: ArrayLike) -> np.ndarray:
    """``E_w H(y_i | w) ~= (1/T) sum_t H[p(. | x_i, w_t)]`` (A2) per row: ``[N]`` float64."""
    arr = _as_mc(probs)
    return -_xlogx(arr).sum(axis=1).mean(axis=1)


def joint_entropy_exact(probs_batch: ArrayLike, *, max_configs: int = 1 << 20) -> float:
    """``H(y_1..y_b)`` under the MC mixture (A3), summing over all ``C**b`` label
    configurations; ``probs_batch`` is ``[b, C, T]`` (``b = 0`` gives 0). Refuses
    (``ValueError``) when ``C**b > max_configs``."""
    arr = _as_mc(probs_batch, "probs_batch")
    b, c, t = arr.shape
    if c**b > max_configs:
        raise ValueError(f"joint_entropy_exact: {c}**{b} configurations exceed max_configs="
                         f"{max_configs}")
    prod = np.ones((1, t))
    for i in range(b):
        prod = (prod[:, None, :] * arr[i][None, :, :]).reshape(-1, t)
    return float(-_xlogx(prod.mean(axis=1)).sum())


class _SampledJoint:
    """``S`` configurations ``yhat^s ~ p(y_B)`` of the chosen batch ``B`` (module docstring,
    E2-E3), held as ``W[s, t] = p(w_t | yhat^s)`` (rows sum to one)."""

    def __init__(self, t: int, num_samples: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.comp = rng.integers(t, size=num_samples)  # the weight sample each yhat^s is drawn under
        self.w = np.full((num_samples, t), 1.0 / t)

    def add(self, p_ct: np.ndarray) -> None:
        """A point with label probabilities ``p_ct[c, t]`` joins the batch: draw its label per
        configuration under that configuration's weight sample, then update ``W``."""
        c = p_ct.shape[0]
        cdf = np.cumsum(p_ct[:, self.comp], axis=0)  # [C, S]
        u = (1.0 - self.rng.random(len(self.comp))) * cdf[-1]  # in (0, total]
        y = np.minimum((cdf < u[None, :]).sum(axis=0), c - 1)
        w = self.w * p_ct[y, :]  # p(w_t | yhat) p(y | w_t)
        self.w = w / np.maximum(w.sum(axis=1), np.finfo(np.float64).tiny)[:, None]

    def cond_entropies(self, probs: np.ndarray) -> np.ndarray:
        """``H(y_i | y_B)`` by (E2) for each candidate row of ``probs`` ``[n, C, T]``: ``[n]``."""
        s = len(self.comp)
        out = np.empty(len(probs))
        step = max(1, _CHUNK_ELEMS // (s * probs.shape[1]))
        for a in range(0, len(probs), step):
            q = np.tensordot(probs[a : a + step], self.w, axes=([2], [1]))  # [n, C, S]
            out[a : a + step] = -_xlogx(q).sum(axis=1).mean(axis=1)
        return out


def _exact_entropies(prod: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``H(y_B, y_i)`` for each candidate row of ``probs`` ``[n, C, T]``, given the chosen
    batch's configuration products ``prod`` ``[M, T]`` (module docstring): ``[n]``."""
    m, t = prod.shape
    out = np.empty(len(probs))
    step = max(1, _CHUNK_ELEMS // (m * probs.shape[1]))
    for a in range(0, len(probs), step):
        joint = np.tensordot(probs[a : a + step], prod, axes=([2], [1])) / t  # [n, C, M]
        out[a : a + step] = -_xlogx(joint).sum(axis=(1, 2))
    return out


def joint_entropy_sampled(probs_batch: ArrayLike, num_samples: int, *,
                          seed: int | Sequence[int] = 0) -> float:
    """``H(y_1..y_b) = sum_j H(y_j | y_1..y_{j-1})`` (E1), each term by the Monte-Carlo
    estimate (E2) from ``num_samples`` configurations drawn from (A3)
    (``numpy.random.default_rng(seed)``), as in :func:`batchbald_select`'s sampled steps.
    ``probs_batch`` is ``[b, C, T]``; ``H(y_1)`` is exact."""
    arr = _as_mc(probs_batch, "probs_batch")
    if len(arr) == 0:
        raise ValueError("joint_entropy_sampled needs at least one point")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    joint = _SampledJoint(arr.shape[2], int(num_samples), np.random.default_rng(seed))
    h = 0.0
    for i in range(len(arr)):
        h += float(joint.cond_entropies(arr[i : i + 1])[0])
        if i < len(arr) - 1:
            joint.add(arr[i])
    return h


def batchbald_select(
    probs: ArrayLike,
    budget: int,
    *,
    num_samples: int = 1000,
    exact_max_configs: int = 10_000,
    seed: int | Sequence[int] = 0,
    return_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Greedy BatchBALD (Kirsch et al. 2019, Algorithm 1; module docstring): indices into
    ``probs`` ``[N, C, T]`` of ``min(budget, N)`` rows, in the order picked.

    Step ``k`` scores every remaining row ``i`` by ``a(B_{k-1} + {i})`` (A1), with the joint
    entropy exact while ``C**k <= exact_max_configs`` and otherwise the estimate (E1)-(E2)
    from ``num_samples`` configurations (once sampled, always sampled; the configurations of
    the batch so far are drawn at the switch). Deterministic given ``seed`` (anything
    ``numpy.random.default_rng`` takes); ties go to the lowest index.

    With ``return_scores`` also returns ``a(B_k)`` for ``k = 1..len(batch)``: exact while
    exact; once sampled, ``H(y_{B_k})`` accumulates (E1) with each chosen point's (E2) term
    from a second, independent set of ``num_samples`` configurations (the set that picked a
    point overrates it, the winner's curse, which would add up over the steps), so the
    reported value is an unbiased estimate for the batch actually chosen.
    """
    arr = _as_mc(probs)
    n, c, t = arr.shape
    if num_samples < 1 or exact_max_configs < 1:
        raise ValueError("num_samples and exact_max_configs must be >= 1")
    budget = min(max(int(budget), 0), n)
    cond = conditional_entropy(arr)
    rng = np.random.default_rng(seed)
    available = np.ones(n, bool)
    chosen: list[int] = []
    scores: list[float] = []
    prod: np.ndarray | None = np.ones((1, t))  # exact: configurations of the batch x T
    sampled: _SampledJoint | None = None  # configurations that score the candidates
    valuer: _SampledJoint | None = None  # independent ones that value the chosen batch
    cond_sum = 0.0  # sum of E_w H(y_j | w) over the batch (A2)
    h_batch = 0.0  # H(y_B) of the batch so far (exact, or by E1-E2 on ``valuer``)
    for k in range(1, budget + 1):
        if sampled is None and c**k > exact_max_configs:
            sampled = _SampledJoint(t, int(num_samples), rng)
            valuer = _SampledJoint(t, int(num_samples), rng)
            for j in chosen:
                sampled.add(arr[j])
                valuer.add(arr[j])
            prod = None
        idx = np.flatnonzero(available)
        if sampled is None:
            joint = _exact_entropies(prod, arr[idx])
        else:
            joint = h_batch + sampled.cond_entropies(arr[idx])
        score = joint - cond[idx] - cond_sum
        best = score.max()
        pos = int(np.flatnonzero(score >= best - _TIE_RTOL * max(1.0, abs(best)))[0])
        i = int(idx[pos])
        chosen.append(i)
        available[i] = False
        cond_sum += cond[i]
        if sampled is not None:
            h_batch += float(valuer.cond_entropies(arr[i : i + 1])[0])
            sampled.add(arr[i])
            valuer.add(arr[i])
        else:
            h_batch = float(joint[pos])
        scores.append(h_batch - cond_sum)
        if sampled is None and k < budget and c ** (k + 1) <= exact_max_configs:
            prod = (prod[:, None, :] * arr[i][None, :, :]).reshape(-1, t)
    out = np.asarray(chosen, dtype=np.int64)
    return (out, np.asarray(scores, dtype=np.float64)) if return_scores else out


def bald_prefilter(row_ids: np.ndarray, probs: ArrayLike, size: int) -> np.ndarray:
    """Positions of the ``size`` rows with the largest BALD score (ties: smaller row_id
    first), in that order."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    order = np.lexsort((row_ids, -bald(probs)))
    return order[: max(int(size), 0)]


class BatchBaldParams(StrategyParams):
    """``candidates``: the BALD-prefiltered rows BatchBALD chooses from (at least the budget);
    ``subsample``: rows of the unlabelled pool scored by BALD (at least the budget; null =
    all); ``num_samples``: sampled label configurations once the joint is too large;
    ``exact_max_configs``: the most label configurations summed exactly (``C**k``)."""

    candidates: int = Field(200, ge=1)
    subsample: int | None = Field(5000, ge=1)
    num_samples: int = Field(1000, ge=1)
    exact_max_configs: int = Field(10_000, ge=1)


@STRATEGIES.register("batchbald")
class BatchBaldStrategy(WholePoolStrategy):
    """BatchBALD (Kirsch et al. 2019): the ``subsample`` candidate rows are scored by BALD
    with the round's model's MC-dropout samples, the top ``candidates`` kept (ties by row_id)
    and :func:`batchbald_select` picks the batch greedily by joint mutual information (exact
    joint entropy for small batches, sampled configurations for larger ones). Budget 1 is
    BALD's top row. Memory: the ``subsample x C x T`` MC probabilities plus one
    ``candidates x C x max(num_samples, exact configurations)`` chunk (bounded)."""

    name = "batchbald"
    summary = ("BatchBALD: greedy joint mutual information over a BALD-prefiltered batch "
               "(Kirsch et al. 2019)")
    requires = frozenset({"model"})
    Params = BatchBaldParams

    def select_pool(self, view: PoolView, budget: int) -> np.ndarray:
        p = self.params
        cand = self.candidates(view, subsample_size(p.subsample, budget))
        if budget <= 0 or len(cand) == 0:
            return np.zeros(0, np.int64)
        g = view.gather(cand, ("mc",))
        ids = np.asarray(g["row_id"], dtype=np.int64)
        keep = bald_prefilter(ids, g["mc"], max(p.candidates, budget))
        idx = batchbald_select(g["mc"][keep], budget, num_samples=p.num_samples,
                               exact_max_configs=p.exact_max_configs,
                               seed=[self.seed % (1 << 64), self.round % (1 << 64), 0xBA7C4])
        log.debug("batchbald: %d of %d BALD-prefiltered rows (subsample %d)", len(idx),
                  len(keep), len(ids))
        return ids[keep][idx]
