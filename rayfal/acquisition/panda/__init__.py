"""PANDA: parity-constrained meta active learning (Sharaf, Daumé III & Ni, FAccT 2022).

* :mod:`~rayfal.acquisition.panda.policy` — the Transformer policy ``pi``, Gumbel-top-B, the
  relaxed top-B, test-time :func:`select`, :func:`save_policy` / :func:`load_policy`;
* :mod:`~rayfal.acquisition.panda.meta` — ACTIVELEARNSIM, the Table-1 disparity surrogates,
  pretraining and FBS meta-training (Algorithm 1), plain torch, no Ray;
* :mod:`~rayfal.acquisition.panda.settings` — :class:`PandaSettings` (pydantic);
* :mod:`~rayfal.acquisition.panda.checkpoint` — meta-training checkpoints (safetensors + JSON);
* :mod:`~rayfal.acquisition.panda.train` — :func:`train_policy`, the Ray Train edge;
* :mod:`~rayfal.acquisition.panda.strategy` — the ``panda`` whole-pool strategy (registered on
  import), :func:`policy_dir_name`;
* :mod:`~rayfal.acquisition.panda.diagnose` — policy vs random picks on held-out tasks;
* :mod:`~rayfal.acquisition.panda.cli_entry` — the body of ``rayfal panda-train``.
"""

from rayfal.acquisition.panda.checkpoint import latest_checkpoint
from rayfal.acquisition.panda.meta import (
    DISPARITIES,
    InnerConfig,
    MetaData,
    SimResult,
    as_metadata,
    fbs_prox_step,
    hard_picks,
    inner_fit,
    meta_train,
    pretrain_encoder,
    sample_task,
    simulate,
    soft_demographic_parity,
    soft_equalized_odds,
    soft_error_rate_balance,
    step_generator,
    task_generator,
)
from rayfal.acquisition.panda.policy import (
    POLICY_META,
    POLICY_WEIGHTS,
    PandaPolicy,
    gumbel_noise,
    gumbel_top_b,
    load_policy,
    relaxed_top_b,
    relaxed_top_b_picks,
    save_policy,
    select,
)
from rayfal.acquisition.panda.settings import PandaSettings
from rayfal.acquisition.panda.strategy import (
    PANDA_DEFAULTS,
    PandaParams,
    PandaStrategy,
    policy_dir_name,
)
from rayfal.acquisition.panda.train import train_policy

__all__ = [
    "DISPARITIES",
    "PANDA_DEFAULTS",
    "POLICY_META",
    "POLICY_WEIGHTS",
    "InnerConfig",
    "MetaData",
    "PandaParams",
    "PandaPolicy",
    "PandaSettings",
    "PandaStrategy",
    "SimResult",
    "as_metadata",
    "fbs_prox_step",
    "gumbel_noise",
    "gumbel_top_b",
    "hard_picks",
    "inner_fit",
    "latest_checkpoint",
    "load_policy",
    "meta_train",
    "policy_dir_name",
    "pretrain_encoder",
    "relaxed_top_b",
    "relaxed_top_b_picks",
    "sample_task",
    "save_policy",
    "select",
    "simulate",
    "soft_demographic_parity",
    "soft_equalized_odds",
    "soft_error_rate_balance",
    "step_generator",
    "task_generator",
    "train_policy",
]
