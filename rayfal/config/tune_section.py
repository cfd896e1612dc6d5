"""The ``tune:`` section of a job file: search space, objectives, constraint and budget.

Parsed and checked when a job is loaded (so ``rayfal validate`` catches its errors); the search
itself lives in :mod:`rayfal.tune`.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rayfal.config.errors import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
MODES = ("max", "min")
SCHEDULERS = ("asha", "none", "auto")
TUNE_KEYS = {
    "space", "objectives", "constraint", "num_samples", "max_concurrent", "scheduler",
    "grace_rounds", "reduction_factor", "rounds", "seed", "campaign", "campaign_seed",
    "train_workers", "trial_cpus", "startup_trials", "baselines",
}
_FORBIDDEN_PREFIXES = ("tune", "variants", "ray", "seeds", "name")
_DIST_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    """One search dimension: ``kind`` in :data:`DISTRIBUTIONS`, bounds or choices."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def ends(self) -> list[Any]:
        """Values that must all be valid in the job (range ends, every choice)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "logint"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def to_optuna(self):
        """The equivalent ``optuna.distributions`` object (used by the define-by-run space)."""
        import optuna.distributions as od

        if self.kind == "choice":
            return od.CategoricalDistribution(list(self.choices))
        if self.kind in ("int", "logint"):
            return od.IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return od.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind in ("int", "logint") and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def text(self) -> str:
        if self.kind == "choice":
            return f"choice({list(self.choices)})"
        return f"{self.kind}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max" | "min"


@dataclass(frozen=True)
class Constraint:
    """Feasible when ``metric <= max`` at the last round (Optuna: ``metric - max <= 0``)."""

    metric: str
    max: float


@dataclass
class TuneSpec:
    """The validated ``tune:`` section."""

    space: dict[str, Distribution]
    objectives: list[Objective]
    constraint: Constraint | None = None
    num_samples: int = 8
    max_concurrent: int = 2
    scheduler: str = "none"  # resolved: "asha" or "none"
    grace_rounds: int = 1
    reduction_factor: int = 2
    rounds: int | None = None
    seed: int = 0
    campaign: str | None = None
    campaign_seed: int | None = None
    train_workers: int = 0
    trial_cpus: float | str = "auto"
    startup_trials: int | None = None
    baselines: list[dict] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]


def _bad(key: str, msg: str) -> ConfigError:
    return ConfigError(f"tune.{key}: {msg}")


def parse_distribution(text: Any, key: str) -> Distribution:
    """``"loguniform(0.01, 10)"`` -> :class:`Distribution`; errors name ``tune.space.<key>``."""
    where = f"space.{key}"
    if not isinstance(text, str):
        raise _bad(where, f"expected a string like 'uniform(0, 1)', got {text!r}")
    m = _DIST_RE.match(text)
    if not m:
        hint = (" (in a YAML flow mapping {k: v} quote it: the comma split it)"
                if text.count("(") != text.count(")") else "")
        raise _bad(where, f"cannot parse {text!r}; expected NAME(args) with NAME in "
                          f"{', '.join(DISTRIBUTIONS)}{hint}")
    kind, args_text = m.group(1), m.group(2)
    if kind not in DISTRIBUTIONS:
        raise _bad(where, f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    try:
        args = ast.literal_eval(f"({args_text},)") if args_text.strip() else ()
    except (ValueError, SyntaxError):
        raise _bad(where, f"arguments of {text!r} are not literals") from None
    if kind == "choice":
        if len(args) != 1 or not isinstance(args[0], list | tuple) or not args[0]:
            raise _bad(where, f"choice needs one non-empty list, e.g. choice([1, 3, 5]); got {text!r}")
        values = tuple(args[0])
        if any(not isinstance(v, str | int | float | bool) and v is not None for v in values):
            raise _bad(where, "choice values must be numbers, strings, booleans or null")
        if len(set(map(repr, values))) != len(values):
            raise _bad(where, f"duplicate choices in {text!r}")
        return Distribution("choice", choices=values)
    if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, int | float) for a in args):
        raise _bad(where, f"{kind} needs two numbers (low, high); got {text!r}")
    low, high = float(args[0]), float(args[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise _bad(where, f"{kind}: need finite low < high, got low={low:g}, high={high:g}")
    if kind in ("loguniform", "logint") and low <= 0:
        raise _bad(where, f"{kind}: low must be > 0 for a log scale, got {low:g}")
    if kind in ("int", "logint") and not (low.is_integer() and high.is_integer()):
        raise _bad(where, f"{kind}: bounds must be integers, got {text!r}")
    return Distribution(kind, low, high)


def _objective(item: Any, where: str) -> Objective:
    if not isinstance(item, dict) or set(item) != {"metric", "mode"}:
        raise _bad(where, f"expected {{metric: NAME, mode: max|min}}, got {item!r}")
    if not isinstance(item["metric"], str) or not item["metric"]:
        raise _bad(where, f"metric must be a metric name, got {item['metric']!r}")
    if item["mode"] not in MODES:
        raise _bad(where, f"mode must be 'max' or 'min', got {item['mode']!r}")
    return Objective(item["metric"], item["mode"])


def _int(raw: dict, key: str, default: int | None, lo: int) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _bad(key, f"expected an integer >= {lo}, got {value!r}")
    return value


def parse_tune(raw: Any) -> TuneSpec:
    """Validate the shape of a ``tune:`` mapping (without looking at the rest of the job)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("tune: the job has no 'tune:' section (space, objectives, num_samples)")
    unknown = sorted(set(raw) - TUNE_KEYS)
    if unknown:
        raise ConfigError(f"tune: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(TUNE_KEYS))}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise _bad("space", "expected a non-empty mapping {dotted.job.key: 'uniform(a, b)'}")
    space = {}
    for key, text in space_raw.items():
        if not isinstance(key, str) or not key or key.split(".")[0] in _FORBIDDEN_PREFIXES:
            raise _bad(f"space.{key}", "cannot tune this key (name/seeds/ray/variants/tune)")
        space[key] = parse_distribution(text, key)
    objs = raw.get("objectives")
    if not isinstance(objs, list) or not 1 <= len(objs) <= 2:
        raise _bad("objectives", "expected a list of one or two {metric, mode} items")
    objectives = [_objective(o, f"objectives[{i}]") for i, o in enumerate(objs)]
    if len({o.metric for o in objectives}) != len(objectives):
        raise _bad("objectives", "the two objectives name the same metric")
    constraint = None
    if raw.get("constraint") is not None:
        c = raw["constraint"]
        if (not isinstance(c, dict) or set(c) != {"metric", "max"}
                or not isinstance(c["metric"], str)
                or isinstance(c["max"], bool) or not isinstance(c["max"], int | float)):
            raise _bad("constraint", f"expected {{metric: NAME, max: NUMBER}}, got {c!r}")
        constraint = Constraint(c["metric"], float(c["max"]))
    scheduler = raw.get("scheduler", "auto")
    if scheduler not in SCHEDULERS:
        raise _bad("scheduler", f"'asha', 'none' or 'auto', got {scheduler!r}")
    if scheduler == "asha" and len(objectives) > 1:
        raise _bad("scheduler", "ASHA stops trials on one metric; it cannot be used with two "
                                "objectives (use 'none')")
    resolved_sched = ("asha" if len(objectives) == 1 else "none") if scheduler == "auto" else scheduler
    trial_cpus = raw.get("trial_cpus", "auto")
    if trial_cpus != "auto" and (isinstance(trial_cpus, bool) or not isinstance(trial_cpus, int | float)
                                 or not 0 < trial_cpus):
        raise _bad("trial_cpus", f"'auto' or a number > 0, got {trial_cpus!r}")
    campaign = raw.get("campaign")
    if campaign is not None and not isinstance(campaign, str):
        raise _bad("campaign", f"a campaign name (label or strategy), got {campaign!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _bad("seed", f"expected an integer, got {seed!r}")
    campaign_seed = raw.get("campaign_seed")
    if campaign_seed is not None and (isinstance(campaign_seed, bool)
                                      or not isinstance(campaign_seed, int)):
        raise _bad("campaign_seed", f"expected an integer, got {campaign_seed!r}")
    baselines = raw.get("baselines") or []
    if not isinstance(baselines, list):
        raise _bad("baselines", "expected a list of {dotted.key: value} points")
    for i, point in enumerate(baselines):
        if not isinstance(point, dict) or set(point) != set(space):
            raise _bad(f"baselines[{i}]", f"must set exactly the space keys {sorted(space)}; "
                                          f"got {point!r}")
        for key, value in point.items():
            if not space[key].contains(value):
                raise _bad(f"baselines[{i}].{key}", f"{value!r} is outside {space[key].text()}")
    return TuneSpec(
        space=space, baselines=baselines, objectives=objectives, constraint=constraint,
        num_samples=_int(raw, "num_samples", 8, 1),
        max_concurrent=_int(raw, "max_concurrent", 2, 1),
        scheduler=resolved_sched,
        grace_rounds=_int(raw, "grace_rounds", 1, 1),
        reduction_factor=_int(raw, "reduction_factor", 2, 2),
        rounds=_int(raw, "rounds", None, 0),
        seed=seed, campaign=campaign, campaign_seed=campaign_seed,
        train_workers=_int(raw, "train_workers", 0, 0),
        trial_cpus=trial_cpus,
        startup_trials=_int(raw, "startup_trials", None, 1),
    )


# --------------------------------------------------------------------------- applying values
