"""FRAL paper-shaped tables (Wu et al. 2023, Tables 1-3) from runs of jobs/fral_jin.yaml.

Usage: python benchmarks/fral_jin_tables.py RUN_DIR [RUN_DIR ...] [--out DIR]

Reads the round records of every run (``campaigns/*/seed_*/rounds/round_*.json``: works on a
run that is still going; any number of seed chunks) and writes into ``--out`` (default
``RUN_DIR/report`` of the first run):

* ``rounds_all.csv`` — every per-seed, per-round record, the published columns only (no machine
  paths, no row lists); everything below is recomputed from this file alone
  (:func:`render_from_csv`), so a reader can check it;
* ``paired.csv`` — per-seed paired differences after the last round (JIN − G-RAND, JIN − RAND,
  JIN − ENT, and the ablations S − JIN, R − JIN) of each Table 1 metric, with 95 % percentile
  bootstrap CIs over seeds (:func:`rayfal.report.paired.bootstrap_ci`, seeded);
* ``fral_tables.md`` — Table 1 (mean ± std over seeds; the paper's UTKFace row beside ours),
  the paired differences, Table 2 (selection compute), Table 3 (ablation; the paper's beside),
  the per-round summary (M_R robust/standard accuracy per group, M_S vs M_R clean accuracy,
  z*, JIN's diagnostics: share of picks in z*, Jaccard overlap with G-RAND's pick from the same
  state, Spearman of I_rob with M_R's confidence) and the queried share per group.

Conventions: "Initialization" = round 0 (the initial 20 %, the same labelled set and model for
every strategy of a seed); "after the last round" = each campaign's largest round. Pairs are
formed per seed; seeds lacking either side (or NaN values) are left out and ``n_seeds`` counts
the rest.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from rayfal.report.paired import bootstrap_ci

STRATEGY_NAMES = {"random": "RAND", "entropy": "ENT", "group_random": "G-RAND", "jin": "JIN",
                  "jin_std": "JIN (S only)", "jin_rob": "JIN (R only)"}
#: Table 1 metrics (M_R, after the last round): (column, label, higher is better)
TABLE1 = [("F_std", "Std worst", True), ("std_disparity", "Std disparity", False),
          ("std_group_avg", "Std grp. avg", True), ("F_rob", "Rob worst", True),
          ("rob_disparity", "Rob disparity", False), ("rob_group_avg", "Rob grp. avg", True)]
#: (campaign, baseline) pairs of the paired-difference table
PAIRS = [("jin", "group_random"), ("jin", "random"), ("jin", "entropy"), ("jin_std", "jin"),
         ("jin_rob", "jin")]
#: the paper's Table 1, UTKFace (4-class, two groups; 3 seeds), in %: the six Table 1 metrics
PAPER_T1 = {
    "init": ("67.58±0.30", "5.38±0.25", "70.27±0.31", "52.98±0.08", "7.26±0.31", "56.61±0.06"),
    "random": ("70.57±0.21", "4.32±0.03", "72.73±0.21", "55.63±0.06", "7.71±0.02", "59.49±0.07"),
    "entropy": ("74.10±0.79", "2.45±0.48", "75.33±0.56", "56.94±0.64", "6.60±0.33",
                "60.25±0.56"),
    "group_random": ("72.37±0.32", "2.15±0.26", "73.45±0.23", "56.60±0.04", "6.07±0.33",
                     "59.63±0.13"),
    "jin": ("75.07±0.53", "1.35±0.09", "75.74±0.49", "57.39±0.10", "5.69±0.30", "60.10±0.25"),
}
#: the paper's Table 3 (UTKFace ablation), in %: std worst, std avg, rob worst, rob avg
PAPER_T3 = {"jin_std": ("75.18±0.47", "75.84±0.27", "56.53±0.08", "59.30±0.11"),
            "jin_rob": ("72.89±0.30", "74.31±0.26", "56.89±0.19", "59.94±0.04"),
            "jin": ("75.07±0.53", "75.74±0.49", "57.39±0.10", "60.10±0.25")}
#: published columns of rounds_all.csv (plus the per-group patterns below)
KEEP = ["campaign", "strategy", "seed", "round", "n_labelled", "n_queried", "accuracy",
        "F_std", "std_disparity", "std_group_avg", "F_rob", "rob_disparity", "rob_group_avg",
        "robust_accuracy", "worst_group", "worst_group_source", "mr_std_accuracy",
        "ms_std_accuracy", "jin_rows_scored", "jin_I_std_mean", "jin_I_std_std",
        "jin_I_rob_mean", "jin_I_rob_std", "jin_spearman_rob_conf", "jin_spearman_std_conf",
        "jin_pick_share_zstar", "grand_pick_share_zstar", "jin_grand_jaccard",
        "jin_grand_jaccard_chance", "jin_pick_conf_r_mean", "jin_scored_conf_r_mean",
        "train_seconds", "score_seconds", "ms_train_seconds", "ms_eval_seconds", "eval_seconds"]
KEEP_PATTERNS = [r"std_acc_group_-?\d+", r"rob_acc_group_-?\d+", r"val_rob_acc_group_-?\d+",
                 r"val_acc_group_-?\d+", r"ms_std_acc_group_-?\d+", r"query_frac_group_-?\d+",
                 r"acc_group_-?\d+"]


def load_rounds(run_dirs: list[Path]) -> pd.DataFrame:
    """Every committed round record of the runs (row lists dropped)."""
    recs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "campaigns"
        files = sorted(path.glob("*/seed_*/rounds/round_*.json"))
        if not files:
            raise FileNotFoundError(f"no round records under {path}: run jobs/fral_jin.yaml")
        recs += [{k: v for k, v in json.loads(p.read_text()).items()
                  if k not in ("selected", "selected_labels")} for p in files]
    df = pd.DataFrame(recs)
    need = {c for c, _, _ in TABLE1}
    missing = sorted(need - set(df.columns))
    if missing:
        raise KeyError(f"columns {missing} missing (run with evaluation.robust: true)")
    dup = df.duplicated(["campaign", "seed", "round"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} records repeat a (campaign, seed, round): the runs "
                         "overlap in seeds")
    return df


def published(df: pd.DataFrame) -> pd.DataFrame:
    """The published columns (:data:`KEEP` and the per-group patterns), sorted rows."""
    pats = [re.compile(p + "$") for p in KEEP_PATTERNS]
    cols = [c for c in KEEP if c in df.columns]
    cols += sorted(c for c in df.columns if c not in cols and any(p.match(c) for p in pats))
    return df[cols].sort_values(["campaign", "seed", "round"]).reset_index(drop=True)


def _campaigns(df: pd.DataFrame) -> list[str]:
    """Campaign names in the paper's order (known strategies first)."""
    names = list(df["campaign"].drop_duplicates())
    return sorted(names, key=lambda n: (list(STRATEGY_NAMES).index(n) if n in STRATEGY_NAMES
                                        else len(STRATEGY_NAMES), n))


