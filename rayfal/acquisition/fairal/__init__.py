"""Fair Active Learning (FAL / "FairAL"; Anahideh, Asudeh & Thirumuruganathan 2022).

Pure maths (torch + numpy) plus the whole-pool strategy, no Ray. The method, as described in
PANDA (Sharaf et al. 2022, §2 and §4.1) and JIN (Wu et al. 2023, §Related work and Table 2):
score each candidate ``x`` by the current model's entropy and by the *expected unfairness*
``E(x) = sum_k p(k|x) F_k(x)``, ``F_k(x)`` being the unfairness on a fixed fairness set of the
classifier refitted on ``L ∪ {(x, k)}``; query the best combined scores.

JIN's Table 2 reports FairAL as the most expensive selector (a refit per candidate and label);
here the refit is a logistic-regression *head* on fixed features, which makes the per-candidate
refits cheap and, above all, batchable.

Where the sources are open: the original FAL paper is not among the provided texts (PANDA §2
and §4.1 and JIN only describe it), so the score normalisation, the hard-prediction measures
and the refit learner are this package's documented choices; PANDA's experiments use
``alpha = 0.6`` (§4.3).

Modules, one role each (each imports only the ones before it):

* :mod:`.refit` — the refit target and learner: :class:`LogisticHead`, :class:`RefitConfig`,
  :func:`fit_logistic_head`, :func:`refit_head` (one refit: the reference) and
  :func:`~.refit.refit_pairs` (every (candidate, label) refit of a chunk as one tensor program);
* :mod:`.scores` — unfairness measures ``dp|eo|mi`` (:func:`unfairness`,
  :func:`unfairness_batched`), the expected unfairness and combined scores
  (:func:`fairal_reference`, :func:`fairal_fast`, :func:`combine_scores`,
  :class:`FairALScores`) and the alpha schedule (:func:`resolve_alpha`);
* :mod:`.select` — :func:`fairal_select`, modes ``batch``, ``nested`` and ``sequential``;
* :mod:`.strategy` — :class:`FairALStrategy`, registered as ``"fairal"``, with its job-file
  parameters :class:`FairALParams`.
"""

from rayfal.acquisition.fairal.refit import (
    LogisticHead,
    RefitConfig,
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
    resolve_alpha,
    unfairness,
    unfairness_batched,
)
from rayfal.acquisition.fairal.select import fairal_select
from rayfal.acquisition.fairal.strategy import AlphaSchedule, FairALParams, FairALStrategy

__all__ = [
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
    "fit_logistic_head",
    "refit_head",
    "resolve_alpha",
    "unfairness",
    "unfairness_batched",
]
