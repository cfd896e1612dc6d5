"""FairAL's selection: :func:`fairal_select` in modes ``batch``, ``nested`` and ``sequential``.

Pure torch + numpy, no Ray: candidates are given as feature rows and picked by position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from rayfal.acquisition.fairal.refit import LogisticHead, RefitConfig, as_tensor, refit_head
from rayfal.acquisition.fairal.scores import (
    Alpha,
    entropy,
    fairal_fast,
    fairal_reference,
    resolve_alpha,
)

__all__ = ["ENGINES", "MODES", "SEQUENTIAL_RULES", "fairal_select"]

#: how the per-candidate refits are computed: batched (fast) or one at a time (reference)
ENGINES = {"fast": fairal_fast, "reference": fairal_reference}
MODES = ("batch", "nested", "sequential")
SEQUENTIAL_RULES = ("combined", "nested")


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
      the same :class:`~.refit.RefitConfig`). Needs ``oracle``.

    ``alpha`` is resolved once per call at ``round`` of ``n_rounds``
    (:func:`~.scores.resolve_alpha`); in ``"sequential"`` mode all picks of the call share it.
    Ties go to the lower index. ``engine``: ``"fast"`` (:func:`~.scores.fairal_fast`) or
    ``"reference"`` (:func:`~.scores.fairal_reference`); ``engine_kwargs`` go to it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown FairAL mode '{mode}'; known: {', '.join(MODES)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown FairAL engine '{engine}'; known: {', '.join(ENGINES)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    a = resolve_alpha(alpha, round, n_rounds)
    score_fn = ENGINES[engine]
    kwargs = dict(y_fair=y_fair, measure=measure, refit=refit, dtype=dtype, **engine_kwargs)
    x_c = as_tensor(x_cand, dtype)
    n_cand = x_c.shape[0]
    budget = min(budget, n_cand)
    if budget == 0:
        return np.zeros(0, np.int64)

    def pick_nested(h: LogisticHead, xl, yl, idx: np.ndarray, b: int) -> np.ndarray:
        k_top = nested_k if nested_k is not None else 10 * b
        k_top = min(max(k_top, b), len(idx))
        ent = entropy(h.to(dtype).probs(x_c[idx]))
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
    if sequential_rule not in SEQUENTIAL_RULES:
        raise ValueError(f"sequential_rule must be 'combined' or 'nested', got '{sequential_rule}'")
    h = head.to(dtype)
    xl = as_tensor(x_labelled, dtype)
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
