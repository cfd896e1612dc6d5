"""Job files: YAML -> validated dataclasses, with dotted ``--set a.b=value`` overrides.

Unknown keys, wrong types and impossible values raise :class:`ConfigError` naming the file and
the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A job file or override is invalid; the message names the source and the key."""


@dataclass
class DatasetConfig:
    """Where the pool and the held-out test set come from.

    ``name: glyphs`` generates (once, cached in ``dir``) the Synbols-like glyph data;
    ``name: parquet`` reads existing ``pool``/``test`` Parquet globs in the pool schema.
    """

    name: str = "glyphs"
    scenario: str = "sensitive_attribute"
    n_pool: int = 2000
    n_test: int = 1000
    seed: int = 0
    image_size: int = 32
    minority_fraction: float = 0.1
    correlation: float = 0.9
    shard_rows: int = 50_000
    dir: str | None = None
    pool: str | None = None
    test: str | None = None
    # adult (rayfal/data/sources/adult.py): raw-file directory, size of D0 (None = all of D),
    # which columns to standardise ('all' | 'numeric')
    src_dir: str | None = None
    d0_size: int | None = None
    standardize: str = "all"
    # colored_mnist (rayfal/data/sources/colored_mnist.py): fraction of bias-aligned pool rows
    # (colour = the class's colour); src_dir = the folder holding mnist_5k.csv.gz
    skew: float = 0.95


@dataclass
class ModelConfig:
    name: str = "auto"
    dropout: float = 0.5
    hidden: int = 128
    width: int = 32


@dataclass
class TrainingConfig:
    """Ray Train settings and the per-round optimisation (weights reset every round)."""

    mode: str = "standard"
    mode_params: dict = field(default_factory=dict)
    epochs: int = 20
    min_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    num_workers: int = 0
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"


@dataclass
class ALConfig:
    """The labelling schedule: an initial random set, then ``query_size`` labels per round."""

    initial_labels: int = 20
    query_size: int = 50
    rounds: int | None = None
    max_frac: float | None = 0.1


@dataclass
class ScoringConfig:
    """Ray Data pool scoring: actor pool size/CPUs ('auto' adapts to the cluster).

    ``compute: actors`` scores with an actor pool (model loaded once per actor); ``tasks`` with
    a task pool whose worker processes cache the model (no actor start-up, ~7 s a round on
    2 cores); ``auto`` uses actors for pools of ``actor_min_rows`` rows or more. The whole
    actor pool is started (``actor_start_timeout_s``) before the first batch, so work is spread
    over every actor (and node) rather than the first one up. ``actor_locality: false`` stops
    Ray Data from preferring actors on the node that holds a block (spreads small pools).
    ``actor_resources`` (e.g. ``{rayfal_scorer: 1}``) are custom Ray resources each scoring
    actor/task requests, to pin scorers to nodes started with ``ray start --resources``.
    ``scheduling_strategy`` other than Ray Data's default ``SPREAD`` is passed through Ray's
    deprecated ``ray_remote_args``.
    """

    compute: str = "auto"
    actor_min_rows: int = 100_000
    batch_size: int = 512
    actors: int | str = "auto"
    cpus_per_actor: float | str = "auto"
    gpus_per_actor: float = 0.0
    mc_samples: int = 20
    scheduling_strategy: str = "SPREAD"
    actor_start_timeout_s: int = 600
    actor_locality: bool = True
    actor_resources: dict = field(default_factory=dict)


@dataclass
class EvaluationConfig:
    """``robust: true`` adds FRAL's robust metrics (rayfal/robust_eval.py) to every round record:
    L-inf PGD with ``robust_eps``/``robust_alpha``/``robust_steps`` (default PGD-20, 8/255,
    2/255). ``val_fraction > 0`` moves that fraction of the test rows (by row_id hash) to a
    validation split used only to find the worst group z* (FRAL Algorithm 1, line 5); metrics
    are then reported on the remaining test rows. ``worst_group_by``: ``accuracy`` or
    ``robust_accuracy`` (needs ``robust: true``) on that split picks z*."""

    mc_samples: int = 20
    batch_size: int = 512
    robust: bool = False
    robust_eps: float = 8 / 255
    robust_alpha: float = 2 / 255
    robust_steps: int = 20
    val_fraction: float = 0.0
    worst_group_by: str = "accuracy"


@dataclass
class CampaignConfig:
    """One strategy (with its parameters and optional training overrides) to run over seeds."""

    strategy: str = "random"
    label: str | None = None
    params: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.strategy


@dataclass
class RayConfig:
    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = 1_000_000_000
    include_dashboard: bool = False


