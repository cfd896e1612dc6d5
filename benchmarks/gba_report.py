"""GBA on Colored-MNIST (Kurmi et al. 2022, Tables 1/4 and Fig. 1) from runs of
``jobs/gba_colored_mnist.yaml``, paired over seeds.

    .venv/bin/python benchmarks/gba_report.py OUT_DIR RUN_DIR [RUN_DIR ...]

Each run directory holds one skew (``dataset.skew`` of its ``job.yaml``) and any chunk of
seeds; a skew may be spread over several run directories. Writes into OUT_DIR:

* ``rounds_all.csv``: every per-seed record (``scenario`` = ``skew_0.95`` etc., no machine
  paths); everything below is recomputed from it alone (``tests/test_committed_experiments.py``);
* ``paired.csv``: per skew, the paired per-seed differences with 95 % bootstrap CIs of
  :data:`COMPARISONS` (campaign − reference) for :data:`METRICS`;
* ``gba_table.md``: per skew, the bias table (aligned / conflicting / mean / gap / test
  accuracy, the discriminator's and a linear probe's colour accuracy on aligned vs conflicting
  rows, as in the paper's Fig. 1) and the paired comparisons, with the paper's Table 4 beside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml

from rayfal.report import paired_differences
from rayfal.report.load import load_rounds

#: (campaign, reference): the paper's claims (GBA vs vanilla and vs adversarial training), and
#: the ablations of GBA's open choices against the GBA they change
COMPARISONS: list[tuple[str, str]] = [
    ("gradient_reversal_0.1", "vanilla"),
    ("gba_0.1", "vanilla"),
    ("gba_0.1", "gradient_reversal_0.1"),
    ("gba_0.1_rescale", "gba_0.1"),
    ("gba_0.1_test_time_mask", "gba_0.1"),
    ("gradient_reversal_1_ganin", "vanilla"),
    ("gba_1_ganin", "vanilla"),
    ("gba_1_ganin", "gradient_reversal_1_ganin"),
]
METRICS = ("accuracy", "acc_bias_conflicting", "bias_gap")
ORDER = ["vanilla", "gradient_reversal_0.1", "gba_0.1", "gba_0.1_rescale",
         "gba_0.1_test_time_mask", "gradient_reversal_1_ganin", "gba_1_ganin",
         "gradient_reversal", "gba"]
#: Table 4 of the paper (Colored-MNIST test accuracy, %): vanilla / adversarial / with GBA
PAPER_TABLE4 = {"skew_0.95": {"vanilla": 77.63, "gradient_reversal_0.1": 80.35, "gba_0.1": 87.92},
                "skew_0.98": {"vanilla": 62.29, "gradient_reversal_0.1": 64.83, "gba_0.1": 79.11}}
COLUMNS = {  # column of rounds_all.csv -> table header
    "acc_bias_aligned": "Aligned", "acc_bias_conflicting": "Conflicting",
    "acc_bias_mean": "Mean", "bias_gap": "Bias gap ↓", "accuracy": "Test acc.",
    "disc_acc_bias_aligned": "D colour acc. aligned",
    "disc_acc_bias_conflicting": "D colour acc. conflicting",
    "probe_acc_bias_aligned": "Probe colour acc. aligned",
    "probe_acc_bias_conflicting": "Probe colour acc. conflicting",
}
KEEP = ["scenario", "campaign", "strategy", "mode", "seed", "round", "n_labelled",
        "frac_labelled", "accuracy", "predictive_parity", "worst_group_accuracy", "nll",
        *[c for c in COLUMNS if c != "accuracy"], "train_seconds", "train_loss"]


def load(run_dirs: list[str]) -> pd.DataFrame:
    """Every run's records, ``scenario`` replaced by its skew (``skew_0.95``)."""
    frames = []
    for run_dir in run_dirs:
        job = yaml.safe_load((Path(run_dir) / "job.yaml").read_text())
        df = load_rounds([run_dir])
        df["scenario"] = f"skew_{float(job['dataset']['skew']):.2f}"
        frames.append(df[[c for c in KEEP if c in df.columns]])
    out = pd.concat(frames, ignore_index=True)
    dup = out.duplicated(["scenario", "campaign", "seed", "round"])
    if dup.any():
        raise ValueError(f"a (skew, campaign, seed, round) is in two run dirs: "
                         f"{out[dup].iloc[0][['scenario', 'campaign', 'seed']].to_dict()}")
    return out.sort_values(["scenario", "campaign", "seed", "round"]).reset_index(drop=True)


