"""PANDA's selection policy ``pi`` (Sharaf, Daumé III & Ni, FAccT 2022, §3.3) and its sampling.

* :class:`PandaPolicy`: a Transformer encoder over the pool items as an *unordered* set (no
  positional encoding, footnote 1), then a linear layer to one logit per item (the "final
  linear softmax layer" giving ``Q``). Its Gumbel temperature is a parameter
  (``log_temperature``) learned during meta-training (§4.2: "the initial value for the
  Gumbel-Softmax temperature ... is then learned adaptively").
* :func:`gumbel_top_b`, hard Gumbel-top-B (Kool et al. 2019; Vieira 2014), §3.3: perturb the
  logits with i.i.d. Gumbel(0) noise and take the B largest, a sample of B distinct items
  without replacement from ``Q = softmax(logits)``. Because the policy is agnostic to the
  current classifier (§3.3), the B picks of ACTIVELEARNSIM (Algorithm 1, lines 10-11) are made
  in a single step.
* :func:`relaxed_top_b` / :func:`relaxed_top_b_picks`, the differentiable relaxation used
  during meta-training (:mod:`rayfal.acquisition.panda.meta`). The paper does not spell it out
  beyond "Gumbel-Softmax reparameterization" + Gumbel-top-B; we use the successive-softmax
  relaxation of the top-B (Plötz & Roth 2018; Xie & Ermon 2019): with perturbed logits
  ``s = logits + G``, for ``j = 1..B``: ``a_j = softmax(s / tau)``, ``s <- s + log(1 - a_j)``;
  the soft B-hot weights are ``w = sum_j a_j`` (``w >= 0``, ``sum w = B``), which tend to the
  hard Gumbel-top-B indicator as ``tau -> 0``. (At high temperature an item's weight can
  exceed 1, the masks ``log(1 - a_j) / tau`` being weak; the learner normalises by
  ``sum w = B`` either way.)
* :func:`select`: test-time selection in one forward pass (hard top-B or a seeded
  Gumbel-top-B sample).
* :func:`save_policy` / :func:`load_policy`: safetensors + JSON (no pickle).

Attention over the whole pool costs ``O(N^2)`` time per layer and head (memory ``O(N)`` with
the memory-efficient attention kernel :meth:`PandaPolicy.encode` forces): a 10k-row pool is one
forward pass of a few seconds on one CPU thread (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

__all__ = [
    "PICK_GRAD_BOUND",
    "POLICY_META",
    "POLICY_WEIGHTS",
    "PandaPolicy",
    "gumbel_noise",
    "gumbel_top_b",
    "load_policy",
    "relaxed_top_b",
    "relaxed_top_b_picks",
    "save_policy",
    "select",
]

POLICY_WEIGHTS = "policy.safetensors"
POLICY_META = "policy.json"


# --------------------------------------------------------------------------- the policy


class PandaPolicy(nn.Module):
    """``pi``: input projection, Transformer encoder without positional encoding, linear
    layer to one logit per item (§3.3, §4.2); plus the learnable Gumbel temperature.

    ``forward(x)`` maps ``[N, in_dim]`` (one pool) or ``[T, N, in_dim]`` (T pools) to logits
    ``[N]`` / ``[T, N]``; permuting the items permutes the logits (no positions). ``config``
    is JSON-able and rebuilds the module (:func:`load_policy`).
    """

    def __init__(
        self,
        in_dim: int,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 1,
        dim_feedforward: int = 64,
        dropout: float = 0.0,
        init_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.config: dict[str, Any] = {
            "in_dim": int(in_dim),
            "d_model": int(d_model),
            "n_heads": int(n_heads),
            "n_layers": int(n_layers),
            "dim_feedforward": int(dim_feedforward),
            "dropout": float(dropout),
            "init_temperature": float(init_temperature),
        }
        self.input = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.score = nn.Linear(d_model, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def encode(self, x: Tensor) -> Tensor:
        """Contextual item representations ``[..., N, d_model]`` (the context is the pool).

        PyTorch's inference "fast path" of ``nn.TransformerEncoderLayer`` materialises the
        ``N x N`` attention matrices (10k items: ~2 GB, 10 s here); it is switched off during
        this call so attention goes through ``scaled_dot_product_attention``'s
        memory-efficient kernel (~0.6 GB, 4 s; same logits to ~1e-6)."""
        squeeze = x.ndim == 2
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            h = self.encoder(self.input(x[None] if squeeze else x))
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        return h[0] if squeeze else h

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.encode(x)).squeeze(-1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.input.parameters(), *self.encoder.parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        """The final layer and the temperature (what meta-training tunes by default)."""
        return [*self.score.parameters(), self.log_temperature]


def save_policy(directory: str | Path, policy: PandaPolicy, extra: dict | None = None) -> Path:
    """Write ``policy.safetensors`` (state_dict) + ``policy.json`` (config + ``extra``)."""
    from rayfal.models.checkpoint import state_dict_cpu, write_weights_and_meta

    return write_weights_and_meta(
        directory, state_dict_cpu(policy), {"config": policy.config, **(extra or {})},
        weights_name=POLICY_WEIGHTS, meta_name=POLICY_META,
    )


def load_policy(directory: str | Path) -> tuple[PandaPolicy, dict]:
    """Rebuild a policy saved by :func:`save_policy`; returns ``(policy in eval mode, meta)``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (POLICY_WEIGHTS, POLICY_META):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"policy checkpoint {directory} has no {name}")
    meta = json.loads((directory / POLICY_META).read_text())
    cfg = dict(meta["config"])
    policy = PandaPolicy(cfg.pop("in_dim"), **cfg)
    policy.load_state_dict(load_file(str(directory / POLICY_WEIGHTS)))
    return policy.eval(), meta