@dataclass
class JobConfig:
    name: str = "job"
    seeds: list[int] = field(default_factory=lambda: [0])
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    al: ALConfig = field(default_factory=ALConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    campaigns: list[CampaignConfig] = field(default_factory=lambda: [CampaignConfig()])
    ray: RayConfig = field(default_factory=RayConfig)
    variants: list[dict] = field(default_factory=list)
    # `rayfal tune`: search space, objectives, trials (validated by rayfal.tune.space)
    tune: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (dataclasses, lists, unions)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(f"{where}.{k}" if where else str(k) for k in set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    kwargs = {
        k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()
    }
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if isinstance(node, list):
            try:
                node = node[int(k)]
            except (ValueError, IndexError):
                raise ConfigError(f"--set {dotted}: '{k}' is not a valid list index") from None
        else:
            node = node.setdefault(k, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    if isinstance(node, list):
        try:
            node[int(keys[-1])] = value
        except (ValueError, IndexError):
            raise ConfigError(f"--set {dotted}: '{keys[-1]}' is not a valid list index") from None
    else:
        node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'training.epochs=5'`` -> ``('training.epochs', 5)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def config_from_dict(data: dict, *, source: str = "<dict>") -> JobConfig:
    """Validate a raw mapping into a :class:`JobConfig` (errors name ``source``)."""
    try:
        cfg = _from_dict(JobConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    validate(cfg, source)
    return cfg


def load_job(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[JobConfig, dict]:
    """Load a job file and apply ``--set`` overrides; returns ``(config, resolved raw dict)``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"job file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = copy.deepcopy(raw)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    cfg = config_from_dict(raw, source=str(path))
    return cfg, cfg.to_dict()


def expand_variants(cfg: JobConfig, resolved: dict) -> list[tuple[str, JobConfig, dict]]:
    """A job with ``variants:`` (each ``{name, set: {dotted.key: value}}``) becomes one
    sub-job per variant (e.g. the two Synbols scenarios); a job without is its own variant."""
    if not cfg.variants:
        return [("", cfg, resolved)]
    out = []
    for i, variant in enumerate(cfg.variants):
        name = variant.get("name")
        overrides = variant.get("set", {})
        extra = sorted(set(variant) - {"name", "set"})
        if not isinstance(name, str) or not name or extra or not isinstance(overrides, dict):
            raise ConfigError(f"variants[{i}]: expected {{name: str, set: {{key: value}}}}")
        raw = copy.deepcopy(resolved)
        raw["variants"] = []
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        sub = config_from_dict(raw, source=f"variant '{name}'")
        out.append((name, sub, sub.to_dict()))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"variants: duplicate names {names}")
    return out


def validate(cfg: JobConfig, source: str) -> None:
    """Cross-field checks with messages naming the key."""

    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"{source}: {key}: {msg}")

    if not cfg.seeds:
        bad("seeds", "at least one seed is needed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        bad("seeds", f"duplicate seeds in {cfg.seeds}")
    if not cfg.campaigns:
        bad("campaigns", "at least one campaign is needed")
    names = [c.name for c in cfg.campaigns]
    if len(set(names)) != len(names):
        bad("campaigns", f"duplicate campaign names {names}; give each a distinct 'label'")
    for i, c in enumerate(cfg.campaigns):
        merged = {**dataclasses.asdict(cfg.training), **c.training}
        try:
            _from_dict(TrainingConfig, merged, f"campaigns[{i}].training")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    al = cfg.al
    if al.initial_labels < 1:
        bad("al.initial_labels", "must be >= 1")
    if al.query_size < 1:
        bad("al.query_size", "must be >= 1")
    if al.rounds is None and al.max_frac is None:
        bad("al", "set 'rounds' or 'max_frac'")
    if al.max_frac is not None and not 0 < al.max_frac <= 1:
        bad("al.max_frac", f"must be in (0, 1], got {al.max_frac}")
    if al.rounds is not None and al.rounds < 0:
        bad("al.rounds", "must be >= 0")
    t = cfg.training
    if t.num_workers < 0:
        bad("training.num_workers", "must be >= 0 (0 = train in the driver process)")
    if t.epochs < 1 or t.batch_size < 1 or t.lr <= 0:
        bad("training", "epochs and batch_size must be >= 1 and lr > 0")
    if cfg.scoring.mc_samples < 1 or cfg.evaluation.mc_samples < 1:
        bad("scoring.mc_samples", "MC samples must be >= 1")
    if cfg.scoring.compute not in ("auto", "actors", "tasks"):
        bad("scoring.compute", f"'auto', 'actors' or 'tasks', got {cfg.scoring.compute!r}")
    if isinstance(cfg.scoring.actors, str) and cfg.scoring.actors != "auto":
        bad("scoring.actors", "an integer or 'auto'")
    if isinstance(cfg.scoring.cpus_per_actor, str) and cfg.scoring.cpus_per_actor != "auto":
        bad("scoring.cpus_per_actor", "a number or 'auto'")
    for name, amount in cfg.scoring.actor_resources.items():
        if name in ("CPU", "GPU", "memory") or isinstance(amount, bool) or not isinstance(
            amount, int | float
        ) or amount <= 0:
            bad(f"scoring.actor_resources.{name}",
                "custom resource names (not CPU/GPU/memory) with positive amounts")
    ev = cfg.evaluation
    if not 0.0 <= ev.val_fraction < 1.0:
        bad("evaluation.val_fraction", f"must be in [0, 1), got {ev.val_fraction}")
    if ev.worst_group_by not in ("accuracy", "robust_accuracy"):
        bad("evaluation.worst_group_by", f"'accuracy' or 'robust_accuracy', got {ev.worst_group_by!r}")
    if ev.worst_group_by == "robust_accuracy" and not ev.robust:
        bad("evaluation.worst_group_by", "'robust_accuracy' needs evaluation.robust: true")
    if ev.robust and (ev.robust_eps < 0 or ev.robust_steps < 0 or ev.robust_alpha <= 0):
        bad("evaluation.robust_*", "need robust_eps >= 0, robust_steps >= 0, robust_alpha > 0")
    if cfg.dataset.name == "parquet" and not (cfg.dataset.pool and cfg.dataset.test):
        bad("dataset", "name: parquet needs 'pool' and 'test' globs")
    if cfg.dataset.name == "colored_mnist":
        if not 0.0 <= cfg.dataset.skew <= 1.0:
            bad("dataset.skew", f"must be in [0, 1], got {cfg.dataset.skew}")
        if cfg.dataset.image_size < 28:
            bad("dataset.image_size", f"colored_mnist needs >= 28, got {cfg.dataset.image_size}")
