"""Reading run directories: ``rounds.csv`` files and their columns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ROUNDS_FILE = "rounds.csv"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "scenario",
    "campaign",
    "seed",
    "round",
    "n_labelled",
    "frac_labelled",
)
KEY = ["scenario", "campaign", "seed", "round"]


def load_rounds(run_dirs: Sequence[str | Path] | str | Path) -> pd.DataFrame:
    """Concatenate ``RUN_DIR/rounds.csv`` of every run directory (adds a ``run_dir`` column).

    Raises FileNotFoundError naming a missing ``rounds.csv`` and ValueError naming missing
    required columns, an empty file, or a (scenario, campaign, seed, round) present twice.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("load_rounds needs at least one run directory")
    frames = []
    for run_dir in run_dirs:
        path = Path(run_dir) / ROUNDS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no {ROUNDS_FILE} in run directory {run_dir}: {path} is missing"
            )
        df = pd.read_csv(path, dtype={"scenario": str, "campaign": str, "strategy": str})
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path} lacks required column(s): {', '.join(missing)}")
        if df.empty:
            raise ValueError(f"{path} has no rows")
        df["run_dir"] = str(run_dir)
        frames.append(df)
    rounds = pd.concat(frames, ignore_index=True, sort=False)
    dup = rounds.duplicated(KEY, keep=False)
    if dup.any():
        first = rounds.loc[dup, KEY + ["run_dir"]].head(4).to_dict("records")
        raise ValueError(
            f"{int(dup.sum())} rows share a (scenario, campaign, seed, round), e.g. {first}; "
            "pass each run once"
        )
    return rounds


def _group_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def sort_groups(keys: set[str] | list[str]) -> list[str]:
    """Group keys in numeric order when they are integers, then the rest alphabetically."""
    return sorted(keys, key=_group_order)


def group_keys(rounds: pd.DataFrame, prefix: str) -> list[str]:
    """Group keys ``g`` of the columns ``<prefix><g>``, numerically sorted when possible."""
    pat = re.compile(rf"^{re.escape(prefix)}(.+)$")
    return sort_groups([m.group(1) for c in rounds.columns if (m := pat.match(str(c)))])


def numeric(df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` as floats (NaN where missing or not a number)."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def has_values(rounds: pd.DataFrame, col: str) -> bool:
    """Whether ``col`` exists and holds at least one number."""
    return col in rounds.columns and bool(pd.to_numeric(rounds[col], errors="coerce").notna().any())
