"""PANDA meta-training maths (Sharaf et al. 2022, §3.2-§3.3, Algorithm 1): plain torch, no Ray.

The simulated active learner and the outer quantities:

* :func:`simulate` = ACTIVELEARNSIM (Algorithm 1, lines 8-15) unrolled: a linear (softmax)
  classifier trained by gradient steps of size ``lr`` on the softly selected items,
  differentiable end to end w.r.t. the policy. :class:`InnerConfig` ``mode="sequential"`` is
  lines 10-12 literally (pick ``b``, then "(a/several) gradient step(s)" on that pick, for
  ``b = 1..B``; the soft pick ``a_b`` of :func:`~rayfal.acquisition.panda.policy.
  relaxed_top_b_picks` relaxes the one-hot ``j``); ``mode="batch"`` (default, cheaper:
  ``steps`` instead of ``B * steps`` unrolled steps) takes ``steps`` full-batch steps on all B
  picks at once, which §3.3 allows for the classifier-agnostic policy ("unrolled in a single
  step").
* Disparity surrogates (Table 1) on the *soft* prediction ``h(x) = P(y_hat = 1 | x)``
  (positive class 1) instead of the hard ``1[...]``: :func:`soft_demographic_parity`,
  :func:`soft_error_rate_balance`, :func:`soft_equalized_odds`. On 0/1 predictions they are
  exactly :func:`rayfal.fairness.metrics.panda_demographic_parity`,
  :func:`~rayfal.fairness.metrics.error_rate_balance` and
  :func:`~rayfal.fairness.metrics.panda_equalized_odds`.

Meta-training:

* :func:`pretrain_encoder`: "we pretrain the parameters of the Transformer on D0" (§3.3). The
  paper does not give the objective; we read it with §4.2 ("the same Transformer architecture
  as a feature extractor for all approaches"): the encoder is trained as a classifier of the
  labels of D0 (an item's label from its contextual representation within a random set of
  ``set_size`` items; a temporary linear head, discarded afterwards).
* :func:`sample_task`: a meta-task (L, V) "by repeatedly reshuffling D" (§3.2; Algorithm 1,
  line 3): a random permutation split into a pool of ``pool_size`` and a validation set of
  ``val_size`` items.
* :func:`fbs_prox_step`: the backward (proximal) step of Forward-Backward Splitting
  (Algorithm 1, line 5): ``theta = argmin eta chi(theta) + 1/2 ||theta - theta_hat||^2``,
  approximated by ``prox_steps`` gradient steps on a smoothed ``chi`` that is 0 when the
  constraint ``Delta_V(h) < rho`` holds and ``Delta_V(h)`` otherwise (§3.2). We stop at the
  first iterate that satisfies the constraint (the paper: "this approximate projection always
  finds an iterate that satisfies the original constraint").
* :func:`meta_train`: Algorithm 1. Per iteration k: sample a task; forward step (line 4) =
  one optimiser step (Adam, §4.2) on the validation loss of ACTIVELEARNSIM; backward step
  (line 5) = :func:`fbs_prox_step` on the same task and the same Gumbel noise (common random
  numbers; the argmin of line 5 is over a deterministic function of theta only then).

Choices where the paper is open (documented here, parameters of :func:`meta_train`):

* ``train_encoder=False`` (default): after pretraining, meta-training updates the final
  layer and the temperature only (§3.3: "pretrain the parameters of the Transformer on D0 and
  use the B-many actively selected samples to fine-tune the final layer"); ``True`` updates
  every parameter.
* ``prox_weight``: line 5 weights ``chi`` by the meta step size ``eta^k``. For the exact
  indicator any positive weight gives the same projection; for the smoothed ``chi`` the weight
  sets how hard the approximate projection pushes, so it is a separate parameter (default 1);
  ``prox_weight=None`` uses ``eta^k`` literally. With a finite weight the iteration can settle
  where ``weight * grad Delta`` balances the pull back to ``theta_hat`` with the constraint
  still violated: the records' ``prox_final`` / ``prox_satisfied`` show it; then raise
  ``prox_weight`` (or ``prox_steps``), a natural Tune dimension.
* Algorithm 1 gives no step rule for the approximate proximal descent; ours is plain gradient
  descent with the norm of ``grad chi~`` clipped to ``PROX_GRAD_NORM`` (10). At small Gumbel
  temperatures (the tune space reaches 1e-6) the relaxed top-B's gradient reaches 1e12, and
  one unclipped step of size ``prox_lr`` sent the temperature to inf (nan at step 1).
* The constraint is checked on the soft disparity surrogate (the quantity that is minimised)
  unless ``sharpness`` is given: then on ``softmax(logits / sharpness)``, close to the hard
  disparity of the thresholded classifier the test measures; the hard one is logged alongside.
* Randomness of iteration ``k`` (task split, Gumbel noise) comes from a generator seeded by
  ``(seed, k)`` (:func:`task_generator`: ``(seed, k * tasks_per_step + j)`` for task ``j``),
  so a run resumed at ``start_step`` sees the same tasks as an uninterrupted one.
* With the encoder frozen (``train_encoder=False``) its pool representation is computed once
  per task and shared by the forward step and every proximal iteration (exact, and it saves
  the ``O(N^2)`` attention pass ``prox_steps`` times).
* The simulated learner starts every task from ``h^0 = 0`` on the picks only unless
  ``d0_size > 0``: then each task also draws a D0 of that many rows of D (disjoint from L and
  V), ``h^0 = A(D^0)`` is the same learner fitted on D0 (no gradient), and the learner is
  warm-started there and trained on D0 plus the picks, as the campaign's is. ``inner.optimizer
  = "adam"`` unrolls full-batch Adam (the campaign's optimiser). :func:`simulate` also takes
  separate classifier features (``classifier_x``, e.g. the frozen pretrained representation
  of §4.2). Features are used as given (§4.2 standardises them; do it before).
* ``temperature_final``: the Gumbel temperature is annealed geometrically from the policy's
  initial value to this one over the steps (a pure function of the step, so resumable)
  instead of being learned; the log's ``soft_hard_gap`` (hard-pick loss minus soft-pick loss
  on the same logits and noise) measures what the relaxation costs at each temperature.
* ``prox_weight``: the paper's ``eta^k`` (``None``) moves the policy by ~``lr * prox_lr *
  ||grad chi||`` per proximal iteration, far less than the forward step on Adult (probe:
  0.001 vs 0.04); a fixed weight scaled so that both steps are of the same size is the other
  choice. The log's ``forward_moved`` and ``prox_moved`` show the two sizes per step.
* Algorithm 1 picks one item per inner step (lines 10-12); with the classifier-agnostic policy
  of §3.3 the B picks are one (relaxed) Gumbel-top-B. ``inner.mode="sequential"`` then trains
  the learner pick by pick as in lines 10-12; ``"batch"`` (default) takes ``inner.steps``
  full-batch steps on the B softly selected items (see :class:`InnerConfig`).
* Line 4's plain gradient step is an Adam step (§4.2: "The model is optimized with Adam"); the
  schedule ``eta^k`` is Adam's constant ``lr``.
* A meta-iteration may average over ``tasks_per_step`` tasks (a minibatch estimate of Eq. 3's
  expectation over tasks; 1 = Algorithm 1 as written): the forward step uses the mean
  validation loss, the proximal step the mean smoothed indicator and stops when every task
  satisfies the constraint. The tasks can be spread over data-parallel workers (``rank``,
  ``world_size``, ``allreduce``; :mod:`rayfal.acquisition.panda.train` runs it on Ray Train).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from rayfal.acquisition.panda.policy import PandaPolicy, gumbel_noise, relaxed_top_b_picks
from rayfal.fairness import metrics

__all__ = [
    "DISPARITIES",
    "INNER_MODES",
    "PROX_GRAD_NORM",
    "AllReduce",
    "InnerConfig",
    "MetaData",
    "SimResult",
    "as_metadata",
    "data_fingerprint",
    "fbs_prox_step",
    "hard_picks",
    "inner_fit",
    "meta_train",
    "pretrain_encoder",
    "sample_task",
    "simulate",
    "soft_demographic_parity",
    "soft_equalized_odds",
    "soft_error_rate_balance",
    "step_generator",
    "task_generator",
]


# --------------------------------------------------------------------------- ACTIVELEARNSIM


INNER_MODES = ("batch", "sequential")
#: ``gd``: plain gradient steps; ``adam``: full-batch Adam steps (the campaign's optimiser,
#: ``torch.optim.Adam`` defaults), unrolled and differentiable.
INNER_OPTIMIZERS = ("gd", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class InnerConfig:
    """The learner ``A`` of ACTIVELEARNSIM: a linear softmax classifier with ``n_classes``
    outputs, from ``W = 0, b = 0`` unless a warm start is given, trained by gradient steps of
    size ``lr`` on the cross-entropy (+ ``l2/2 ||W||^2``) of the selected items.

    ``mode="batch"``: ``steps`` full-batch steps on the selection-weighted mean over the B
    (softly) selected items (the B picks of the classifier-agnostic policy made at once, §3.3).
    ``mode="sequential"``: Algorithm 1, lines 10-12 literally: for each pick ``b = 1..B`` in
    order, ``steps`` gradient step(s) on that pick's loss ``l(y_j, h(x_j))`` (relaxed: the
    loss averaged under the soft pick ``a_b``), ``B * steps`` unrolled steps in all.
    ``optimizer="adam"``: the steps are Adam steps (``torch.optim.Adam``'s update with its
    default betas and eps, bias-corrected, unrolled: the campaign's optimiser, full batch)."""

    n_classes: int = 2
    steps: int = 5
    lr: float = 1.0
    l2: float = 0.0
    mode: str = "batch"
    optimizer: str = "gd"

    def __post_init__(self) -> None:
        if self.mode not in INNER_MODES:
            raise ValueError(f"InnerConfig.mode must be one of {INNER_MODES}, got '{self.mode}'")
        if self.optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"InnerConfig.optimizer must be one of {INNER_OPTIMIZERS}, got "
                             f"'{self.optimizer}'")


