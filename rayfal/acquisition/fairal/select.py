"""FairAL's selection: :func:`fairal_select` in modes ``batch``, ``nested`` and ``sequential``.

Pure torch + numpy, no Ray: candidates are given as feature rows and picked by position.

The authors' algorithm (anahideh/FAL--Fair-Active-Learning, FAL/FAL_sklearn.py; the FAL paper,
Anahideh, Asudeh & Thirumuruganathan 2022, is not among ``../shared/papers``, so their public
code is the specification cited here by file and line) is ``mode="sequential"`` with
``refit=RefitConfig(method="exact")``:

1. fit ``clf`` on ``L`` (line 19; sklearn ``LogisticRegression(solver="liblinear")``, C = 1);
2. for ``Iter = 0 .. b-1`` (line 21): ``a = alpha[min(10, floor(Iter / int(b / 11)))]``
   (line 25; :func:`~.scores.resolve_alpha` with ``levels``); entropy ``e`` of ``clf`` on U
   (lines 31-32); for every ``x`` in U and ``k`` in {0, 1} refit from scratch on
   ``L ∪ {(x, k)}`` and measure the unfairness of its predictions on the fairness set
   ``Cset`` (lines 33-40; ``Cset`` is a copy of U, FAL/prep.py lines 58-61);
   ``E(x) = p(0|x) F_0 + p(1|x) F_1`` (lines 41-42);
3. ``score = a minmax(e) + (1 - a) (max E - E) / (max E - min E)`` (lines 43-46,
   :func:`~.scores.combine_scores`); label the argmax (line 47), add it to ``L``, refit ``clf``
   from scratch (lines 48-51), remove it from U (lines 52-54).

Engines (``engine=``): ``"fast"`` (:func:`~.scores.fairal_fast`, all refits of a chunk as one
tensor program), ``"reference"`` (:func:`~.scores.fairal_reference`, one refit at a time in
torch: the project's own loop) and ``"sklearn"`` (:func:`~.scores.fairal_sklearn`, liblinear
per refit: the authors' code path, the oracle of ``method="exact"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from rayfal.acquisition.fairal.refit import LogisticHead, RefitConfig, as_tensor, refit_head
from rayfal.acquisition.fairal.scores import (
    Alpha,
    FairALScores,
    entropy,
    fairal_fast,
    fairal_reference,
    fairal_sklearn,
    resolve_alpha,
)

__all__ = ["ENGINES", "MODES", "SEQUENTIAL_RULES", "fairal_select"]

#: how the per-candidate refits are computed: batched (fast), one at a time (reference), or by
#: sklearn's liblinear one at a time (sklearn; ``method="exact"`` only)
ENGINES = {"fast": fairal_fast, "reference": fairal_reference, "sklearn": fairal_sklearn}
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
    score_fn: Callable[..., FairALScores] | None = None,
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
      ``oracle(index) -> label``, add it to ``L`` and refit the head on the new ``L`` (the same
      :class:`~.refit.RefitConfig`: warm start, or from scratch for ``method="exact"``). Needs
      ``oracle``. With ``method="exact"`` this is the authors' loop (module docstring).

    ``alpha`` is resolved once per call at ``round`` of ``n_rounds``
    (:func:`~.scores.resolve_alpha`); in ``"sequential"`` mode all picks of the call share it,
    unless ``alpha`` is a schedule with ``"per": "label"`` (the authors' per-label staircase,
    FAL/FAL_sklearn.py line 25): then pick ``j`` of the call is label ``round * budget + j`` of
    ``n_rounds * budget`` (``budget`` as requested; the batch and nested modes use the round's
    first label). With ``refit.method == "exact"`` the head is refitted from scratch after each
    label (:func:`~.refit.fit_exact`; FAL/FAL_sklearn.py line 51), else warm-started.
    Ties go to the lower index (the authors' ``np.argsort(.)[::-1][0]`` takes an arbitrary one).
    ``engine``: ``"fast"`` (:func:`~.scores.fairal_fast`), ``"reference"``
    (:func:`~.scores.fairal_reference`) or ``"sklearn"`` (:func:`~.scores.fairal_sklearn`);
    ``engine_kwargs`` go to it. ``score_fn`` replaces the engine's function by another with
    :func:`~.scores.fairal_fast`'s signature and results (the campaign passes
    :func:`rayfal.scoring.fairal_refits.fairal_fast_ray`, the same refits on a Ray Data actor
    pool, when the job's ``scoring`` section asks for Ray compute).
    """
    if mode not in MODES:
        raise ValueError(f"unknown FairAL mode '{mode}'; known: {', '.join(MODES)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown FairAL engine '{engine}'; known: {', '.join(ENGINES)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    budget_asked = budget
    per_label = isinstance(alpha, Mapping) and alpha.get("per", "round") == "label"

    def alpha_at(j: int) -> float:
        if per_label:
            return resolve_alpha(alpha, round * budget_asked + j, n_rounds * budget_asked)
        return resolve_alpha(alpha, round, n_rounds)

    a = alpha_at(0)
    score_fn = score_fn if score_fn is not None else ENGINES[engine]
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
    for j in range(budget):
        a = alpha_at(j)
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
