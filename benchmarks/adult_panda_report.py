"""Figures 1-2 of PANDA (Sharaf et al. 2022) from a run of jobs/adult_panda.yaml.

    .venv/bin/python benchmarks/adult_panda_report.py RUN_DIR [OUT_DIR]

Writes into OUT_DIR (default docs/experiments/adult_panda): ``figure1.csv``/``figure1.md``
(F-score, demographic disparity and error-rate balance at the final budget, mean ± std over
seeds, plus mean selection seconds per round), ``figure1.png`` (the two scatter plots),
``figure2.png`` (budget vs F-score and vs demographic disparity) and ``curves.csv``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = {"f_score": "F-score", "panda_dp": "Demographic disparity (Table 1)",
           "error_rate_balance": "Error-rate balance (Table 1)"}
GROUP_AWARE = {"group_random", "fal", "fairlearn", "fairlearn_al", "panda"}


def _meta_train_seconds(run_dir: Path) -> float | None:
    for p in sorted(run_dir.glob("campaigns/panda/seed_*/round_000/selection_info.json")):
        info = json.loads(p.read_text())
        if "meta_train_seconds" in info:
            return float(info["meta_train_seconds"])
    return None


def main(run_dir: str, out_dir: str = "docs/experiments/adult_panda") -> None:
    run, out = Path(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(run / "rounds.csv")
    d0 = df["n_labelled"].min()
    df["budget"] = df["n_labelled"] - d0
    order = list(dict.fromkeys(df["campaign"]))
    final = df[df["budget"] == df["budget"].max()]
    rows = []
    for c in order:
        sub = final[final["campaign"] == c]
        queried = df[(df["campaign"] == c) & (df["n_queried"] > 0)]
        row = {"method": c, "seeds": sub["seed"].nunique()}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = sub[m].mean(), sub[m].std(ddof=1)
        row["select_seconds_per_round"] = queried["score_seconds"].mean()
        fair_fit = df.loc[df["campaign"] == c].get("fair_fit_seconds")
        row["fair_fit_seconds_per_round"] = (float(fair_fit.mean()) if fair_fit is not None
                                             and fair_fit.notna().any() else 0.0)
        row["train_eval_seconds_per_round"] = (df.loc[df["campaign"] == c, "train_seconds"]
                                               + df.loc[df["campaign"] == c, "eval_seconds"]).mean()
        rows.append(row)
    tab = pd.DataFrame(rows)
    tab.to_csv(out / "figure1.csv", index=False)
    lines = [f"Budget B = {int(final['budget'].max())} labels beyond D0 ({int(d0)} rows); "
             "mean ± std over seeds; test set of the PANDA split.", "",
             "| method | seeds | F-score | demographic disparity | error-rate balance | "
             "selection s/round | fairlearn fit s/round |", "|:--|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['seeds']} | "
                     + " | ".join(f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}" for m in METRICS)
                     + f" | {r['select_seconds_per_round']:.2f} | "
                     f"{r['fair_fit_seconds_per_round']:.1f} |")
    mt = _meta_train_seconds(run)
    if mt is not None:
        lines += ["", f"PANDA meta-training (once, before round 0, not in the selection time): "
                  f"{mt:.0f} s."]
    (out / "figure1.md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = "os^vDPX*<>"
    for ax, m in zip(axes, ("panda_dp", "error_rate_balance"), strict=True):
        for i, r in enumerate(rows):
            eb = ax.errorbar(r[f"{m}_mean"], r["f_score_mean"], xerr=r[f"{m}_std"],
                             yerr=r["f_score_std"], fmt=markers[i % len(markers)], capsize=3,
                             label=r["method"], ms=7, alpha=0.85)
            if r["method"] not in GROUP_AWARE:  # dotted bars: parity/group-unaware methods
                for line in eb[2]:
                    line.set_linestyle(":")
        ax.axvline(0.04, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(METRICS[m])
        ax.set_ylabel("F-score")
        ax.set_title(f"Adult, B = {int(final['budget'].max())}: upper-left is better")
    axes[1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out / "figure1.png", dpi=110)
    plt.close(fig)

    curves = (df.groupby(["campaign", "budget"], sort=False)[list(METRICS)]
              .agg(["mean", "std"]).reset_index())
    curves.columns = ["_".join(c).strip("_") for c in curves.columns]
    curves.to_csv(out / "curves.csv", index=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, m in zip(axes, ("f_score", "panda_dp"), strict=True):
        for c in order:
            sub = curves[curves["campaign"] == c]
            ls = "-" if c in GROUP_AWARE else ":"
            ax.errorbar(sub["budget"], sub[f"{m}_mean"], yerr=sub[f"{m}_std"], ls=ls,
                        marker="o", capsize=2, label=c)
        ax.set_xlabel("budget (labels queried beyond D0)")
        ax.set_ylabel(METRICS[m])
    axes[1].axhline(0.04, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figure2.png", dpi=110)
    plt.close(fig)
    print((out / "figure1.md").read_text())


if __name__ == "__main__":
    main(*sys.argv[1:])