def inner_fit(x: Tensor, y: Tensor, weights: Tensor, cfg: InnerConfig,
              init: tuple[Tensor, Tensor] | None = None,
              extra: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Train the linear classifier on ``(x, y)`` with per-item ``weights``, unrolled
    (Algorithm 1, line 12): ``W <- W - lr (X^T (w * (P - Y)) / sum(w) + l2 W)``.

    ``weights`` ``[N]`` (batch mode: the soft or hard B-hot selection) or ``[B, N]`` (the
    picks in order, one row per pick: sequential mode takes ``cfg.steps`` steps per row, row
    by row; batch mode sums the rows). Differentiable w.r.t. ``weights`` (and ``x``). Returns
    ``(W [d, C], b [C])``.

    ``extra = (x0, y0)``: rows always in the training set with weight 1 each (D0, the labels
    available before the campaign; batch mode only): the loss is ``(sum_i w_i l_i + sum_D0
    l) / (sum w + |D0|)``."""
    d = x.shape[-1]
    if init is None:
        w_ = torch.zeros(d, cfg.n_classes, dtype=x.dtype, device=x.device)
        b_ = torch.zeros(cfg.n_classes, dtype=x.dtype, device=x.device)
    else:
        w_, b_ = init
    if cfg.mode == "sequential":
        if weights.ndim != 2:
            raise ValueError("sequential inner mode needs the picks in order, weights [B, N]")
        if extra is not None:
            raise ValueError("D0 rows (extra) are supported in the batch inner mode only")
        rows = list(weights)
    else:
        rows = [weights.sum(0) if weights.ndim == 2 else weights]
    if extra is not None:
        x = torch.cat([x, extra[0].to(x.dtype)])
        y = torch.cat([y.long(), extra[1].long()])
        ones = torch.ones(extra[0].shape[0], dtype=x.dtype, device=x.device)
        rows = [torch.cat([rows[0], ones])]
    onehot = torch.nn.functional.one_hot(y.long(), cfg.n_classes).to(x.dtype)
    adam = cfg.optimizer == "adam"
    if adam:
        m_w, v_w = torch.zeros_like(w_), torch.zeros_like(w_)
        m_b, v_b = torch.zeros_like(b_), torch.zeros_like(b_)
        b1, b2 = ADAM_BETAS
    t = 0
    for row in rows:
        row = row / row.sum().clamp_min(1e-12)
        for _ in range(cfg.steps):
            p = torch.softmax(x @ w_ + b_, dim=-1)
            r = (p - onehot) * row[:, None]
            g_w = x.T @ r + cfg.l2 * w_
            g_b = r.sum(0)
            if not adam:
                w_ = w_ - cfg.lr * g_w
                b_ = b_ - cfg.lr * g_b
                continue
            t += 1
            m_w, m_b = b1 * m_w + (1 - b1) * g_w, b1 * m_b + (1 - b1) * g_b
            v_w, v_b = b2 * v_w + (1 - b2) * g_w**2, b2 * v_b + (1 - b2) * g_b**2
            c1, c2 = 1 - b1**t, 1 - b2**t
            # sqrt(v + eps^2) instead of sqrt(v) + eps: the same step to ~eps, and a finite
            # derivative at v = 0 (the unrolled step is differentiated)
            w_ = w_ - cfg.lr * (m_w / c1) / (torch.sqrt(v_w / c2 + ADAM_EPS**2) + ADAM_EPS)
            b_ = b_ - cfg.lr * (m_b / c1) / (torch.sqrt(v_b / c2 + ADAM_EPS**2) + ADAM_EPS)
    return w_, b_


def hard_picks(indices: ArrayLike | Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot rows ``[B, n]`` of picks ``indices`` in order (a hard selection for
    :func:`simulate`'s ``weights`` in either inner mode)."""
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, Tensor) else indices)
    return torch.nn.functional.one_hot(idx.long().reshape(-1), n).to(dtype)


