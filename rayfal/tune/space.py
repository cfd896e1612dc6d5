"""The ``tune:`` section of a job file: search space, objectives, constraint, trial settings.

A search space maps a dotted job key (the same keys as ``--set``: ``training.mode_params.lam``,
``campaigns.0.params.temperature``, ``campaigns.1.training.mode_params.beta``) to a
distribution written as text::

    loguniform(0.01, 10)   uniform(1, 10)   int(1, 5)   logint(16, 256)   choice([1, 3, 5])

Every key is checked against the job: both ends of the range (every choice) are written into
the job with :func:`rayfal.config._set_dotted` and the result must pass
:func:`rayfal.config.config_from_dict` and build the tuned campaign's loss and strategy
(``mode_params`` / ``params`` are free mappings, so a typo there is only caught by the
factories). Errors name ``tune.<key>``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from rayfal.config import ConfigError, JobConfig, _set_dotted, config_from_dict
from rayfal.config.tune_section import (  # noqa: F401  (re-exported: the tune section's parser)
    DISTRIBUTIONS,
    TUNE_KEYS,
    Constraint,
    Distribution,
    Objective,
    TuneSpec,
    _bad,
    parse_distribution,
    parse_tune,
)


def apply_params(resolved: dict, params: dict[str, Any]) -> dict:
    """A deep copy of the raw job with each dotted key set to its value."""
    raw = copy.deepcopy(resolved)
    for key, value in params.items():
        _set_dotted(raw, key, value)
    return raw


def campaign_index(cfg: JobConfig, name: str | None) -> int:
    """Index of the tuned campaign (by label/strategy name; default: the first)."""
    if name is None:
        return 0
    names = [c.name for c in cfg.campaigns]
    if name not in names:
        raise _bad("campaign", f"no campaign named {name!r}; the job has {names}")
    return names.index(name)


def trial_job(resolved: dict, spec: TuneSpec, params: dict[str, Any]) -> dict:
    """The raw job one trial runs: the values applied to the whole job, then narrowed to the
    tuned campaign and seed, truncated to ``tune.rounds`` and with ``train_workers`` workers."""
    raw = apply_params(resolved, params)
    raw["tune"] = {}
    raw["variants"] = []
    cfg = config_from_dict(raw, source="tune trial")
    idx = campaign_index(cfg, spec.campaign)
    camp = copy.deepcopy(raw["campaigns"][idx])
    camp_training = dict(camp.get("training") or {})
    camp_training.pop("num_workers", None)
    camp["training"] = camp_training
    raw["campaigns"] = [camp]
    raw["seeds"] = [spec.campaign_seed if spec.campaign_seed is not None else cfg.seeds[0]]
    raw.setdefault("training", {})["num_workers"] = spec.train_workers
    if spec.rounds is not None:
        raw.setdefault("al", {})["rounds"] = spec.rounds
    return raw


def best_job(resolved: dict, params: dict[str, Any], note: str | None = None) -> dict:
    """The original job (every campaign and seed, full schedule) with the chosen values."""
    raw = apply_params(resolved, params)
    raw.pop("tune", None)
    if note:
        raw["name"] = f"{raw.get('name', 'job')}-{note}"
    return raw


def check_runnable(raw: dict, source: str) -> JobConfig:
    """Validate a trial job fully: config, then the campaign's loss and strategy factories."""
    from rayfal.acquisition import make_strategy
    from rayfal.config import campaign_training
    from rayfal.training.modes import make_loss

    cfg = config_from_dict(raw, source=source)
    for c in cfg.campaigns:
        training = campaign_training(cfg, c)
        try:
            make_loss(training.mode, **training.mode_params)
            make_strategy(c.strategy, seed=0, **c.params)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{source}: campaign '{c.name}': {exc}") from None
    return cfg


def validate_spec(cfg: JobConfig, resolved: dict, source: str = "job") -> TuneSpec:
    """Parse ``cfg.tune`` and check every space key against the job (see module doc)."""
    if cfg.variants:
        raise ConfigError(f"{source}: tune: a tuning job cannot have 'variants'; "
                          "write the variant's values into the job")
    spec = parse_tune(cfg.tune)
    campaign_index(cfg, spec.campaign)
    if spec.campaign_seed is not None and spec.campaign_seed not in cfg.seeds:
        raise _bad("campaign_seed", f"{spec.campaign_seed} is not one of the job's seeds {cfg.seeds}")
    base = {k: d.ends()[0] for k, d in spec.space.items()}
    for key, dist in spec.space.items():
        for value in dist.ends():
            params = {**base, key: value}
            try:
                check_runnable(trial_job(resolved, spec, params), f"{source}: tune.space.{key}={value!r}")
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{key}: the job does not accept {value!r}: {exc}") from None
    return spec


def spec_summary(spec: TuneSpec) -> dict:
    """A JSON-able summary (written next to the results)."""
    d = dataclasses.asdict(spec)
    d["space"] = {k: v.text() for k, v in spec.space.items()}
    return d