def _label(name: str) -> str:
    return STRATEGY_NAMES.get(name, name)


def _fmt(values: pd.Series, scale: float = 100.0) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float) * scale
    if len(v) == 0:
        return "–"
    sd = f"{np.std(v, ddof=1):.2f}" if len(v) > 1 else "–"
    return f"{np.mean(v):.2f} ± {sd}"


def _last(df: pd.DataFrame) -> pd.DataFrame:
    """Each (campaign, seed)'s last round."""
    idx = df.groupby(["campaign", "seed"])["round"].idxmax()
    return df.loc[idx]


def table1(df: pd.DataFrame) -> str:
    cols = [c for c, _, _ in TABLE1]
    head = ("| Method | " + " | ".join(f"{lab} ({'↑' if up else '↓'})" for _, lab, up in TABLE1)
            + " | Seeds | Paper (UTKFace): " + " / ".join(lab for _, lab, _ in TABLE1) + " |")
    lines = [head, "|:---|" + "---:|" * 7 + ":---|"]
    init = df[df["round"] == 0].drop_duplicates("seed")
    lines.append("| Initialization | " + " | ".join(_fmt(init[c]) for c in cols)
                 + f" | {init['seed'].nunique()} | {' / '.join(PAPER_T1['init'])} |")
    last = _last(df)
    for name in _campaigns(df):
        d = last[last["campaign"] == name]
        paper = " / ".join(PAPER_T1[name]) if name in PAPER_T1 else "–"
        lines.append(f"| {_label(name)} | " + " | ".join(_fmt(d[c]) for c in cols)
                     + f" | {d['seed'].nunique()} | {paper} |")
    return "\n".join(lines)


