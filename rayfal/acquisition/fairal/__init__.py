"""Fair Active Learning (FAL / "FairAL"; Anahideh, Asudeh & Thirumuruganathan 2022).

Pure maths (torch + numpy) plus the whole-pool strategy, no Ray. The method, as described in
PANDA (Sharaf et al. 2022, §2 and §4.1) and JIN (Wu et al. 2023, §Related work and Table 2):
score each candidate ``x`` by the current model's entropy and by the *expected unfairness*
``E(x) = sum_k p(k|x) F_k(x)``, ``F_k(x)`` being the unfairness on a fixed fairness set of the
classifier refitted on ``L ∪ {(x, k)}``; query the best combined scores.

JIN's Table 2 reports FairAL as the most expensive selector (a refit per candidate and label);
here the refit is a logistic-regression *head* on fixed features, which makes the per-candidate
refits cheap and, above all, batchable.

Sources: the FAL paper itself is not among the provided texts (``../shared/papers``: PANDA §2
and §4.1 and JIN only describe it); the authors' public code (github.com/anahideh/
FAL--Fair-Active-Learning, ``FAL/FAL_sklearn.py``, ``FAL/prep.py``, ``FAL/test_FAL.py``,
``FAL/demo_funcs.py``) is the specification of what they ran, cited by file and line in
:mod:`.select` and :mod:`.strategy`. It confirms this package's score (min-max scaled entropy
and ``(max E - E) / (max E - min E)``, FAL_sklearn.py lines 43-46), ``E = sum_k p(k|x) F_k``
on hard predictions (lines 39-42) and the measures (``mi`` = their ``demo_option=0``, ``dp`` =
option 1, ``eo`` = their ``Eqq_odds``). PANDA's experiments use ``alpha = 0.6`` (§4.3).

Two protocols (:class:`FairALParams` ``protocol``):

* ``rayfal`` (default): a logistic head on the model's embeddings, refits warm-started with a
  fixed number of gradient steps, a labelled fairness set, batch selection — affordable at pool
  scale;
* ``faithful``: FAL as its authors ran it — sequential (one label, then a refit), every refit an
  L2 logistic regression *from scratch to convergence* on liblinear's ``C = 1`` objective
  (``RefitConfig(method="exact")``: :func:`~.refit.fit_exact`, batched in
  :func:`~.refit.refit_pairs`), U as the fairness set, the sensitive attribute dropped from the
  features, alpha their 11-level staircase from 1 to 0 over the labels. ``engine: sklearn``
  refits with sklearn's ``LogisticRegression(solver="liblinear", C=1)`` itself (the oracle).

Modules, one role each (each imports only the ones before it):

* :mod:`.refit` — the refit target and learner: :class:`LogisticHead`, :class:`RefitConfig`,
  :func:`fit_logistic_head`, :func:`fit_exact` (liblinear's objective from scratch to its
  tolerance), :func:`refit_head` (one refit: the reference) and
  :func:`~.refit.refit_pairs` (every (candidate, label) refit of a chunk as one tensor program);
* :mod:`.scores` — unfairness measures ``dp|eo|mi`` (:func:`unfairness`,
  :func:`unfairness_batched`), the expected unfairness and combined scores
  (:func:`fairal_reference`, :func:`fairal_fast`, :func:`fairal_sklearn`,
  :func:`combine_scores`, :class:`FairALScores`) and the alpha schedule (:func:`resolve_alpha`);
* :mod:`.select` — :func:`fairal_select`, modes ``batch``, ``nested`` and ``sequential``;
* :mod:`.strategy` — :class:`FairALStrategy`, registered as ``"fairal"``, with its job-file
  parameters :class:`FairALParams` (:data:`FAITHFUL_DEFAULTS`, :func:`sensitive_columns`).
"""

from rayfal.acquisition.fairal.refit import (
    LogisticHead,
    RefitConfig,
    fit_exact,
    fit_logistic_head,
    refit_head,
)
from rayfal.acquisition.fairal.scores import (
    MEASURES,
    Alpha,
    FairALScores,
    combine_scores,
    fairal_fast,
    fairal_reference,
    fairal_sklearn,
    resolve_alpha,
    unfairness,
    unfairness_batched,
)
from rayfal.acquisition.fairal.select import fairal_select
from rayfal.acquisition.fairal.strategy import (
    FAITHFUL_DEFAULTS,
    AlphaSchedule,
    FairALParams,
    FairALStrategy,
    sensitive_columns,
)

__all__ = [
    "FAITHFUL_DEFAULTS",
    "MEASURES",
    "Alpha",
    "AlphaSchedule",
    "FairALParams",
    "FairALScores",
    "FairALStrategy",
    "LogisticHead",
    "RefitConfig",
    "combine_scores",
    "fairal_fast",
    "fairal_reference",
    "fairal_select",
    "fairal_sklearn",
    "fit_exact",
    "fit_logistic_head",
    "refit_head",
    "resolve_alpha",
    "sensitive_columns",
    "unfairness",
    "unfairness_batched",
]
