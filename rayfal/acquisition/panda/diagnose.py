"""Does the meta-trained PANDA policy pick better than random? Held-out tasks from D.

:func:`heldout_diagnostics` draws ``n_tasks`` tasks (pool L, validation V, D0) from D with
generators disjoint from the meta-training tasks' (task indices from ``10**9`` on), picks B
items of L by the policy's hard Gumbel-top-B and B items uniformly at random, and scores both
selections with two learners trained on D0 plus the picks:

* ``sim``: ACTIVELEARNSIM's learner as meta-trained (:func:`~.meta.simulate` with the
  settings' inner learner, warm-started at ``h^0 = A(D^0)`` when ``d0_size > 0``);
* ``campaign``: a replica of the campaign's learner on the linear model (logistic regression
  on the same features, zero init, minibatch Adam, ``lr``, ``batch_size``, ``epochs`` /
  ``min_steps`` as in the job's ``training`` section; seeded).

Each row: task, picks (``policy`` / ``random``), learner, validation cross-entropy, F-score
of the positive class, hard demographic disparity (Table 1) and the share of group 1 among the
picks. Plain torch, no Ray.
"""

from __future__ import annotations

from typing import Any

import torch

from rayfal.acquisition.panda.meta import (
    InnerConfig,
    MetaData,
    _f_score,
    inner_fit,
    simulate,
    task_generator,
)
from rayfal.acquisition.panda.policy import PandaPolicy, gumbel_noise
from rayfal.fairness import metrics

__all__ = ["HELDOUT_TASK_OFFSET", "campaign_learner", "heldout_diagnostics"]

#: held-out tasks use task indices from here on (meta-training uses 0 .. steps * tasks - 1)
HELDOUT_TASK_OFFSET = 10**9


@torch.enable_grad()
def campaign_learner(x: torch.Tensor, y: torch.Tensor, *, lr: float = 0.01, batch_size: int = 32,
                     epochs: int = 30, min_steps: int = 200, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression (2-output linear layer, zero init) trained by minibatch Adam like
    the campaign's linear model: ``max(epochs * ceil(n / batch_size), min_steps)`` steps of
    seeded shuffled minibatches. Returns ``(W [d, 2], b [2])``."""
    gen = torch.Generator().manual_seed(int(seed))
    lin = torch.nn.Linear(x.shape[1], 2)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    n = x.shape[0]
    per_epoch = -(-n // batch_size)
    steps = max(epochs * per_epoch, min_steps)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = torch.nn.functional.cross_entropy(lin(x[idx]), y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return lin.weight.detach().T.contiguous(), lin.bias.detach()


def _score(w: torch.Tensor, b: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor,
           vg: torch.Tensor) -> dict[str, float]:
    logits = vx @ w + b
    p = torch.softmax(logits, -1)[:, 1]
    return {"loss": float(torch.nn.functional.cross_entropy(logits, vy.long())),
            "f_score": _f_score(p, vy),
            "dp_hard": float(metrics.panda_demographic_parity((p > 0.5).long().numpy(),
                                                              groups=vg.numpy()))}


@torch.no_grad()
def heldout_diagnostics(policy: PandaPolicy, data: MetaData, settings: Any, *,
                        n_tasks: int = 8, training: dict[str, Any] | None = None
                        ) -> list[dict[str, Any]]:
    """Rows of the held-out comparison (module docstring). ``settings``: the
    :class:`~rayfal.acquisition.panda.settings.PandaSettings` the policy was trained with
    (budget, pool/val/D0 sizes, inner learner, seed); ``training``: the campaign learner's
    ``lr``, ``batch_size``, ``epochs``, ``min_steps`` (defaults of :func:`campaign_learner`)."""
    inner: InnerConfig = settings.inner()
    training = dict(training or {})
    policy.eval()
    rows = []
    n_pool, n_val, n_d0, budget = (settings.pool_size, settings.val_size, settings.d0_size,
                                   settings.budget)
    for t in range(n_tasks):
        gen = task_generator(settings.seed, 0, HELDOUT_TASK_OFFSET + t, 1)
        perm = torch.randperm(len(data), generator=gen)
        li, vi = perm[:n_pool], perm[n_pool:n_pool + n_val]
        di = perm[n_pool + n_val:n_pool + n_val + n_d0]
        noise = gumbel_noise((n_pool,), generator=gen, dtype=data.x.dtype)
        picks = {"policy": torch.topk(policy(data.x[li]) + noise, budget).indices,
                 "random": torch.randperm(n_pool, generator=gen)[:budget]}
        vx, vy, vg = data.x[vi], data.y[vi], data.group[vi]
        d0 = (data.x[di], data.y[di]) if n_d0 else None
        h0 = inner_fit(d0[0], d0[1], torch.ones(n_d0), inner) if n_d0 else None
        for name, idx in picks.items():
            w = torch.zeros(n_pool)
            w[idx] = 1.0
            sim = simulate(None, data.x[li], data.y[li], vx, vy, vg, budget, inner=inner,
                           weights=w, init=h0, d0=d0)
            share = float(data.group[li][idx].float().mean())
            rows.append({"task": t, "picks": name, "learner": "sim", "group1_share": share,
                         **_score(*sim.classifier, vx, vy, vg)})
            tx = data.x[li][idx] if d0 is None else torch.cat([d0[0], data.x[li][idx]])
            ty = data.y[li][idx] if d0 is None else torch.cat([d0[1], data.y[li][idx]])
            wc, bc = campaign_learner(tx, ty, seed=settings.seed * 1000 + t, **training)
            rows.append({"task": t, "picks": name, "learner": "campaign",
                         "group1_share": share, **_score(wc, bc, vx, vy, vg)})
    return rows
