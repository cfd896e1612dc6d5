"""FairAL's refit: a logistic-regression head on fixed features, refitted per (candidate, label).

Pure torch, no Ray. The "learning algorithm" of FAL is fixed here so that the reference and the
fast paths agree: multinomial (softmax, ``C >= 2`` output columns) or binary (sigmoid, one
output column) logistic regression ``z = x W + b`` minimising ::

    J(W, b) = (1/n) sum_j CE(y_j, link(x_j W + b)) + (l2/2) ||W||_F^2      (bias not penalised)

(``n = |L| + 1`` rows for a refit on ``L ∪ {(x, k)}``) by ``steps`` deterministic full-batch
gradient-descent steps of size ``lr``, warm-started from the current head:
``W <- W - lr (X^T (P - Y) / n + l2 W)``, ``b <- b - lr 1^T (P - Y) / n``
(:class:`RefitConfig`). Option ``method="newton"`` (sigmoid head): damped Newton steps instead;
the batched path supports exactly one, evaluated for all candidates at ``O(|F| D)`` each by
Sherman-Morrison, the Hessian of ``L ∪ {x}`` being the Hessian of ``L`` plus a rank-one term
(:func:`_refit_pairs_newton`).

``method="exact"`` (FairAL as its authors ran it): the sigmoid head refitted *from scratch to
convergence* on liblinear's objective (``C``, penalised intercept, liblinear's stopping rule;
:func:`fit_exact`, batched by inexact Newton with a Sherman-Morrison-preconditioned CG in
:func:`_refit_pairs_exact`), so that sklearn's ``LogisticRegression(solver="liblinear", C=1)``
is its oracle.

* :func:`refit_head` — one refit at a time (the reference path, and FAL's sequential loop);
* :func:`refit_pairs` — every ``(candidate, label)`` refit of a chunk of candidates as one
  tensor program (the same update, the operations only reordered), returning what a caller's
  ``evaluate`` makes of the refitted heads' hard predictions on an evaluation (fairness) set;
* :func:`fit_logistic_head` — a head fitted from zeros (the strategy's starting head).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

__all__ = [
    "METHODS",
    "LogisticHead",
    "RefitConfig",
    "exact_objective",
    "fit_exact",
    "fit_logistic_head",
    "refit_floats_per_candidate",
    "refit_head",
    "refit_pairs",
]


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
        return hard_predictions(self.logits(x))


#: refit methods of :class:`RefitConfig`
METHODS = ("gd", "newton", "exact")


@dataclass(frozen=True)
class RefitConfig:
    """How a refit minimises its logistic loss.

    ``method="gd"``: ``steps`` full-batch gradient steps of size ``lr`` on the L2-penalised mean
    cross-entropy ``J`` (module docstring), warm-started from the current head.
    ``method="newton"``: ``steps`` (damped, size ``lr``) Newton steps
    ``theta <- theta - lr H^{-1} grad J`` on the sigmoid head only; :func:`refit_pairs` supports
    exactly one Newton step (then every refit's Hessian is a shared matrix plus a rank-one term,
    see :func:`_refit_pairs_newton`). One Newton step from a head fitted on ``L`` is the
    classical one-step / influence-function estimate of the refit on ``L ∪ {(x, k)}``. Newton
    needs ``H`` invertible: use ``l2 > 0``.

    ``method="exact"`` (FairAL as its authors ran it, :func:`fit_exact`): the sigmoid head
    refitted *from scratch to convergence* on liblinear's objective
    ``f(theta) = 1/2 ||theta||^2 + C sum_j CE(y_j, sigmoid(x~_j theta))`` (``theta = [w; b]``,
    ``x~ = [x 1]``; the intercept is penalised like liblinear's with ``intercept_scaling=1``
    unless ``penalize_bias=False``), stopped by liblinear's own rule
    ``||grad f(theta)|| <= tol max(min(#pos, #neg), 1) / n ||grad f(0)||``
    (``sklearn.linear_model.LogisticRegression(solver="liblinear", C=C, tol=tol)``: the
    defaults ``C=1``, ``tol=1e-4`` are sklearn's), at most ``max_iter`` Newton iterations.
    ``steps``, ``lr`` and ``l2`` are unused by ``"exact"``; ``C``, ``tol``, ``penalize_bias``
    and ``max_iter`` only by ``"exact"``.
    """

    steps: int = 20
    lr: float = 0.5
    l2: float = 1e-3
    method: str = "gd"
    C: float = 1.0
    tol: float = 1e-4
    penalize_bias: bool = True
    max_iter: int = 100

    def __post_init__(self) -> None:
        if (self.steps < 0 or self.lr <= 0 or self.l2 < 0 or self.method not in METHODS
                or self.C <= 0 or self.tol <= 0 or self.max_iter < 1):
            raise ValueError(f"invalid RefitConfig {self}")


def hard_predictions(z: Tensor) -> Tensor:
    """Hard labels from logits ``[..., C_out]``: ``1[z > 0]`` (one column) or ``argmax``."""
    if z.shape[-1] == 1:
        return (z[..., 0] > 0).long()
    return torch.argmax(z, dim=-1)


def as_tensor(a: ArrayLike | Tensor, dtype: torch.dtype) -> Tensor:
    """``a`` as a detached tensor of ``dtype``."""
    if isinstance(a, Tensor):
        return a.detach().to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


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
    module docstring for ``J``. ``method="exact"``: :func:`fit_exact` from scratch (``head``
    only gives the dtype).
    """
    if cfg.method == "exact":
        return fit_exact(x, y, cfg, dtype=head.weight.dtype)
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
    xt = as_tensor(x, dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    binary = (n_labels == 2) if binary is None else binary
    if binary and n_labels != 2:
        raise ValueError(f"a binary (sigmoid) head has 2 labels, got n_labels={n_labels}")
    c_out = 1 if binary else n_labels
    head = LogisticHead(torch.zeros(xt.shape[1], c_out, dtype=dtype), torch.zeros(c_out, dtype=dtype))
    return refit_head(head, xt, yt, RefitConfig(steps=steps, lr=lr, l2=l2))


# --------------------------------------------------------------------------- exact refits
#
# FairAL as its authors ran it (anahideh/FAL--Fair-Active-Learning, FAL/FAL_sklearn.py, lines
# 19, 38 and 51): every refit is ``LogisticRegression(solver="liblinear")`` (C = 1) fitted from
# scratch on ``L ∪ {(x, k)}``. liblinear minimises (its ``l2r_lr_fun::fun``, intercept as an
# extra constant feature, so it is penalised)
#
#     f(theta) = 1/2 sum_j pen_j theta_j^2 + C sum_i [softplus(z_i) - y_i z_i],  z = X~ theta
#
# by a trust-region Newton method from theta = 0 and stops when
# ||grad f(theta)|| <= eps ||grad f(0)||, eps = tol max(min(#pos, #neg), 1) / n
# (``train_one``: ``primal_solver_tol``; ``TRON::tron``). The minimiser is unique (f strictly
# convex), so where the iterations start changes only how many are needed: the solvers below
# are Newton with a backtracking (Armijo) line search, stopped by the same rule.


def _penalty(d1: int, cfg: RefitConfig, dtype: torch.dtype) -> Tensor:
    pen = torch.ones(d1, dtype=dtype)
    if not cfg.penalize_bias:
        pen[-1] = 0.0
    return pen


def _stop_threshold(y_pos: Tensor, n: int, gnorm0: Tensor, tol: float) -> Tensor:
    """liblinear's stopping threshold ``tol max(min(#pos, #neg), 1) / n ||grad f(0)||``."""
    small = torch.minimum(y_pos, n - y_pos).clamp_min(1.0)
    return tol * small / max(n, 1) * gnorm0


def exact_objective(theta: Tensor, xa: Tensor, y: Tensor, pen: Tensor, c: float) -> Tensor:
    """liblinear's ``f(theta)`` for ``theta`` ``[D+1]`` or ``[D+1, M]`` (one value per column);
    ``xa = [X 1]``, ``y`` in {0, 1}."""
    z = xa @ theta
    yy = y if theta.ndim == 1 else y[:, None]
    loss = torch.nn.functional.softplus(z) - yy * z
    return 0.5 * (pen.reshape(-1, *([1] * (theta.ndim - 1))) * theta * theta).sum(0) + c * loss.sum(0)


def fit_exact(x: ArrayLike | Tensor, y: ArrayLike | Tensor, cfg: RefitConfig, *,
              dtype: torch.dtype = torch.float64, theta0: Tensor | None = None) -> LogisticHead:
    """The binary (one-column sigmoid) head minimising liblinear's ``f`` (section comment above)
    from scratch (``theta = 0``, unless ``theta0`` is given) to liblinear's stopping rule, by
    Newton steps with an explicit ``[D+1, D+1]`` Hessian and a backtracking line search. One fit
    at a time: the reference of :func:`_refit_pairs_exact` and the strategy's starting head.

    ``sklearn.linear_model.LogisticRegression(solver="liblinear", C=cfg.C, tol=cfg.tol)`` fits
    the same ``f`` (to its own, trust-region, iterates); labels must be 0/1.
    """
    xt = as_tensor(x, dtype)
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).to(dtype)
    n, d = xt.shape
    xa = torch.cat([xt, torch.ones(n, 1, dtype=dtype)], dim=1)
    pen = _penalty(d + 1, cfg, dtype)
    c = cfg.C
    theta = torch.zeros(d + 1, dtype=dtype) if theta0 is None else theta0.to(dtype).clone()
    gnorm0 = (c * (xa.T @ (0.5 - yt))).norm()
    thr = _stop_threshold(yt.sum(), n, gnorm0, cfg.tol)
    for _ in range(cfg.max_iter):
        p = torch.sigmoid(xa @ theta)
        g = pen * theta + c * (xa.T @ (p - yt))
        if g.norm() <= thr:
            break
        hess = torch.diag(pen) + c * (xa.T * (p * (1 - p))) @ xa
        step = -torch.linalg.solve(hess, g)
        theta = theta + _armijo(lambda th: exact_objective(th, xa, yt, pen, c), theta, step,
                                (g * step).sum(0)) * step
    else:
        _not_converged(1, cfg)
    return LogisticHead(theta[:d, None].clone(), theta[d:].clone())


def _not_converged(n: int, cfg: RefitConfig) -> None:
    warnings.warn(f"{n} exact logistic refit(s) did not meet liblinear's stopping rule in "
                  f"max_iter={cfg.max_iter} Newton iterations (as sklearn's ConvergenceWarning)",
                  RuntimeWarning, stacklevel=3)


def _armijo(objective: Callable[[Tensor], Tensor], theta: Tensor, step: Tensor, slope: Tensor,
            max_halvings: int = 40) -> Tensor:
    """Step sizes ``t`` (per column) with ``f(theta + t step) <= f(theta) + 1e-4 t slope``
    (halving from 1; a change within rounding of ``f`` is accepted)."""
    f0 = objective(theta)
    t = torch.ones_like(f0)
    for _ in range(max_halvings):
        f1 = objective(theta + t * step)
        bad = f1 > f0 + 1e-4 * t * slope + 1e-13 * f0.abs()
        if not bool(bad.any()):
            break
        t = torch.where(bad, 0.5 * t, t)
    return t


# --------------------------------------------------------------------------- batched refits

#: ``evaluate(preds) -> values``: hard predictions ``[n_eval, M]`` (long, or bool for labels
#: {0, 1}) of ``M`` refitted heads on the evaluation set -> one value per head ``[M]`` (FairAL:
#: the unfairness of each column)
Evaluate = Callable[[Tensor], Tensor]


def refit_floats_per_candidate(cfg: RefitConfig, head: LogisticHead, n_labelled: int,
                               n_eval: int) -> int:
    """Floats one candidate's refits hold in :func:`refit_pairs` (to size chunks):
    ``K C_out (2 |L| + |F| + 4 D)`` for gradient steps (logits/residuals on ``L``, logits on
    the evaluation set, weights and gradients), ``4 |F| + 3 (D + 1)`` for one Newton step."""
    k, c = head.n_labels, head.weight.shape[1]
    d = head.weight.shape[0]
    if cfg.method == "newton":
        return 4 * n_eval + 3 * (d + 1)
    if cfg.method == "exact":
        return 2 * (6 * n_labelled + n_eval + 12 * (d + 1))
    return k * c * (2 * n_labelled + n_eval + 4 * d)


def refit_pairs(head: LogisticHead, x_labelled: Tensor, y_labelled: Tensor, x_chunk: Tensor,
                x_eval: Tensor, cfg: RefitConfig, evaluate: Evaluate) -> Tensor:
    """``evaluate`` of every ``(candidate in x_chunk, label k)`` refit on ``L ∪ {(x, k)}``, as
    ``[m, K]``: the refitted heads' hard predictions on ``x_eval`` are passed to ``evaluate``.

    Same update as :func:`refit_head` (gradient steps, or exactly one Newton step), batched over
    all pairs of the chunk; ``method="exact"``: the same minimiser as :func:`fit_exact`, to the
    same stopping rule (:func:`_refit_pairs_exact`). All tensors share ``x_labelled``'s dtype.
    """
    fn = {"newton": _refit_pairs_newton, "exact": _refit_pairs_exact}.get(cfg.method,
                                                                          _refit_pairs_gd)
    return fn(head, x_labelled, y_labelled, x_chunk, x_eval, cfg, evaluate)


def _refit_pairs_gd(head: LogisticHead, x_l: Tensor, y_l: Tensor, x_chunk: Tensor,
                    x_eval: Tensor, cfg: RefitConfig, evaluate: Evaluate) -> Tensor:
    """Gradient-step refits of all ``M = m K`` pairs together.

    Each refit's data is ``L`` (shared) plus one extra row, so a step is two GEMMs over the
    shared rows, ``[X_L 1] @ [W; b]`` with the parameters of all pairs laid out as
    ``[D + 1, M * C_out]`` and ``[X_L 1]^T @ R`` (the bias gradient is the last row), plus a
    rank-one term per pair for its extra row. Same update as :func:`refit_head` (the operations
    are only reordered).
    """
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
    xty = xa_t @ _targets(y_l, c, dtype)  # [D+1, C]
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
    nf = x_eval.shape[0]
    xf = torch.cat([x_eval, torch.ones(nf, 1, dtype=dtype)], dim=1)
    z_f = (xf @ theta).view(nf, pairs, c)
    return evaluate(hard_predictions(z_f)).reshape(m, k)


def _refit_pairs_newton(head: LogisticHead, x_l: Tensor, y_l: Tensor, x_chunk: Tensor,
                        x_eval: Tensor, cfg: RefitConfig, evaluate: Evaluate) -> Tensor:
    """One damped Newton step (sigmoid head) for every candidate and label, by Sherman-Morrison.

    At the warm start ``theta0`` every refit's Hessian is ``A + (s_e / n') x~ x~^T`` with the
    shared ``A = X~_L^T S X~_L / n' + l2 L`` (``n' = |L| + 1``, ``s_e = p_e (1 - p_e)``) and its
    gradient is ``g0 + c_k x~`` with the shared ``g0 = X~_L^T (p - y) / n' + l2 L theta0`` and
    ``c_k = (p_e - k) / n'``. Hence ``H^{-1} grad = a0 + gamma_k u`` with ``a0 = A^{-1} g0``,
    ``u = A^{-1} x~``, ``beta = (s_e / n') / (1 + (s_e / n') x~^T u)`` and
    ``gamma_k = c_k - beta (x~^T a0 + c_k x~^T u)``; the evaluation-set logits after the step
    are ``X~_F (theta0 - lr a0) - lr gamma_k (X~_F A^{-1}) x~``: ``O(|F| D)`` per candidate.
    """
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
    y = y_l.to(dtype)
    g0 = xa.T @ (p - y) / n_aug + cfg.l2 * pen * theta
    a_mat = (xa.T * (p * (1 - p))) @ xa / n_aug + torch.diag(cfg.l2 * pen)
    a0 = torch.linalg.solve(a_mat, g0)
    xf = torch.cat([x_eval, torch.ones(x_eval.shape[0], 1, dtype=dtype)], dim=1)
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
        out.append(evaluate((z_f > 0).long()))
    return torch.stack(out, dim=1)


def _pcg(hv: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], b: Tensor,
         target: Tensor, max_iter: int) -> Tensor:
    """Preconditioned conjugate gradients for ``H x = b``, one system per column of ``b``
    ``[D+1, M]``; a column stops once its residual norm is ``<= target``."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = precond(r)
    direction = z.clone()
    rz = (r * z).sum(0)
    for _ in range(max_iter):
        active = r.norm(dim=0) > target
        if not bool(active.any()):
            break
        hd = hv(direction)
        curv = (direction * hd).sum(0)
        alpha = torch.where(active, rz / torch.where(active, curv, torch.ones_like(curv)),
                            torch.zeros_like(rz))
        x.add_(alpha * direction)
        r.sub_(alpha * hd)
        z = precond(r)
        rz_new = (r * z).sum(0)
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)),
                           torch.zeros_like(rz))
        direction = z + beta * direction
        rz = rz_new
    return x


def _refit_pairs_exact(head: LogisticHead, x_l: Tensor, y_l: Tensor, x_chunk: Tensor,
                       x_eval: Tensor, cfg: RefitConfig, evaluate: Evaluate) -> Tensor:
    """Every ``(candidate, label)`` refit to liblinear's stopping rule, batched: inexact Newton
    (preconditioned CG inner solves) with a per-pair Armijo line search.

    Pair ``p`` = (candidate ``x_e``, label ``k``) minimises
    ``f_p(theta) = 1/2 sum pen theta^2 + C (sum_{i in L} l(y_i, z_i) + l(k, z_e))``. Its
    gradient ``pen theta + C (X~^T (sigma(X~ theta) - y) + x~_e (sigma(z_e) - k))`` and Hessian
    products ``pen v + C (X~^T (s * X~ v) + s_e x~_e x~_e^T v)`` are GEMMs over all pairs at
    once (``theta`` laid out ``[D+1, M]``). CG is preconditioned by
    ``A0 + C s_e x~_e x~_e^T``, the shared Hessian of the ``L`` part at the start ``theta_L``
    (``A0 = diag(pen) + C X~^T S_L X~``) plus the pair's own rank-one term, applied by
    Sherman-Morrison with ``A0^{-1}`` computed once: ``O(D^2)`` per pair. Iterations start
    from ``head`` (pass :func:`fit_exact` on ``L``: then every refit starts one labelled row away
    from its optimum); the result is the unique minimiser to liblinear's tolerance whatever the
    start, which :func:`fit_exact` from zero reproduces (tests). Converged pairs leave the
    working set.
    """
    if head.weight.shape[1] != 1:
        raise ValueError("method 'exact' supports the binary (one-column sigmoid) head only")
    n, d = x_l.shape
    d1 = d + 1
    dtype = x_l.dtype
    c = cfg.C
    xa = torch.cat([x_l, torch.ones(n, 1, dtype=dtype)], dim=1)
    xa_t = xa.T.contiguous()
    y = y_l.to(dtype)
    m = x_chunk.shape[0]
    xe_all = torch.cat([x_chunk, torch.ones(m, 1, dtype=dtype)], dim=1).repeat_interleave(2, 0)
    xe_all_t = xe_all.T.contiguous()  # [D+1, M]: pair 2i + k is candidate i with label k
    k_all = torch.arange(2, dtype=dtype).repeat(m)
    pen = _penalty(d1, cfg, dtype)[:, None]
    # liblinear's stopping threshold per pair, from the gradient at theta = 0
    g_zero = c * ((xa_t @ (0.5 - y))[:, None] + xe_all_t * (0.5 - k_all))
    thr = _stop_threshold(y.sum() + k_all, n + 1, g_zero.norm(dim=0), cfg.tol)
    theta_l = torch.cat([head.weight[:, 0], head.bias])
    theta = theta_l[:, None].repeat(1, 2 * m).contiguous()
    p_l = torch.sigmoid(xa @ theta_l)
    a0 = torch.diag(pen[:, 0]) + c * (xa_t * (p_l * (1 - p_l))) @ xa
    a0_inv = torch.cholesky_inverse(torch.linalg.cholesky(a0))
    u_all = a0_inv @ xe_all_t  # A0^{-1} x~_e
    q_all = (xe_all_t * u_all).sum(0)  # x~_e^T A0^{-1} x~_e
    idx = torch.arange(2 * m)
    for _ in range(cfg.max_iter):
        th, xe_t, k = theta[:, idx], xe_all_t[:, idx], k_all[idx]
        p = torch.sigmoid(xa @ th)
        pe = torch.sigmoid((xe_t * th).sum(0))
        g = pen * th + c * (xa_t @ (p - y[:, None]) + xe_t * (pe - k))
        gn = g.norm(dim=0)
        keep = gn > thr[idx]
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx, th, xe_t, k = idx[keep], th[:, keep], xe_t[:, keep], k[keep]
            p, pe, g, gn = p[:, keep], pe[keep], g[:, keep], gn[keep]
        s = p * (1 - p)
        cs_e = c * pe * (1 - pe)
        u, q = u_all[:, idx], q_all[idx]

        def hv(v: Tensor, s=s, cs_e=cs_e, xe_t=xe_t) -> Tensor:
            return pen * v + c * (xa_t @ (s * (xa @ v))) + xe_t * (cs_e * (xe_t * v).sum(0))

        def precond(r: Tensor, cs_e=cs_e, xe_t=xe_t, u=u, q=q) -> Tensor:
            w = a0_inv @ r
            return w - u * (cs_e * (xe_t * w).sum(0) / (1.0 + cs_e * q))

        # inexact Newton: relative CG residual min(0.1, sqrt(||g|| / ||g(0)||))
        eta = torch.sqrt(gn / g_zero[:, idx].norm(dim=0)).clamp_max(0.1)
        step = _pcg(hv, precond, -g, eta * gn, max_iter=2 * d1)

        def objective(t_: Tensor, xe_t=xe_t, k=k) -> Tensor:
            ze = (xe_t * t_).sum(0)
            extra = torch.nn.functional.softplus(ze) - k * ze
            return exact_objective(t_, xa, y, pen[:, 0], c) + c * extra

        theta[:, idx] = th + _armijo(objective, th, step, (g * step).sum(0)) * step
    else:
        _not_converged(len(idx), cfg)
    nf = x_eval.shape[0]
    xf = torch.cat([x_eval, torch.ones(nf, 1, dtype=dtype)], dim=1)
    return evaluate(xf @ theta > 0).reshape(m, 2)  # bool hard labels: 1[z > 0]