def paired(df: pd.DataFrame, pairs: list[tuple[str, str]] = PAIRS, *, n_boot: int = 10_000,
           seed: int = 0) -> pd.DataFrame:
    """Per-seed differences ``campaign − baseline`` of every Table 1 metric after the last
    round: columns ``campaign, baseline, metric, n_seeds, campaign_mean, baseline_mean,
    mean_diff, ci_lo, ci_hi, better`` (``better``: the CI excludes 0 on the good side for the
    campaign, ``worse`` on the other, else ``n.s.``)."""
    last = _last(df)
    rows = []
    for camp, base in pairs:
        a = last[last["campaign"] == camp].set_index("seed")
        b = last[last["campaign"] == base].set_index("seed")
        if a.empty or b.empty:
            continue
        for col, _, up in TABLE1:
            both = pd.concat([pd.to_numeric(a[col], errors="coerce").rename("a"),
                              pd.to_numeric(b[col], errors="coerce").rename("b")],
                             axis=1, join="inner").dropna()
            d = (both["a"] - both["b"]).to_numpy(float)
            mean, lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
            good = (lo > 0) if up else (hi < 0)
            bad = (hi < 0) if up else (lo > 0)
            rows.append({"campaign": camp, "baseline": base, "metric": col, "n_seeds": len(d),
                         "campaign_mean": float(both["a"].mean()) if len(d) else np.nan,
                         "baseline_mean": float(both["b"].mean()) if len(d) else np.nan,
                         "mean_diff": mean, "ci_lo": lo, "ci_hi": hi,
                         "better": "better" if good else "worse" if bad else "n.s."})
    return pd.DataFrame(rows, columns=["campaign", "baseline", "metric", "n_seeds",
                                       "campaign_mean", "baseline_mean", "mean_diff", "ci_lo",
                                       "ci_hi", "better"])


def paired_markdown(p: pd.DataFrame) -> str:
    """One row per pair, one cell per metric: ``Δ [95 % CI]`` in points, ``*`` when the CI
    excludes 0."""
    lines = ["| Difference | " + " | ".join(f"Δ {lab} ({'↑' if up else '↓'})"
                                            for _, lab, up in TABLE1) + " | Seeds |",
             "|:---|" + "---:|" * 7]
    for (camp, base), d in p.groupby(["campaign", "baseline"], sort=False):
        cells = []
        for col, _, _ in TABLE1:
            r = d[d["metric"] == col]
            if r.empty or not np.isfinite(r["mean_diff"].iloc[0]):
                cells.append("–")
                continue
            r = r.iloc[0]
            ci = ("" if not np.isfinite(r["ci_lo"]) else
                  f" [{100 * r['ci_lo']:+.2f}, {100 * r['ci_hi']:+.2f}]")
            star = " *" if r["better"] != "n.s." else ""
            cells.append(f"{100 * r['mean_diff']:+.2f}{ci}{star}")
        lines.append(f"| {_label(camp)} − {_label(base)} | " + " | ".join(cells)
                     + f" | {int(d['n_seeds'].max())} |")
    return "\n".join(lines)