# --------------------------------------------------------------------------- Gumbel top-B


def gumbel_noise(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """I.i.d. standard Gumbel(0) samples ``-log(-log U)``, ``U ~ Uniform(0, 1)``."""
    u = torch.rand(shape, generator=generator, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - torch.finfo(dtype).eps)))


def gumbel_top_b(logits: Tensor, b: int, *, generator: torch.Generator | None = None,
                 noise: Tensor | None = None) -> Tensor:
    """Indices of the ``b`` largest ``logits + G`` (Gumbel-top-B; Kool et al. 2019): ``b``
    distinct items sampled without replacement from ``softmax(logits)``. Over the last axis."""
    n = logits.shape[-1]
    if not 0 <= b <= n:
        raise ValueError(f"cannot pick {b} of {n} items")
    if noise is None:
        noise = gumbel_noise(logits.shape, generator=generator, dtype=logits.dtype)
    return torch.topk(logits + noise, b, dim=-1).indices


#: bound on the gradient reaching each soft pick of :func:`relaxed_top_b_picks`. Near a hard
#: pick (small temperature) the mask term's derivative ``1/(1 - a_j)`` compounds over the ``B``
#: picks and overflows float32 (inf, then ``0 * inf = nan`` in the softmax backward); values
#: this large carry no direction Adam could use, so they are clipped (and nan/inf mapped to it).
PICK_GRAD_BOUND = 1e12


def _bounded_grad(grad: Tensor) -> Tensor:
    return torch.nan_to_num(grad, nan=0.0, posinf=PICK_GRAD_BOUND,
                            neginf=-PICK_GRAD_BOUND).clamp(-PICK_GRAD_BOUND, PICK_GRAD_BOUND)


def relaxed_top_b_picks(logits: Tensor, b: int, temperature: Tensor | float, *,
                        noise: Tensor | None = None, generator: torch.Generator | None = None,
                        eps: float = 1e-20) -> Tensor:
    """The ``b`` successive soft picks ``a_1..a_b`` (module docstring), stacked ``[..., b, N]``:
    ``a_j = softmax(s_j / tau)``, ``s_1 = logits + G``, ``s_{j+1} = s_j + log(max(1 - a_j,
    eps))``. Row ``j`` relaxes the one-hot ``j``-th pick of Gumbel-top-B (Algorithm 1, line 11).
    Differentiable w.r.t. ``logits`` and ``tau``."""
    n = logits.shape[-1]
    if not 0 <= b <= n:
        raise ValueError(f"cannot pick {b} of {n} items")
    if noise is None:
        noise = gumbel_noise(logits.shape, generator=generator, dtype=logits.dtype)
    s = logits + noise.to(logits.device)
    a = torch.zeros_like(s)
    picks = []
    for _ in range(b):
        s = s + torch.log((1.0 - a).clamp_min(eps))
        a = torch.softmax(s / temperature, dim=-1)
        if a.requires_grad:  # at small tau, d log(1 - a) / da ~ 1/(1 - a) compounds over picks
            a.register_hook(_bounded_grad)
        picks.append(a)
    return torch.stack(picks, dim=-2) if picks else s.new_zeros((*s.shape[:-1], 0, n))


def relaxed_top_b(logits: Tensor, b: int, temperature: Tensor | float, *,
                  noise: Tensor | None = None, generator: torch.Generator | None = None,
                  eps: float = 1e-20) -> Tensor:
    """Soft B-hot weights by successive softmax (module docstring) over the last axis:
    ``w = sum_{j<=b} a_j`` of :func:`relaxed_top_b_picks`. Differentiable w.r.t. ``logits``
    and ``tau``."""
    return relaxed_top_b_picks(logits, b, temperature, noise=noise, generator=generator,
                               eps=eps).sum(-2)


# --------------------------------------------------------------------------- test time


@torch.no_grad()
def select(policy: PandaPolicy, pool_features: ArrayLike | Tensor, budget: int, *,
           seed: int | None = None) -> np.ndarray:
    """Pick ``min(budget, N)`` pool positions in one forward pass of the policy (§4.3: "a
    single forward pass through the selection policy").

    ``seed=None``: the hard top-B of the logits (the mode of Gumbel-top-B); an int: a
    Gumbel-top-B sample with that seed (deterministic), which is what §4.2 describes ("we
    sample B items from the predicted probability distribution in a single decoding step") and
    what the policy was meta-trained to produce. Returned in decreasing (perturbed) logit
    order.
    """
    x = torch.as_tensor(np.asarray(pool_features) if not isinstance(pool_features, Tensor)
                        else pool_features, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != policy.config["in_dim"]:
        raise ValueError(f"pool_features must be [N, {policy.config['in_dim']}], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("pool_features contain NaN/inf")
    budget = min(int(budget), x.shape[0])
    if budget <= 0:
        return np.zeros(0, np.int64)
    was_training = policy.training
    policy.eval()
    try:
        ref = next(policy.parameters())
        logits = policy(x.to(device=ref.device, dtype=ref.dtype)).cpu()
    finally:
        policy.train(was_training)
    if seed is None:
        idx = torch.topk(logits, budget).indices
    else:
        gen = torch.Generator().manual_seed(int(seed))
        idx = gumbel_top_b(logits, budget, generator=gen)
    return idx.numpy().astype(np.int64)
