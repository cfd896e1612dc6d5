"""Loading a job: YAML (or a mapping) -> ``--set`` dotted overrides -> validated
:class:`~rayfal.config.models.JobConfig`; variants; a campaign's training section.

Every failure is a :class:`~rayfal.config.errors.ConfigError` whose message is one line naming
the source, the dotted key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rayfal.config.errors import ConfigError, config_error
from rayfal.config.models import CampaignConfig, JobConfig, TrainingConfig

#: sections that are unions discriminated by a key: changing the key starts the section afresh
_TAGGED = {"dataset": "name", "oracle": "kind"}


def set_dotted(tree: dict, dotted: str, value: Any, *, what: str = "--set") -> None:
    """Set ``tree[a][b][...] = value`` for ``dotted = "a.b..."`` (list items by index, e.g.
    ``campaigns.1.params.eps``); missing mappings are created. Errors name ``what dotted``."""
    keys = dotted.split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"{what} {dotted}: empty key part")
    node: Any = tree
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise ConfigError(f"{what} {dotted}: '{k}' is not a valid list index "
                                  f"(the list has {len(node)} item(s))")
            if last:
                node[int(k)] = value
                return
            node = node[int(k)]
        else:
            if last:
                node[k] = value
                return
            node = node.setdefault(k, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"{what} {dotted}: '{k}' is not a section")


#: the historical private name (kept for callers such as rayfal.tune.space)
_set_dotted = set_dotted


def parse_override(text: str) -> tuple[str, Any]:
    """``'training.epochs=5'`` -> ``('training.epochs', 5)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]
        raise ConfigError(f"--set {key.strip()}: {raw!r} is not a valid YAML value "
                          f"({' '.join(str(problem).split())})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # a tag's constructor failing, e.g. '!!int x', '!!float x', '!!timestamp 2020-13-99'
        raise ConfigError(f"--set {key.strip()}: {raw!r} is not a valid YAML value "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    return key.strip(), value


def config_from_dict(data: Mapping[str, Any], *, source: str = "<dict>",
                     check_files: bool = False) -> JobConfig:
    """Validate a raw mapping into a :class:`JobConfig` (errors name ``source``); variants are
    checked too. ``check_files`` also checks the data files the dataset section names."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping, got "
                          f"{type(data).__name__}")
    try:
        cfg = JobConfig.model_validate(dict(data), context={"check_files": check_files})
    except ValidationError as exc:
        raise config_error(exc, JobConfig, source) from None
    if cfg.variants:
        _expand(cfg, cfg.to_dict(), source, check_files)
    return cfg


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"job file {path} does not exist" if not path.exists()
                          else f"{path}: not a file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def load_job(path: str | Path | Mapping[str, Any], overrides: Sequence[str] | None = None,
             *, source: str | None = None) -> tuple[JobConfig, dict]:
    """Load a job file (or a mapping), apply ``--set`` overrides (``"a.b=value"``) and validate
    everything, data files included; returns ``(config, resolved dict)``."""
    if isinstance(path, Mapping):
        raw = copy.deepcopy(dict(path))
        source = source or "<job>"
    else:
        raw = _read(Path(path))
        source = source or str(path)
    for text in overrides or []:
        try:
            key, value = parse_override(text)
            set_dotted(raw, key, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    cfg = config_from_dict(raw, source=source, check_files=True)
    return cfg, cfg.to_dict()


def _expand(cfg: JobConfig, resolved: dict, source: str, check_files: bool
            ) -> list[tuple[str, JobConfig, dict]]:
    out = []
    for i, variant in enumerate(cfg.variants):
        raw = copy.deepcopy(resolved)
        raw["variants"] = []
        for section, tag in _TAGGED.items():
            key = f"{section}.{tag}"
            if key in variant.set and variant.set[key] != raw.get(section, {}).get(tag):
                # another member of the union: keep only the keys the job set explicitly
                own = getattr(cfg, section).model_dump(exclude_unset=True)
                own.pop(tag, None)
                raw[section] = own
        for key, value in variant.set.items():
            set_dotted(raw, key, value, what=f"{source}: variants[{i}].set:")
        sub = config_from_dict(raw, source=f"{source}: variants[{i}] ({variant.name})",
                               check_files=check_files)
        out.append((variant.name, sub, sub.to_dict()))
    return out


def expand_variants(cfg: JobConfig, resolved: dict, *, source: str = "job"
                    ) -> list[tuple[str, JobConfig, dict]]:
    """A job with ``variants:`` (each ``{name, set: {dotted.key: value}}``) becomes one
    ``(name, config, resolved)`` per variant (e.g. the two Synbols scenarios); a job without
    is its own variant ``("", cfg, resolved)``."""
    if not cfg.variants:
        return [("", cfg, resolved)]
    return _expand(cfg, resolved, source, check_files=False)


def campaign_training(cfg: JobConfig, campaign: CampaignConfig) -> TrainingConfig:
    """The job's training section with the campaign's overrides applied (validated)."""
    if not campaign.training:
        return cfg.training.model_copy(deep=True)
    merged = {**cfg.training.model_dump(), **campaign.training}
    try:
        return TrainingConfig.model_validate(merged)
    except ValidationError as exc:
        raise config_error(exc, TrainingConfig, f"campaign '{campaign.name}': training") from None


__all__ = [
    "campaign_training",
    "config_from_dict",
    "expand_variants",
    "load_job",
    "parse_override",
    "set_dotted",
]