def _cells(groups: Tensor) -> list[Tensor]:
    return [groups == a for a in torch.unique(groups)]


def soft_demographic_parity(p: Tensor, groups: Tensor, y: Tensor | None = None) -> Tensor:
    """Table 1 ``Delta^DP = max_a |E[h | g=a] - E[h]|`` with ``h = p`` (soft positive rate)."""
    overall = p.mean()
    return torch.stack([(p[m].mean() - overall).abs() for m in _cells(groups)]).max()


def soft_equalized_odds(p: Tensor, groups: Tensor, y: Tensor) -> Tensor:
    """Table 1 ``Delta^EO = max_{a,y} |E[h | g=a, Y=y] - E[h | Y=y]|`` (soft); empty cells
    skipped."""
    devs = []
    for label in torch.unique(y):
        ym = y == label
        overall = p[ym].mean()
        devs += [(p[m & ym].mean() - overall).abs() for m in _cells(groups) if (m & ym).any()]
    return torch.stack(devs).max()


def soft_error_rate_balance(p: Tensor, groups: Tensor, y: Tensor) -> Tensor:
    """Table 1 ``Delta^EB = max_{a,a',y} |E[h | g=a, Y=y] - E[h | g=a', Y=y]|`` (soft): the
    largest spread of per-group TPR (y=1) or FPR (y=0); empty cells skipped."""
    spreads = [torch.zeros((), dtype=p.dtype, device=p.device)]
    for label in torch.unique(y):
        ym = y == label
        rates = [p[m & ym].mean() for m in _cells(groups) if (m & ym).any()]
        if len(rates) >= 2:
            r = torch.stack(rates)
            spreads.append(r.max() - r.min())
    return torch.stack(spreads).max()


