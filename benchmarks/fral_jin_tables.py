"""FRAL paper-shaped tables (Wu et al. 2023, Tables 1-3) from a `rayfal run` of jobs/fral_jin.yaml.

Usage: python benchmarks/fral_jin_tables.py RUN_DIR [--out DIR]

* Table 1: worst group / disparity / group average of the standard and the robust (PGD)
  accuracy of M_R, mean ± std over seeds: "Initialization" = round 0 (the initial 20 %, the
  same labelled set and model for every strategy of a seed), then each strategy after the last
  round.
* Table 2: selection compute per round (mean over seeds and query rounds): scoring time
  (``score_seconds``), JIN's auxiliary standard-model training (``ms_train_seconds``) and their
  sum, next to the adversarial training of M_R (``train_seconds``, the paper's "Init. AT" row).
* Table 3: JIN's ablation (S = jin_std, R = jin_rob, S+R = jin).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

STRATEGY_NAMES = {"random": "RAND", "entropy": "ENT", "group_random": "G-RAND", "jin": "JIN",
                  "jin_std": "JIN (S only)", "jin_rob": "JIN (R only)"}


def _campaigns(df: pd.DataFrame) -> list[str]:
    """Campaign names in the paper's order (known strategies first)."""
    names = list(df["campaign"].drop_duplicates())
    return sorted(names, key=lambda n: (list(STRATEGY_NAMES).index(n) if n in STRATEGY_NAMES
                                        else len(STRATEGY_NAMES), n))


def _fmt(values: pd.Series, scale: float = 100.0) -> str:
    v = values.dropna().to_numpy(float) * scale
    if len(v) == 0:
        return "–"
    sd = f"{np.std(v, ddof=1):.2f}" if len(v) > 1 else "–"
    return f"{np.mean(v):.2f} ± {sd}"


def load_rounds(run_dir: Path) -> pd.DataFrame:
    """Every committed round record (``campaigns/*/seed_*/rounds/round_*.json``; also works on a
    run that is still going, unlike ``rounds.csv`` which is written per finished campaign)."""
    import json

    path = Path(run_dir) / "campaigns"
    files = sorted(path.glob("*/seed_*/rounds/round_*.json"))
    if not files:
        raise FileNotFoundError(f"no round records under {path}: run jobs/fral_jin.yaml first")
    df = pd.DataFrame([{k: v for k, v in json.loads(p.read_text()).items()
                        if k not in ("selected", "selected_labels")} for p in files])
    need = {"F_std", "F_rob", "std_disparity", "rob_disparity", "std_group_avg", "rob_group_avg"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise KeyError(f"{path}: columns {missing} missing (run with evaluation.robust: true)")
    return df


def table1(df: pd.DataFrame) -> str:
    cols = ["F_std", "std_disparity", "std_group_avg", "F_rob", "rob_disparity", "rob_group_avg"]
    head = ("| Method | Std worst (↑) | Std disparity (↓) | Std grp. avg (↑) | Rob worst (↑) "
            "| Rob disparity (↓) | Rob grp. avg (↑) | Seeds |\n|:---|" + "---:|" * 7)
    lines = [head]
    init = df[df["round"] == 0].drop_duplicates("seed")
    lines.append("| Initialization | " + " | ".join(_fmt(init[c]) for c in cols)
                 + f" | {init['seed'].nunique()} |")
    last = df["round"].max()
    for name in _campaigns(df):
        d = df[(df["campaign"] == name) & (df["round"] == last)]
        label = STRATEGY_NAMES.get(name, name)
        lines.append(f"| {label} | " + " | ".join(_fmt(d[c]) for c in cols)
                     + f" | {d['seed'].nunique()} |")
    return "\n".join(lines)


def table2(df: pd.DataFrame) -> str:
    q = df[df["n_queried"] > 0]
    lines = ["| Method | Scoring s/round | M_S training s/round | Selection total s/round "
             "| Selection total, 5 rounds (s) | M_R adv. training s/round |",
             "|:---|---:|---:|---:|---:|---:|"]
    for name in _campaigns(q):
        d = q[q["campaign"] == name]
        sel = d["score_seconds"] + d.get("ms_train_seconds", 0.0)
        per_seed_total = (d.assign(sel=sel).groupby("seed")["sel"].sum()).mean()
        lines.append(f"| {STRATEGY_NAMES.get(name, name)} | {d['score_seconds'].mean():.1f} | "
                     f"{d.get('ms_train_seconds', pd.Series([0.0])).mean():.1f} | "
                     f"{sel.mean():.1f} | {per_seed_total:.1f} | {d['train_seconds'].mean():.1f} |")
    return "\n".join(lines)


def table3(df: pd.DataFrame) -> str:
    last = df["round"].max()
    lines = ["| Terms | Std worst (↑) | Std avg (↑) | Rob worst (↑) | Rob avg (↑) |",
             "|:---|---:|---:|---:|---:|"]
    for name, label in (("jin_std", "S"), ("jin_rob", "R"), ("jin", "S+R")):
        d = df[(df["campaign"] == name) & (df["round"] == last)]
        if len(d):
            lines.append(f"| {label} | " + " | ".join(
                _fmt(d[c]) for c in ("F_std", "std_group_avg", "F_rob", "rob_group_avg")) + " |")
    return "\n".join(lines)


def query_share(df: pd.DataFrame) -> str:
    """Share of queried rows from the worst group z* (per strategy, over all query rounds)."""
    q = df[df["n_queried"] > 0]
    cols = sorted(c for c in q.columns if c.startswith("query_frac_group_"))
    lines = ["| Method | " + " | ".join(c.replace("query_frac_", "") for c in cols)
             + " | z* (most frequent) |", "|:---|" + "---:|" * (len(cols) + 1)]
    for name in _campaigns(q):
        d = q[q["campaign"] == name]
        z = d["worst_group"].mode().iloc[0] if "worst_group" in d and d["worst_group"].notna(
        ).any() else "–"
        lines.append(f"| {STRATEGY_NAMES.get(name, name)} | "
                     + " | ".join(f"{d[c].mean():.2f}" for c in cols) + f" | {z} |")
    return "\n".join(lines)


def render(run_dir: Path) -> str:
    df = load_rounds(run_dir)
    return "\n\n".join([
        "Table 1 (accuracy of M_R in %, mean ± std over seeds, after the last round)",
        table1(df),
        "Table 2 (selection compute, seconds; mean over seeds and the query rounds)",
        table2(df),
        "Table 3 (JIN ablation, after the last round)",
        table3(df),
        "Queried rows per group (mean share over query rounds)",
        query_share(df),
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write fral_tables.md here too")
    args = ap.parse_args(argv)
    text = render(args.run_dir)
    print(text)
    for d in [args.run_dir / "report"] + ([args.out] if args.out else []):
        d.mkdir(parents=True, exist_ok=True)
        (d / "fral_tables.md").write_text(text)


if __name__ == "__main__":
    main()
