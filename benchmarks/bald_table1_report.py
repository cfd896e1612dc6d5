"""Table 1 of Branchaud-Charron et al. (2021) from runs of ``jobs/bald_fairness_table1.yaml``.

    .venv/bin/python benchmarks/bald_table1_report.py OUT_DIR RUN_DIR [RUN_DIR ...]

Reads the runs' ``rounds.csv`` (any number of seed chunks and scenarios), and writes into
OUT_DIR: ``rounds_all.csv`` (every per-seed, per-round record, without machine paths),
``paired.csv`` (each campaign − uniform per seed, mean and 95 % bootstrap CI, at 10 %
labelled), ``table1.md`` (our table with the paper's numbers beside it) and
``paired_differences.png``. ``table1.md`` is recomputed from ``rounds_all.csv`` alone, so a
reader can check it (``tests/test_committed_experiments.py`` does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from rayfal.report import paired_differences, table1
from rayfal.report.load import load_rounds
from rayfal.report.paired import paired_rounds, plot_paired_differences

#: Table 1 of the paper (10 % labelled, 3 seeds): (δA %, accuracy %) per scenario.
PAPER: dict[str, dict[str, tuple[str, str]]] = {
    "sensitive_attribute": {
        "uniform": ("10.73 ± 2.70", "87.23 ± 1.77"),
        "uniform+grad_0.5": ("7.58 ± 2.16", "87.37 ± 0.98"),
        "uniform+grad_1": ("5.50 ± 1.51", "83.69 ± 2.79"),
        "bald": ("3.56 ± 1.70", "91.66 ± 0.36"),
        "bald+grad_0.5": ("2.16 ± 1.13", "92.34 ± 0.26"),
        "bald+grad_1": ("1.27 ± 0.88", "90.31 ± 0.84"),
        "balanced_oracle": ("10.34 ± 1.97", "86.91 ± 1.83"),
        "balanced_oracle+grad_0.5": ("5.15 ± 1.39", "88.40 ± 2.02"),
    },
    "minority_group": {
        "uniform": ("4.67 ± 0.76", "88.53 ± 1.66"),
        "uniform+grad_0.5": ("2.03 ± 1.46", "84.98 ± 0.88"),
        "uniform+grad_1": ("1.38 ± 0.00", "86.52 ± 1.81"),
        "bald": ("2.11 ± 0.19", "94.08 ± 0.10"),
        "bald+grad_0.5": ("0.74 ± 0.15", "93.38 ± 0.84"),
        "bald+grad_1": ("0.75 ± 0.65", "91.72 ± 0.67"),
        "balanced_oracle": ("2.40 ± 0.65", "90.66 ± 0.41"),
        "balanced_oracle+grad_0.5": ("1.88 ± 0.01", "90.24 ± 0.70"),
    },
}
ORDER = ["uniform", "balanced_oracle", "bald", "batchbald", "uniform+grad_0.5",
         "uniform+grad_1", "bald+grad_0.5", "bald+grad_1", "balanced_oracle+grad_0.5",
         "uniform+grad_tuned", "bald+grad_tuned"]
#: paired differences against uniform: accuracy, δA and the worst group (the tuning objective)
METRICS = ("accuracy", "predictive_parity", "worst_group_accuracy")
KEEP = ["scenario", "campaign", "strategy", "mode", "seed", "round", "n_labelled",
        "frac_labelled", "accuracy", "predictive_parity", "worst_group_accuracy", "nll",
        "acc_group_0", "acc_group_1", "bald_group_0", "bald_group_1", "epistemic_gap",
        "labelled_frac_group_0", "labelled_frac_group_1", "query_frac_group_0",
        "query_frac_group_1", "train_seconds", "score_seconds", "eval_seconds", "train_loss"]


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _ci(row: pd.Series) -> str:
    star = " *" if row["ci_lo"] > 0 or row["ci_hi"] < 0 else ""
    return (f"{100 * row['mean_diff']:+.2f} [{100 * row['ci_lo']:+.2f}, "
            f"{100 * row['ci_hi']:+.2f}]{star}")


def _diff(paired: pd.DataFrame, campaign: str, metric: str) -> str:
    """``campaign − uniform`` of ``metric`` with its CI, or – (uniform itself, no row)."""
    row = paired[(paired["campaign"] == campaign) & (paired["metric"] == metric)]
    return _ci(row.iloc[0]) if len(row) else "–"


def table_markdown(rounds: pd.DataFrame) -> str:
    """Our Table 1 (mean ± std over seeds at the last round, paired differences against
    uniform with 95 % bootstrap CIs) with the paper's numbers beside it, one block per
    scenario."""
    t1 = table1(rounds)
    paired = paired_differences(rounds, baseline="uniform", metrics=METRICS)
    out = []
    for scenario in [s for s in PAPER if s in set(rounds["scenario"])]:
        sub = t1[t1["scenario"] == scenario].set_index("campaign")
        pd_sub = paired[paired["scenario"] == scenario]
        n_lab = int(sub["n_labelled"].max()) if "n_labelled" in sub else 0
        out.append(f"### {scenario.replace('_', ' ').capitalize()} @ 10% labelled "
                   f"({n_lab} labels)\n")
        out.append("| Campaign | Accuracy (%) | δA (%) ↓ | Worst-group accuracy (%) "
                   "| Δ accuracy vs uniform [95% CI] | Δ δA vs uniform [95% CI] "
                   "| Δ worst group vs uniform [95% CI] | Seeds | Paper δA / accuracy |")
        out.append("|:---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for camp in [c for c in ORDER if c in sub.index]:
            r = sub.loc[camp]
            acc = _pm(r["accuracy_mean"], r["accuracy_std"])
            dA = _pm(r["predictive_parity_mean"], r["predictive_parity_std"])
            wg = _pm(r["worst_group_accuracy_mean"], r["worst_group_accuracy_std"])
            d_acc, d_dA, d_wg = (_diff(pd_sub, camp, m) for m in
                                 ("accuracy", "predictive_parity", "worst_group_accuracy"))
            paper = PAPER[scenario].get(camp)
            paper_txt = f"{paper[0]} / {paper[1]}" if paper else "–"
            out.append(f"| {camp} | {acc} | {dA} | {wg} | {d_acc} | {d_dA} | {d_wg} "
                       f"| {int(r['n_seeds'])} "
                       f"| {paper_txt} |")
        out.append("")
    return "\n".join(out)


def main(out_dir: str, *run_dirs: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rounds = load_rounds(list(run_dirs))
    rounds = rounds[[c for c in KEEP if c in rounds.columns]]
    rounds = rounds.sort_values(["scenario", "campaign", "seed", "round"])
    rounds.to_csv(out / "rounds_all.csv", index=False)
    rounds = pd.read_csv(out / "rounds_all.csv")
    paired_differences(rounds, baseline="uniform", metrics=METRICS).to_csv(
        out / "paired.csv", index=False)
    (out / "table1.md").write_text(table_markdown(rounds))
    plot_paired_differences(paired_rounds(rounds, baseline="uniform"),
                            out / "paired_differences.png")
    print((out / "table1.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