#: name -> ``f(p_positive, groups, y) -> scalar`` (Table 1 surrogates).
DISPARITIES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "dp": soft_demographic_parity,
    "eo": soft_equalized_odds,
    "eb": soft_error_rate_balance,
}


@dataclass
class SimResult:
    """One ACTIVELEARNSIM run: validation loss, soft disparity, selection weights, classifier."""

    loss: Tensor
    disparity: Tensor
    weights: Tensor
    classifier: tuple[Tensor, Tensor]
    p_val: Tensor  # soft positive-class probability on V


def simulate(
    policy: PandaPolicy | None,
    pool_x: Tensor,
    pool_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    val_groups: Tensor,
    budget: int,
    *,
    inner: InnerConfig = InnerConfig(),  # noqa: B008 (frozen dataclass)
    disparity: str = "dp",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
    classifier_x: tuple[Tensor, Tensor] | None = None,
    init: tuple[Tensor, Tensor] | None = None,
    d0: tuple[Tensor, Tensor] | None = None,
    sharpness: float | None = None,
) -> SimResult:
    """ACTIVELEARNSIM(A, D, L, pi) (Algorithm 1, lines 8-15) + the outer quantities of Eq. 3/4.

    ``L = (pool_x, pool_y)`` (labels hidden from the policy), ``V = (val_x, val_y,
    val_groups)``. The policy's logits are relaxed to ``budget`` soft picks
    (:func:`relaxed_top_b_picks`, temperature ``policy.temperature``) unless ``weights`` are
    given (a hard or random selection: B-hot ``[N]`` for the batch inner mode, or the picks in
    order ``[B, N]``, see :func:`hard_picks`, for either mode); the classifier is
    :func:`inner_fit` on them. ``SimResult.weights`` is the B-hot ``[N]`` (sum of the picks). Returns the
    mean validation cross-entropy and the soft disparity ``DISPARITIES[disparity]`` on ``V``.
    ``classifier_x`` optionally gives the classifier different features for ``(pool, val)``
    than the policy's (e.g. a frozen pretrained representation, §4.2).

    ``init`` warm-starts the learner (``h^0 = A(D^0)``); ``d0 = (x0, y0)`` (classifier features
    and labels of D0) keeps D0 in the learner's training set (:func:`inner_fit` ``extra``).
    ``sharpness``: the disparity is computed on ``softmax(logits / sharpness)`` instead of the
    probability (a sharpened surrogate of the hard ``1[h(x) > 1/2]`` disparity; ``None`` = the
    probability, Table 1's soft form).
    """
    if weights is None:
        if policy is None:
            raise ValueError("simulate needs a policy or explicit weights")
        logits = policy(pool_x)
        weights = relaxed_top_b_picks(logits, budget, policy.temperature, noise=noise,
                                      generator=generator)
    elif inner.mode == "sequential" and weights.ndim != 2:
        raise ValueError("the sequential inner mode needs the picks in order: weights [B, N] "
                         "(hard_picks(indices, N))")
    cx_pool, cx_val = classifier_x if classifier_x is not None else (pool_x, val_x)
    w_, b_ = inner_fit(cx_pool, pool_y, weights, inner, init, extra=d0)
    if weights.ndim == 2:
        weights = weights.sum(0)
    logits_v = cx_val @ w_ + b_
    loss = torch.nn.functional.cross_entropy(logits_v, val_y.long())
    p_val = torch.softmax(logits_v, dim=-1)[:, 1]
    p_disp = p_val if sharpness is None else torch.softmax(logits_v / sharpness, dim=-1)[:, 1]
    disp = DISPARITIES[disparity](p_disp, val_groups, val_y)
    return SimResult(loss, disp, weights, (w_, b_), p_val)


# --------------------------------------------------------------------------- meta-training


@dataclass
class MetaData:
    """The pre-existing labelled data D0: features ``[N, d]``, labels ``[N]``, groups ``[N]``."""

    x: Tensor
    y: Tensor
    group: Tensor

    @classmethod
    def from_arrays(cls, x: ArrayLike, y: ArrayLike, group: ArrayLike) -> MetaData:
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        gt = torch.as_tensor(np.unique(np.asarray(group), return_inverse=True)[1].reshape(-1))
        if xt.ndim != 2 or yt.shape != (xt.shape[0],) or gt.shape != (xt.shape[0],):
            raise ValueError(f"D0 needs x [N, d], y [N], group [N]; got {tuple(xt.shape)}, "
                             f"{tuple(yt.shape)}, {tuple(gt.shape)}")
        if not torch.isfinite(xt).all():
            raise ValueError("D0 features contain NaN/inf")
        return cls(xt, yt, gt.long())

    def __len__(self) -> int:
        return self.x.shape[0]


