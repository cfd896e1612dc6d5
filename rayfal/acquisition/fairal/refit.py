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

* :func:`refit_head` — one refit at a time (the reference path, and FAL's sequential loop);
* :func:`refit_pairs` — every ``(candidate, label)`` refit of a chunk of candidates as one
  tensor program (the same update, the operations only reordered), returning what a caller's
  ``evaluate`` makes of the refitted heads' hard predictions on an evaluation (fairness) set;
* :func:`fit_logistic_head` — a head fitted from zeros (the strategy's starting head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

__all__ = [
    "LogisticHead",
    "RefitConfig",
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


@dataclass(frozen=True)
class RefitConfig:
    """How a refit minimises the L2-penalised mean cross-entropy ``J`` (module docstring).

    ``method="gd"``: ``steps`` full-batch gradient steps of size ``lr``. ``method="newton"``:
    ``steps`` (damped, size ``lr``) Newton steps ``theta <- theta - lr H^{-1} grad J`` on the
    sigmoid head only; :func:`refit_pairs` supports exactly one Newton step (then every refit's
    Hessian is a shared matrix plus a rank-one term, see :func:`_refit_pairs_newton`).
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
    xt = as_tensor(x, dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    binary = (n_labels == 2) if binary is None else binary
    if binary and n_labels != 2:
        raise ValueError(f"a binary (sigmoid) head has 2 labels, got n_labels={n_labels}")
    c_out = 1 if binary else n_labels
    head = LogisticHead(torch.zeros(xt.shape[1], c_out, dtype=dtype), torch.zeros(c_out, dtype=dtype))
    return refit_head(head, xt, yt, RefitConfig(steps=steps, lr=lr, l2=l2))


# --------------------------------------------------------------------------- batched refits

#: ``evaluate(preds) -> values``: hard predictions ``[n_eval, M]`` of ``M`` refitted heads on the
#: evaluation set -> one value per head ``[M]`` (FairAL: the unfairness of each column)
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
    return k * c * (2 * n_labelled + n_eval + 4 * d)


def refit_pairs(head: LogisticHead, x_labelled: Tensor, y_labelled: Tensor, x_chunk: Tensor,
                x_eval: Tensor, cfg: RefitConfig, evaluate: Evaluate) -> Tensor:
    """``evaluate`` of every ``(candidate in x_chunk, label k)`` refit on ``L ∪ {(x, k)}``, as
    ``[m, K]``: the refitted heads' hard predictions on ``x_eval`` are passed to ``evaluate``.

    Same update as :func:`refit_head` (gradient steps, or exactly one Newton step), batched over
    all pairs of the chunk; all tensors share ``x_labelled``'s dtype.
    """
    fn = _refit_pairs_newton if cfg.method == "newton" else _refit_pairs_gd
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