def paired(rounds: pd.DataFrame) -> pd.DataFrame:
    """:data:`COMPARISONS` × :data:`METRICS` per skew (seeds paired; last round)."""
    rows = []
    for campaign, ref in COMPARISONS:
        sub = rounds[rounds["campaign"].isin([campaign, ref])]
        if not {campaign, ref} <= set(sub["campaign"]):
            continue
        for _, one in sub.groupby("scenario"):
            if not {campaign, ref} <= set(one["campaign"]):
                continue
            diff = paired_differences(one, baseline=ref, metrics=METRICS)
            rows.append(diff[diff["campaign"] == campaign].assign(reference=ref))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _pm(values: pd.Series) -> str:
    v = values.dropna() * 100
    if v.empty:
        return "–"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def _ci(row: pd.Series) -> str:
    star = " *" if row["ci_lo"] > 0 or row["ci_hi"] < 0 else ""
    return (f"{100 * row['mean_diff']:+.2f} [{100 * row['ci_lo']:+.2f}, "
            f"{100 * row['ci_hi']:+.2f}]{star}")


def table_markdown(rounds: pd.DataFrame) -> str:
    """Per skew: the bias table (mean ± std over seeds) and the paired comparisons."""
    diffs = paired(rounds)
    last = rounds.sort_values("round").groupby(["scenario", "campaign", "seed"]).tail(1)
    out = []
    for scenario, sub in last.groupby("scenario"):
        out.append(f"### {scenario.replace('skew_', '')} skew\n")
        cols = [c for c in COLUMNS if c in sub.columns]
        out.append("| Campaign | " + " | ".join(f"{COLUMNS[c]} (%)" for c in cols)
                   + " | Seeds | Paper test acc. (%) |")
        out.append("|:---|" + "---:|" * (len(cols) + 2))
        for camp in [c for c in ORDER if c in set(sub["campaign"])]:
            one = sub[sub["campaign"] == camp]
            paper = PAPER_TABLE4.get(scenario, {}).get(camp)
            out.append(f"| {camp} | " + " | ".join(_pm(one[c]) for c in cols)
                       + f" | {one['seed'].nunique()} | {paper if paper else '–'} |")
        out.append("")
        d = diffs[diffs["scenario"] == scenario] if len(diffs) else diffs
        if len(d):
            out.append("| Comparison | " + " | ".join(
                f"Δ {COLUMNS[m]} [95% CI]" for m in METRICS) + " | Seeds |")
            out.append("|:---|" + "---:|" * (len(METRICS) + 1))
            for campaign, ref in COMPARISONS:
                one = d[(d["campaign"] == campaign) & (d["reference"] == ref)]
                if one.empty:
                    continue
                cells = [_ci(one[one["metric"] == m].iloc[0]) for m in METRICS]
                out.append(f"| {campaign} − {ref} | " + " | ".join(cells)
                           + f" | {int(one['n_seeds'].min())} |")
            out.append("")
    return "\n".join(out)


def main(out_dir: str, *run_dirs: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load(list(run_dirs)).to_csv(out / "rounds_all.csv", index=False)
    rounds = pd.read_csv(out / "rounds_all.csv")
    paired(rounds).to_csv(out / "paired.csv", index=False)
    (out / "gba_table.md").write_text(table_markdown(rounds))
    print((out / "gba_table.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