def as_metadata(data: Any) -> MetaData:
    """D0 as :class:`MetaData`: a ``MetaData``, a ``(x, y, group)`` tuple, a mapping with keys
    ``x``, ``y``, ``group``, or the path of an ``.npz`` file holding those arrays."""
    if isinstance(data, MetaData):
        return data
    if isinstance(data, str | Path):
        path = Path(data)
        if path.suffix != ".npz" or not path.is_file():
            raise FileNotFoundError(f"PANDA D0: expected an .npz file with x, y, group: {path}")
        with np.load(path, allow_pickle=False) as z:
            missing = {"x", "y", "group"} - set(z.files)
            if missing:
                raise KeyError(f"{path} lacks array(s) {sorted(missing)}")
            return MetaData.from_arrays(z["x"], z["y"], z["group"])
    if isinstance(data, dict):
        missing = {"x", "y", "group"} - set(data)
        if missing:
            raise KeyError(f"PANDA D0 mapping lacks key(s) {sorted(missing)}")
        return MetaData.from_arrays(data["x"], data["y"], data["group"])
    if isinstance(data, tuple | list) and len(data) == 3:
        return MetaData.from_arrays(*data)
    raise TypeError(f"PANDA D0: cannot use {type(data).__name__} (MetaData, (x, y, group), "
                    "mapping or .npz path)")


def data_fingerprint(data: MetaData) -> str:
    """A hash of D0's arrays (dtype, shape, bytes): a checkpoint resumes only on the same D0."""
    h = hashlib.sha256()
    for t in (data.x, data.y, data.group):
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of meta-iteration ``step`` (a pure function of ``(seed, step)``)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 17) % 2**63)