def table2(df: pd.DataFrame) -> str:
    q = df[df["n_queried"] > 0] if "n_queried" in df else df[df["round"] > 0]
    lines = ["| Method | Scoring s/round | M_S training s/round | Selection total s/round "
             "| Selection total, all rounds (s) | M_R adv. training s/round |",
             "|:---|---:|---:|---:|---:|---:|"]
    for name in _campaigns(q):
        d = q[q["campaign"] == name]
        ms = d["ms_train_seconds"].fillna(0.0) if "ms_train_seconds" in d else 0.0 * d["round"]
        sel = d["score_seconds"] + ms
        per_seed_total = d.assign(sel=sel).groupby("seed")["sel"].sum().mean()
        lines.append(f"| {_label(name)} | {d['score_seconds'].mean():.1f} | {ms.mean():.1f} | "
                     f"{sel.mean():.1f} | {per_seed_total:.1f} | "
                     f"{d['train_seconds'].mean():.1f} |")
    return "\n".join(lines)


def table3(df: pd.DataFrame) -> str:
    last = _last(df)
    lines = ["| Terms | Std worst (↑) | Std avg (↑) | Rob worst (↑) | Rob avg (↑) | Seeds "
             "| Paper (UTKFace) |", "|:---|---:|---:|---:|---:|---:|:---|"]
    for name, label in (("jin_std", "S"), ("jin_rob", "R"), ("jin", "S+R")):
        d = last[last["campaign"] == name]
        if len(d):
            lines.append(f"| {label} | " + " | ".join(
                _fmt(d[c]) for c in ("F_std", "std_group_avg", "F_rob", "rob_group_avg"))
                + f" | {d['seed'].nunique()} | {' / '.join(PAPER_T3[name])} |")
    return "\n".join(lines)


def _groups(df: pd.DataFrame) -> list[int]:
    return sorted(int(m.group(1)) for c in df.columns
                  if (m := re.fullmatch(r"rob_acc_group_(-?\d+)", c)))


