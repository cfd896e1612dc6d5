"""PANDA's Adult comparison (Sharaf et al. 2022, Figures 1-2) from runs of jobs/adult_panda.yaml.

    .venv/bin/python benchmarks/adult_panda_report.py RUN_DIR [RUN_DIR ...] [--out OUT_DIR]

Several run directories (the same job split over processes, e.g. the baselines in one and
PANDA in another, with the same seeds and ``dataset.per_seed``) are merged. Writes into
OUT_DIR (default docs/experiments/adult_panda), commit-ready (no machine paths inside):

* ``rounds.csv``: every campaign, seed and round (budget, F-score, Table-1 DP and EB, accuracy,
  labelled and query shares per group, z* of group-aware random, selection seconds);
* ``figure1.csv`` / ``figure1.md``: the final budget, mean ± std over seeds, and the paired
  difference of each method minus random over seeds with its 95% percentile-bootstrap CI
  (:func:`rayfal.report.paired.bootstrap_ci`, 10,000 resamples, seed 0) — recomputed from
  ``rounds.csv`` by :func:`figure1_table` (tests/test_committed_experiments.py);
* ``figure1.png``: F-score vs demographic disparity, per-seed points and means;
  ``figure2.png``: budget vs F-score and vs DP;
* ``meta_training.csv`` (+ ``meta_training.png``): PANDA's meta-training log of every seed
  (loss, soft vs hard disparity, hard-pick and random-pick diagnostics, temperature, forward
  and proximal step sizes per step); ``heldout.csv``: policy vs random picks on held-out tasks
  of D, scored by the simulated and by the campaign learner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rayfal.report.paired import bootstrap_ci  # noqa: E402

METRICS = {"f_score": "F-score", "panda_dp": "demographic disparity",
           "error_rate_balance": "error-rate balance"}
ROUND_COLUMNS = ["campaign", "seed", "round", "n_labelled", "budget", "f_score", "panda_dp",
                 "error_rate_balance", "accuracy", "labelled_frac_group_0",
                 "labelled_frac_group_1", "query_frac_group_0", "query_frac_group_1",
                 "worst_group", "score_seconds"]
BASELINE = "random"


def merge_rounds(run_dirs: list[Path]) -> pd.DataFrame:
    df = pd.concat([pd.read_csv(d / "rounds.csv") for d in run_dirs], ignore_index=True)
    d0 = df.groupby(["campaign", "seed"])["n_labelled"].transform("min")
    df["budget"] = df["n_labelled"] - d0
    cols = [c for c in ROUND_COLUMNS if c in df.columns]
    return df[cols].sort_values(["campaign", "seed", "round"]).reset_index(drop=True)


def figure1_table(rounds: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Final budget: mean ± std over seeds and the paired (same seed) difference minus
    ``baseline`` with a 95% bootstrap CI, per method and metric."""
    final = rounds[rounds["budget"] == rounds["budget"].max()]
    base = final[final["campaign"] == baseline].set_index("seed")
    rows = []
    for c in dict.fromkeys(final["campaign"]):
        sub = final[final["campaign"] == c].set_index("seed")
        row: dict = {"method": c, "seeds": len(sub)}
        for m in METRICS:
            row[f"{m}_mean"] = sub[m].mean()
            row[f"{m}_std"] = sub[m].std(ddof=1)
            common = sub.index.intersection(base.index)
            diff = (sub.loc[common, m] - base.loc[common, m]).to_numpy()
            row[f"{m}_diff"], row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_ci(diff)
        row["labelled_frac_group_1"] = sub["labelled_frac_group_1"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_ci(r: pd.Series, m: str, baseline: str) -> str:
    if r["method"] == baseline:
        return "—"
    return f"{r[m + '_diff']:+.3f} [{r[m + '_lo']:+.3f}, {r[m + '_hi']:+.3f}]"


def _collect_panda(run_dirs: list[Path], name: str) -> pd.DataFrame | None:
    frames = []
    for d in run_dirs:
        for p in sorted((d / "panda").glob(f"policy-*/{name}")):
            meta = json.loads((p.parent / "policy.json").read_text())
            f = pd.read_csv(p)
            f.insert(0, "policy_seed", int(meta["settings"]["seed"]))
            frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/experiments/adult_panda"))
    args = ap.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rounds = merge_rounds(args.run_dirs)
    rounds.to_csv(out / "rounds.csv", index=False)
    tab = figure1_table(rounds)
    tab.to_csv(out / "figure1.csv", index=False)
    budget = int(rounds["budget"].max())
    lines = [f"Budget B = {budget} labels beyond D0; {int(tab['seeds'].max())} independent "
             f"seeds (own split, D0 and PANDA policy each); mean ± std over seeds; paired "
             f"difference minus {BASELINE} with a 95% bootstrap CI over seeds.", "",
             "| method | seeds | F-score | DP | EB | ΔF vs random | ΔDP vs random | "
             "ΔEB vs random | labelled share men |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for _, r in tab.iterrows():
        cells = [f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}" for m in METRICS]
        cis = [_fmt_ci(r, m, BASELINE) for m in METRICS]
        lines.append(f"| {r['method']} | {r['seeds']} | " + " | ".join(cells + cis)
                     + f" | {r['labelled_frac_group_1']:.2f} |")
    (out / "figure1.md").write_text("\n".join(lines) + "\n")

    final = rounds[rounds["budget"] == budget]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, m in zip(axes, ("panda_dp", "error_rate_balance"), strict=True):
        for i, c in enumerate(dict.fromkeys(final["campaign"])):
            sub = final[final["campaign"] == c]
            ax.scatter(sub[m], sub["f_score"], s=14, alpha=0.45, color=f"C{i}")
            ax.scatter(sub[m].mean(), sub["f_score"].mean(), s=90, marker="*", color=f"C{i}",
                       label=c, edgecolor="k")
        ax.axvline(0.04, ls=":", color="grey")
        ax.set_xlabel(METRICS[m] + " (Table 1)")
        ax.set_ylabel("F-score")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Adult, B = {budget}: per-seed points, stars = mean over seeds")
    fig.tight_layout()
    fig.savefig(out / "figure1.png", dpi=110)
    plt.close(fig)

    curves = rounds.groupby(["campaign", "budget"])[list(METRICS)].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, c in enumerate(dict.fromkeys(rounds["campaign"])):
        sub = curves[curves["campaign"] == c]
        axes[0].plot(sub["budget"], sub["f_score"], marker="o", label=c, color=f"C{i}")
        axes[1].plot(sub["budget"], sub["panda_dp"], marker="o", label=c, color=f"C{i}")
    axes[0].set_ylabel("F-score")
    axes[1].set_ylabel("demographic disparity")
    axes[1].axhline(0.04, ls=":", color="grey")
    for ax in axes:
        ax.set_xlabel("labels beyond D0")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figure2.png", dpi=110)
    plt.close(fig)

    log = _collect_panda(args.run_dirs, "meta_training.csv")
    if log is not None:
        log.to_csv(out / "meta_training.csv", index=False)
        keys = [("loss", "loss_hard_picks", "loss_random", "validation loss"),
                ("disparity", "disparity_hard_picks", "disparity_random", "DP"),
                ("temperature", None, None, "Gumbel temperature"),
                ("forward_moved", "prox_moved", None, "step size ||Δθ||")]
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
        for ax, (a, b, c, title) in zip(axes, keys, strict=True):
            g = log.groupby("step")
            ax.plot(g[a].mean(), label=f"{a} (soft picks)" if b else a)
            if b:
                ax.plot(g[b].mean(), label=b)
            if c:
                ax.plot(g[c].mean(), label=c)
            if a == "disparity":
                ax.axhline(0.04, ls=":", color="grey")
            ax.set_title(title + " (mean over seeds)")
            ax.set_xlabel("meta-step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "meta_training.png", dpi=100)
        plt.close(fig)
    held = _collect_panda(args.run_dirs, "heldout.csv")
    if held is not None:
        held.to_csv(out / "heldout.csv", index=False)
    print((out / "figure1.md").read_text())


if __name__ == "__main__":
    main()