def sample_task(n: int, pool_size: int, val_size: int, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
    """Reshuffle D (size ``n``) into disjoint pool ``L`` and validation ``V`` index sets."""
    if pool_size < 1 or val_size < 1 or pool_size + val_size > n:
        raise ValueError(f"cannot split {n} items into pool {pool_size} + validation {val_size}")
    perm = torch.randperm(n, generator=generator)
    return perm[:pool_size], perm[pool_size : pool_size + val_size]


def pretrain_encoder(
    policy: PandaPolicy,
    data: MetaData,
    *,
    steps: int = 200,
    set_size: int = 64,
    lr: float = 1e-3,
    n_classes: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Pretrain ``policy.input`` + ``policy.encoder`` on D0 as a label classifier (module
    docstring): each step, a random set of ``set_size`` items, cross-entropy of a temporary
    linear head on the contextual representations. Returns the loss per step."""
    n_classes = int(data.y.max()) + 1 if n_classes is None else n_classes
    head = nn.Linear(policy.config["d_model"], n_classes)
    gen = step_generator(seed, -1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    head.to(data.x.device)
    params = [*policy.encoder_parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    set_size = min(set_size, len(data))
    losses = []
    policy.train()
    for _ in range(steps):
        idx = torch.randperm(len(data), generator=gen)[:set_size]
        logits = head(policy.encode(data.x[idx]))
        loss = nn.functional.cross_entropy(logits, data.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _flat(params: Iterable[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


#: ``allreduce(tensor, op)`` with ``op`` in ``{"sum", "max"}``: the reduction over data-parallel
#: meta-training workers (returns the reduced tensor; ``None`` = a single worker).
AllReduce = Callable[[Tensor, str], Tensor]


def _reduce(t: Tensor, op: str, allreduce: AllReduce | None) -> Tensor:
    return t if allreduce is None else allreduce(t, op)


def _grads(value: Tensor, params: list[nn.Parameter], allreduce: AllReduce | None) -> list[Tensor]:
    """``d value / d params`` (zeros for unused parameters), summed over workers."""
    grads = torch.autograd.grad(value, params, allow_unused=True) if value.requires_grad \
        else [None] * len(params)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    if allreduce is None:
        return grads
    flat = allreduce(torch.cat([g.reshape(-1) for g in grads]), "sum")
    return [chunk.view_as(p) for chunk, p in
            zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)]


#: largest norm of ``grad chi~`` used by one approximate proximal iteration (module docstring)
PROX_GRAD_NORM = 10.0


def fbs_prox_step(
    params: list[nn.Parameter],
    disparity_fn: Callable[[], Tensor],
    rho: float,
    *,
    weight: float = 1.0,
    steps: int = 10,
    lr: float = 0.5,
    n_tasks: int | None = None,
    allreduce: AllReduce | None = None,
    max_grad_norm: float | None = PROX_GRAD_NORM,
) -> dict[str, Any]:
    """Approximate proximal step of FBS (Algorithm 1, line 5), in place on ``params``.

    Line 5: ``theta^{k+1} = argmin_theta eta chi(theta) + 1/2 ||theta - theta_hat^{k+1}||^2``
    with ``theta_hat^{k+1}`` = the current ``params`` (after the forward step of line 4). As in
    §3.2 the argmin is approximated by gradient descent on a *smoothed* ``chi``: for one task,
    ``chi~ = Delta_V`` when the constraint ``Delta_V < rho`` is violated and ``0`` when it holds
    (the paper's "takes values 0 when the constraint is satisfied, and takes value
    Delta_V(h) otherwise"). For a meta-batch of ``n_tasks`` tasks (Eq. 3's empirical
    expectation over tasks) ``chi~`` is the mean of the per-task values.

    ``disparity_fn()`` returns the differentiable disparity of this worker's task(s): a scalar
    or a vector ``[m]``. For up to ``steps`` iterations: stop as soon as every task satisfies
    the constraint (the paper: "this approximate projection always finds an iterate that
    satisfies the original constraint"; from then on ``grad chi~ = 0`` and further steps would
    only pull back towards ``theta_hat`` into the violated region); otherwise one gradient step
    of size ``lr`` on ``weight * chi~(theta) + 1/2 ||theta - theta_hat||^2``. ``allreduce``
    sums ``grad chi~`` and takes the max of the disparities over data-parallel workers.
    ``max_grad_norm`` clips the (summed) ``grad chi~`` to that norm (``None``: no clipping).

    Returns ``{"initial", "final", "steps", "satisfied", "moved"}``: the largest per-task
    disparity before and after, iterations used, whether every task satisfies the constraint,
    ``||theta - theta_hat||``.
    """
    theta_hat = [p.detach().clone() for p in params]
    initial = final = None
    used = 0
    for _ in range(steps + 1):
        d = disparity_fn().reshape(-1)
        local_max = d.detach().max() if d.numel() else torch.tensor(-math.inf, dtype=d.dtype)
        final = float(_reduce(local_max.clone(), "max", allreduce))
        initial = final if initial is None else initial
        if final < rho or used == steps:
            break
        n = n_tasks if n_tasks is not None else d.numel()
        chi = (d * (d.detach() >= rho).to(d.dtype)).sum() / n  # smoothed indicator, task mean
        g_chi = _grads(chi, params, allreduce)
        if max_grad_norm is not None:
            norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in g_chi)))
            if not math.isfinite(norm):
                raise FloatingPointError(f"non-finite proximal gradient (norm {norm})")
            if norm > max_grad_norm:
                g_chi = [g * (max_grad_norm / norm) for g in g_chi]
        with torch.no_grad():
            for p, h, g in zip(params, theta_hat, g_chi, strict=True):
                p.sub_(lr * (weight * g + (p - h)))  # grad of weight*chi~ + 1/2||p - h||^2
        used += 1
    moved = float((_flat(params) - _flat(theta_hat)).norm())
    return {"initial": initial, "final": final, "steps": used, "satisfied": final < rho,
            "moved": moved}


def _f_score(p_val: Tensor, y: Tensor) -> float:
    """F1 of the positive class of ``1[p_val > 1/2]`` against ``y`` (0 when nothing is
    predicted or present positive)."""
    pred = p_val > 0.5
    tp = float((pred & (y == 1)).sum())
    denom = float(pred.sum() + (y == 1).sum())
    return 2 * tp / denom if denom else 0.0


def task_generator(seed: int, step: int, task: int, tasks_per_step: int) -> torch.Generator:
    """The generator of task ``task`` of meta-iteration ``step`` (``step_generator`` of the
    global task index ``step * tasks_per_step + task``; with one task per step it is
    ``step_generator(seed, step)``)."""
    return step_generator(seed, step * tasks_per_step + task)


def meta_train(
    policy: PandaPolicy,
    data: MetaData,
    *,
    budget: int,
    steps: int,
    pool_size: int = 256,
    val_size: int = 256,
    rho: float = 0.04,
    disparity: str = "dp",
    inner: InnerConfig = InnerConfig(),  # noqa: B008 (frozen dataclass)
    lr: float = 1e-3,
    train_encoder: bool = False,
    prox_weight: float | None = 1.0,
    prox_steps: int = 10,
    prox_lr: float = 0.5,
    seed: int = 0,
    tasks_per_step: int = 1,
    rank: int = 0,
    world_size: int = 1,
    allreduce: AllReduce | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    checkpoint_fn: Callable[[int, PandaPolicy, torch.optim.Optimizer, dict], None] | None = None,
    checkpoint_every: int = 50,
    on_step: Callable[[dict], None] | None = None,
    start_step: int = 0,
    d0_size: int = 0,
    temperature_final: float | None = None,
    sharpness: float | None = None,
) -> list[dict[str, float]]:
    """Algorithm 1 of PANDA on D0 = ``data`` for iterations ``start_step .. steps - 1``.

    Each iteration ``k``: ``tasks_per_step`` tasks (L, V) by :func:`sample_task` (line 3; task
    ``j`` from :func:`task_generator`); forward step (line 4): one ``optimizer`` step (Adam with
    ``lr`` unless given, §4.2) on the mean over the tasks of the validation cross-entropy of
    :func:`simulate` (soft top-``budget`` selection from L, ``inner`` learner); backward step
    (line 5): :func:`fbs_prox_step` on the soft disparity ``DISPARITIES[disparity]`` of the
    same simulations (same tasks, same Gumbel noise) with threshold ``rho``.

    Data parallel: worker ``rank`` of ``world_size`` simulates tasks ``j = rank, rank +
    world_size, ...`` and ``allreduce`` sums the gradients (and takes the max of the
    disparities); every worker then applies the same update, so the result does not depend on
    ``world_size`` (up to float summation order). ``tasks_per_step >= world_size``.

    ``checkpoint_fn(step, policy, optimizer, record)`` runs on every worker after every
    ``checkpoint_every``-th iteration and after the last one (``step`` = iterations completed);
    ``on_step(record)`` after every iteration. To resume, pass the restored optimiser and
    ``start_step``. Returns one record per iteration: ``step``, ``loss`` (task mean, before the
    update), ``disparity`` (soft, task mean) and ``disparity_hard`` (thresholded classifier,
    :mod:`rayfal.fairness.metrics`, task mean), prox diagnostics and ``temperature``.

    Learner and constraint (module docstring, "learning" options): ``d0_size > 0`` draws a D0
    of that many rows of D per task (disjoint from L and V); the simulated learner starts at
    ``h^0 = A(D^0)`` (``inner`` from zero on D0, no gradient) and trains on D0 plus the picks.
    ``temperature_final``: the Gumbel temperature is annealed geometrically from the policy's
    ``init_temperature`` (step 1) to ``temperature_final`` (step ``steps``) instead of being
    learned. ``sharpness``: the constraint is computed and checked on the sharpened
    disparity (:func:`simulate`). Every record also has per-step diagnostics on the same tasks,
    without gradients: the hard Gumbel-top-B picks of the same logits and noise
    (``loss_hard_picks``, ``disparity_hard_picks`` of the thresholded classifier,
    ``f_hard_picks``), B uniformly random picks (``loss_random``, ``disparity_random``,
    ``f_random``), ``soft_hard_gap = loss_hard_picks - loss`` and the forward step's size
    ``forward_moved`` (``||theta_hat^{k+1} - theta^k||``).
    """
    if disparity not in DISPARITIES:
        raise ValueError(f"unknown disparity '{disparity}'; known: {', '.join(DISPARITIES)}")
    if not 1 <= budget <= pool_size:
        raise ValueError(f"budget must be in 1..pool_size ({pool_size}), got {budget}")
    if not 0 <= rank < world_size <= tasks_per_step:
        raise ValueError(f"need 0 <= rank ({rank}) < world_size ({world_size}) <= tasks_per_step "
                         f"({tasks_per_step})")
    if world_size > 1 and allreduce is None:
        raise ValueError("world_size > 1 needs an allreduce function")
    params = [*policy.parameters()] if train_encoder else policy.head_parameters()
    anneal = temperature_final is not None
    if anneal:
        if temperature_final <= 0:
            raise ValueError(f"temperature_final must be > 0, got {temperature_final}")
        params = [p for p in params if p is not policy.log_temperature]
        log_t0 = math.log(float(policy.config["init_temperature"]))
        log_t1 = math.log(float(temperature_final))
    if d0_size < 0 or pool_size + val_size + d0_size > len(data):
        raise ValueError(f"cannot split {len(data)} items into pool {pool_size} + validation "
                         f"{val_size} + D0 {d0_size}")
    if not train_encoder:
        for p in policy.encoder_parameters():
            p.requires_grad_(False)
    opt = optimizer if optimizer is not None else torch.optim.Adam(params, lr=lr)
    hard_metric = {
        "dp": lambda yp, y, g: metrics.panda_demographic_parity(yp, groups=g),
        "eo": lambda yp, y, g: metrics.panda_equalized_odds(y, yp, groups=g),
        "eb": lambda yp, y, g: metrics.error_rate_balance(y, yp, groups=g),
    }[disparity]
    device = data.x.device
    history: list[dict[str, float]] = []
    iterator: Iterable[int] = range(start_step, steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=steps - start_step, desc="PANDA meta-train")
    policy.train()
    try:
        for k in iterator:
            if anneal:
                frac = k / max(1, steps - 1)
                with torch.no_grad():
                    policy.log_temperature.fill_(log_t0 + frac * (log_t1 - log_t0))
            tasks = []
            for j in range(rank, tasks_per_step, world_size):  # line 3: reshuffle D into (L, V)
                gen = task_generator(seed, k, j, tasks_per_step)
                if d0_size:  # the same L, V as sample_task (same permutation), then D0
                    perm = torch.randperm(len(data), generator=gen)
                    li, vi = perm[:pool_size], perm[pool_size:pool_size + val_size]
                    di = perm[pool_size + val_size:pool_size + val_size + d0_size]
                else:
                    li, vi = sample_task(len(data), pool_size, val_size, gen)
                noise = gumbel_noise((pool_size,), generator=gen, dtype=data.x.dtype).to(device)
                rand_idx = torch.randperm(pool_size, generator=gen)[:budget].to(device)
                px = data.x[li]
                d0 = h0 = None
                if d0_size:
                    d0 = (data.x[di], data.y[di])
                    with torch.no_grad():  # h^0 = A(D^0): the same learner, from zero, on D0
                        h0 = inner_fit(d0[0], d0[1], torch.ones(d0_size, dtype=data.x.dtype,
                                                                device=device), inner)
                # frozen encoder: its pool representation is the same for the forward step and
                # every proximal iteration, so compute it once (exact; saves the O(N^2) pass)
                enc = None
                if not train_encoder:
                    with torch.no_grad():
                        enc = policy.encode(px)
                tasks.append((px, data.y[li], data.x[vi], data.y[vi], data.group[vi], noise,
                              enc, d0, h0, rand_idx))

            def run(task, weights=None):
                px, py, vx, vy, vg, noise, enc, d0, h0, _ = task
                kw = {"inner": inner, "disparity": disparity, "init": h0, "d0": d0,
                      "sharpness": sharpness}
                if weights is not None:
                    return simulate(None, px, py, vx, vy, vg, budget, weights=weights, **kw)
                if enc is None:
                    return simulate(policy, px, py, vx, vy, vg, budget, noise=noise, **kw)
                logits = policy.score(enc).squeeze(-1)
                picks = relaxed_top_b_picks(logits, budget, policy.temperature, noise=noise)
                return simulate(None, px, py, vx, vy, vg, budget, weights=picks, **kw)

            def b_hot(idx: Tensor, n: int) -> Tensor:
                w = torch.zeros(n, dtype=data.x.dtype, device=device)
                w[idx] = 1.0
                return w

            # line 4: forward (gradient) step on the validation loss, mean over the tasks
            sims = [run(t) for t in tasks]
            with torch.no_grad():  # the hard Gumbel-top-B of the same logits and noise
                hard_idx = [torch.topk((policy(t[0]) if t[6] is None else
                                        policy.score(t[6]).squeeze(-1)) + t[5], budget).indices
                            for t in tasks]
            loss = torch.stack([s.loss for s in sims]).sum() / tasks_per_step
            grads = _grads(loss, params, allreduce)
            before = _flat(params)
            opt.zero_grad(set_to_none=False)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            forward_moved = float((_flat(params) - before).norm())
            # diagnostics (no gradient): hard Gumbel-top-B picks of the same logits and noise
            # (before the update, like the soft picks) and uniformly random picks
            with torch.no_grad():
                diag = []
                for hi, t in zip(hard_idx, tasks, strict=True):
                    hp = run(t, b_hot(hi, pool_size))
                    rp = run(t, b_hot(t[9], pool_size))
                    diag.append((hp, rp))
            # line 5: backward (proximal) step on the smoothed indicator of the constraint
            eta = opt.param_groups[0]["lr"] if prox_weight is None else prox_weight
            prox = fbs_prox_step(
                params, lambda tasks=tasks: torch.stack([run(t).disparity for t in tasks]), rho,
                weight=eta, steps=prox_steps, lr=prox_lr, n_tasks=tasks_per_step,
                allreduce=allreduce,
            )
            with torch.no_grad():
                def hard_disp(sim: SimResult, t) -> float:
                    return float(hard_metric((sim.p_val > 0.5).long().cpu().numpy(),
                                             t[3].cpu().numpy(), t[4].cpu().numpy()))

                vals = [[float(s_.loss), float(s_.disparity),
                         hard_disp(s_, t), float(hp.loss), hard_disp(hp, t),
                         _f_score(hp.p_val, t[3]), float(rp.loss), hard_disp(rp, t),
                         _f_score(rp.p_val, t[3])]
                        for s_, t, (hp, rp) in zip(sims, tasks, diag, strict=True)]
                sums = torch.tensor(vals, dtype=torch.float64).sum(0)
                sums = _reduce(sums, "sum", allreduce) / tasks_per_step
            record = {
                "step": k + 1,
                "loss": float(sums[0]),
                "disparity": float(sums[1]),
                "disparity_hard": float(sums[2]),
                "loss_hard_picks": float(sums[3]),
                "disparity_hard_picks": float(sums[4]),
                "f_hard_picks": float(sums[5]),
                "loss_random": float(sums[6]),
                "disparity_random": float(sums[7]),
                "f_random": float(sums[8]),
                "soft_hard_gap": float(sums[3] - sums[0]),
                "forward_moved": forward_moved,
                "prox_initial": prox["initial"],
                "prox_final": prox["final"],
                "prox_steps": prox["steps"],
                "prox_satisfied": float(prox["satisfied"]),
                "prox_moved": prox["moved"],
                "temperature": float(policy.temperature.detach()),
            }
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"PANDA meta-training diverged at step {k + 1}: {record}")
            history.append(record)
            if progress and hasattr(iterator, "set_postfix"):
                iterator.set_postfix(loss=f"{record['loss']:.3f}", disp=f"{record['disparity']:.3f}")
            if on_step is not None:
                on_step(record)
            if checkpoint_fn is not None and ((k + 1) % checkpoint_every == 0 or k + 1 == steps):
                checkpoint_fn(k + 1, policy, opt, record)
    finally:
        if not train_encoder:
            for p in policy.encoder_parameters():
                p.requires_grad_(True)
    return history