def per_round(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (campaign, round): M_R robust and standard accuracy per group, M_S
    and M_R clean accuracy, the share of seeds whose z* is each group, and JIN's diagnostics
    (NaN where a campaign does not record them)."""
    groups = _groups(df)
    cols = [f"rob_acc_group_{g}" for g in groups] + [f"std_acc_group_{g}" for g in groups]
    cols += [c for c in ("mr_std_accuracy", "ms_std_accuracy", "jin_pick_share_zstar",
                         "jin_grand_jaccard", "jin_grand_jaccard_chance",
                         "jin_spearman_rob_conf", "jin_spearman_std_conf")
             if c in df.columns]
    d = df.copy()
    for g in groups:
        z = pd.to_numeric(d["worst_group"], errors="coerce") if "worst_group" in d else np.nan
        d[f"zstar_is_{g}"] = np.where(pd.isna(z), np.nan, (z == g).astype(float))
        cols.append(f"zstar_is_{g}")
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce")
    out = d.groupby(["campaign", "round"], sort=False)[cols].mean()
    out["n_seeds"] = d.groupby(["campaign", "round"], sort=False)["seed"].nunique()
    out = out.reset_index()
    order = {n: i for i, n in enumerate(_campaigns(df))}
    return out.sort_values(["campaign", "round"], key=lambda s: s.map(order)
                           if s.name == "campaign" else s).reset_index(drop=True)


def per_round_markdown(pr: pd.DataFrame) -> str:
    groups = sorted(int(c.rsplit("_", 1)[1]) for c in pr.columns if c.startswith("rob_acc_group_"))
    spec = ([(f"rob_acc_group_{g}", f"Rob g{g}", 100) for g in groups]
            + [(f"std_acc_group_{g}", f"Std g{g}", 100) for g in groups]
            + [("mr_std_accuracy", "M_R clean", 100), ("ms_std_accuracy", "M_S clean", 100)]
            + [(f"zstar_is_{g}", f"z*={g}", 1) for g in groups]
            + [("jin_pick_share_zstar", "picks in z*", 1),
               ("jin_grand_jaccard", "Jaccard vs G-RAND", 1),
               ("jin_grand_jaccard_chance", "(chance)", 1),
               ("jin_spearman_rob_conf", "ρ(I_rob, conf)", 1)])
    spec = [s for s in spec if s[0] in pr.columns]
    lines = ["| Method | Round | " + " | ".join(lab for _, lab, _ in spec) + " | Seeds |",
             "|:---|---:|" + "---:|" * (len(spec) + 1)]
    for _, r in pr.iterrows():
        cells = []
        for col, _, scale in spec:
            v = r[col]
            cells.append("–" if not np.isfinite(v) else
                         f"{100 * v:.1f}" if scale == 100 else f"{v:.2f}")
        lines.append(f"| {_label(r['campaign'])} | {int(r['round'])} | " + " | ".join(cells)
                     + f" | {int(r['n_seeds'])} |")
    return "\n".join(lines)


def query_share(df: pd.DataFrame) -> str:
    """Share of queried rows per group (per strategy, mean over all query rounds)."""
    q = df[df["n_queried"] > 0]
    cols = sorted(c for c in q.columns if c.startswith("query_frac_group_"))
    lines = ["| Method | " + " | ".join(c.replace("query_frac_", "") for c in cols)
             + " | z* (most frequent) |", "|:---|" + "---:|" * (len(cols) + 1)]
    for name in _campaigns(q):
        d = q[q["campaign"] == name]
        z = (d["worst_group"].mode().iloc[0] if "worst_group" in d
             and d["worst_group"].notna().any() else "–")
        lines.append(f"| {_label(name)} | " + " | ".join(f"{d[c].mean():.2f}" for c in cols)
                     + f" | {z} |")
    return "\n".join(lines)


def render(df: pd.DataFrame) -> str:
    """Every table (Markdown) from the published round records."""
    n = df["seed"].nunique()
    return "\n\n".join([
        f"Table 1 (M_R accuracy in %, mean ± std over {n} seeds, after the last round; the "
        "paper's UTKFace numbers, 3 seeds, on the right)",
        table1(df),
        "Paired differences after the last round (points; mean of per-seed differences "
        "[95% percentile-bootstrap CI over seeds]; * = the CI excludes 0)",
        paired_markdown(paired(df)),
        "Table 2 (selection compute, seconds; mean over seeds and the query rounds)",
        table2(df),
        "Table 3 (JIN ablation, after the last round; paper: std worst / std avg / rob worst / "
        "rob avg)",
        table3(df),
        "Per round (mean over seeds): M_R robust and standard accuracy per group (%), M_R and "
        "M_S clean test accuracy (%), share of seeds with z* = g, JIN's share of picks in z*, "
        "Jaccard overlap with G-RAND's pick from the same state (and its chance level for two "
        "uniform picks), Spearman ρ of I_rob with M_R's confidence over the scored rows",
        per_round_markdown(per_round(df)),
        "Queried rows per group (mean share over query rounds)",
        query_share(df),
    ]) + "\n"


def render_from_csv(csv: Path) -> str:
    """The tables recomputed from a ``rounds_all.csv`` alone."""
    return render(pd.read_csv(csv))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: RUN_DIR/report of the first run)")
    args = ap.parse_args(argv)
    out = args.out or args.run_dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    published(load_rounds(args.run_dirs)).to_csv(out / "rounds_all.csv", index=False)
    df = pd.read_csv(out / "rounds_all.csv")
    paired(df).to_csv(out / "paired.csv", index=False)
    per_round(df).to_csv(out / "per_round.csv", index=False)
    text = render(df)
    (out / "fral_tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
