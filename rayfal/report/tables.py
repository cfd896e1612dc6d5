"""Table 1 style aggregation over seeds, its Markdown, and the selection/timing tables."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from .labels import NA, is_fraction, metric_label, scenario_label
from .load import group_keys, numeric, sort_groups

TIMING_COLUMNS = ("train_seconds", "eval_seconds", "score_seconds")
FRAC_TOL = 1e-9
#: GBA paper (Kurmi et al. 2022) Tables 1/4 columns, written when rounds.csv has them.
BIAS_METRICS: tuple[str, ...] = (
    "acc_bias_aligned",
    "acc_bias_conflicting",
    "acc_bias_mean",
    "bias_gap",
    "accuracy",
)


# --------------------------------------------------------------------------- Table 1


def common_frac(sub: pd.DataFrame) -> float:
    """The largest ``frac_labelled`` reached by every (campaign, seed) of ``sub``."""
    return float(sub.groupby(["campaign", "seed"], sort=False)["frac_labelled"].max().min())


def pick_rows(sub: pd.DataFrame, target: float, at_frac: float | None) -> pd.DataFrame:
    """Per (campaign, seed): the last round with ``frac_labelled <= target``.

    With ``at_frac`` given every (campaign, seed) must reach it (ValueError naming the campaign).
    """
    picked = []
    for (campaign, seed), runs in sub.groupby(["campaign", "seed"], sort=False):
        runs = runs.dropna(subset=["frac_labelled"])
        reached = runs["frac_labelled"].max() if len(runs) else float("nan")
        if at_frac is not None and not reached >= at_frac - FRAC_TOL:
            raise ValueError(
                f"campaign {campaign!r} (scenario {sub['scenario'].iloc[0]!r}, seed {seed}) never "
                f"reaches frac_labelled {at_frac:g}; it stops at {reached:g}"
            )
        ok = runs[runs["frac_labelled"] <= target + FRAC_TOL]
        if ok.empty:
            raise ValueError(
                f"campaign {campaign!r} (scenario {sub['scenario'].iloc[0]!r}, seed {seed}) has no "
                f"round with frac_labelled <= {target:g}; its first is {runs['frac_labelled'].min():g}"
            )
        picked.append(ok.loc[ok["round"].idxmax()])
    return pd.DataFrame(picked)


def pick_table_rows(sub: pd.DataFrame, at_frac: float | None) -> pd.DataFrame:
    """The rows of one scenario that :func:`table1` aggregates (one per campaign and seed)."""
    target = common_frac(sub) if at_frac is None else float(at_frac)
    return pick_rows(sub, target, at_frac)


def table1(
    rounds: pd.DataFrame,
    *,
    at_frac: float | None = None,
    metrics: Iterable[str] = ("accuracy", "predictive_parity", "worst_group_accuracy"),
) -> pd.DataFrame:
    """The paper's Table 1: mean and std over seeds of each metric at one labelled fraction.

    ``at_frac=None`` uses, per scenario, the largest ``frac_labelled`` reached by every seed of
    every campaign; otherwise each (campaign, seed) contributes its last round with
    ``frac_labelled <= at_frac`` and must reach ``at_frac`` (ValueError naming the campaign
    if not). Returns columns ``scenario, campaign, frac_labelled, n_labelled, n_seeds,
    <metric>_mean, <metric>_std`` (``frac_labelled``/``n_labelled``: mean of the chosen rows).
    """
    metrics = list(metrics)
    missing = [m for m in metrics if m not in rounds.columns]
    if missing:
        raise ValueError(f"rounds lack metric column(s): {', '.join(missing)}")
    out = []
    for scenario, sub in rounds.groupby("scenario", sort=False):
        picked = pick_table_rows(sub, at_frac)
        for campaign, rows in picked.groupby("campaign", sort=False):
            rec: dict[str, object] = {
                "scenario": scenario,
                "campaign": campaign,
                "frac_labelled": float(rows["frac_labelled"].mean()),
                "n_labelled": float(rows["n_labelled"].mean()),
                "n_seeds": int(rows["seed"].nunique()),
            }
            for m in metrics:
                vals = pd.to_numeric(rows[m], errors="coerce")
                rec[f"{m}_mean"] = float(vals.mean())
                rec[f"{m}_std"] = float(vals.std(ddof=1))
            out.append(rec)
    cols = ["scenario", "campaign", "frac_labelled", "n_labelled", "n_seeds"]
    cols += [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    return pd.DataFrame(out, columns=cols)


def fmt(value: float, scale: float, digits: int) -> str:
    """``value * scale`` with ``digits`` decimals, or ``–`` when not finite."""
    return NA if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def frac_text(fracs: pd.Series) -> str:
    """``20%`` or, when the rows differ, ``15–20%``."""
    lo, hi = float(fracs.min()), float(fracs.max())
    if hi - lo <= 1e-6:
        return f"{100 * hi:.4g}%"
    return f"{100 * lo:.4g}–{100 * hi:.4g}%"


def scale_digits(metric: str, percent: bool) -> tuple[float, int]:
    """Scale and decimals of a metric's Markdown cells."""
    if percent and is_fraction(metric):
        return 100.0, 2
    return 1.0, 2 if is_fraction(metric) else 3


def format_table1(table: pd.DataFrame, *, percent: bool = True) -> str:
    """Markdown like the paper's Table 1: one section per scenario (labelled fraction in the
    heading), one row per campaign, ``mean ± std`` cells; fraction metrics × 100 when
    ``percent``. NaN (e.g. the std of a single seed) is shown as ``–``."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    lines: list[str] = []
    for scenario, sub in table.groupby("scenario", sort=False):
        heading = f"### {scenario_label(scenario)} @ {frac_text(sub['frac_labelled'])} labelled"
        if "n_labelled" in sub and sub["n_labelled"].nunique() == 1:
            heading += f" ({int(round(float(sub['n_labelled'].iloc[0])))} labels)"
        header = ["Campaign"]
        for m in metrics:
            pct = percent and is_fraction(m)
            header.append(metric_label(m) + (" (%)" if pct else ""))
        header.append("Seeds")
        lines += [heading, "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        for _, row in sub.iterrows():
            cells = [str(row["campaign"]).replace("|", "\\|")]
            for m in metrics:
                scale, digits = scale_digits(m, percent)
                mean = fmt(row[f"{m}_mean"], scale, digits)
                std = fmt(row.get(f"{m}_std", float("nan")), scale, digits)
                cells.append(NA if mean == NA else f"{mean} ± {std}")
            cells.append(str(int(row["n_seeds"])))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Mean ± sample std (ddof=1) over seeds; – marks an undefined value (e.g. std of one seed)."
    )
    return "\n".join(lines) + "\n"


def format_bias_table(table: pd.DataFrame) -> str:
    """Markdown of :func:`table1` over :data:`BIAS_METRICS` in the GBA paper's Tables 1/4 layout
    (aligned, conflicting, mean, bias gap; plus overall test accuracy), in percent."""
    return format_table1(table, percent=True).replace(
        "Mean ± sample std",
        "Bias gap = aligned − conflicting accuracy (GBA paper); mean = their "
        "unweighted mean; accuracy = all test rows.\nMean ± sample std",
    )


# --------------------------------------------------------------------------- other tables


def _first_valid(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.iloc[0]) if len(s) else np.nan


def selection_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Selection audit per (scenario, campaign, group), averaged over seeds.

    ``query_share``: share of all queried labels that fell in the group (weighted by
    ``n_queried`` when present); ``pool_share_initial``: the group's share of the unlabelled pool
    before the first query; ``labelled_share_final``: its share of the last labelled set;
    ``selection_ratio``: mean over queried rounds of query share / pool share (< 1 means the
    strategy selects against the group). Missing sources give NaN columns.
    """
    groups = sort_groups(
        set(group_keys(rounds, "query_frac_group_"))
        | set(group_keys(rounds, "pool_frac_group_"))
        | set(group_keys(rounds, "labelled_frac_group_"))
    )
    cols = [
        "scenario",
        "campaign",
        "group",
        "n_seeds",
        "query_share",
        "pool_share_initial",
        "labelled_share_final",
        "selection_ratio",
    ]
    out = []
    for (scenario, campaign), sub in rounds.groupby(["scenario", "campaign"], sort=False):
        for g in groups:
            per_seed = []
            for _, run in sub.sort_values("round").groupby("seed", sort=False):
                q = numeric(run, f"query_frac_group_{g}")
                p = numeric(run, f"pool_frac_group_{g}")
                lab = numeric(run, f"labelled_frac_group_{g}")
                w = numeric(run, "n_queried") if "n_queried" in run else pd.Series(1.0, run.index)
                ok = q.notna() & w.notna() & (w > 0)
                query_share = float((q[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else np.nan
                ratio_ok = ok & p.notna() & (p > 0)
                ratio = float((q[ratio_ok] / p[ratio_ok]).mean()) if ratio_ok.any() else np.nan
                per_seed.append((query_share, _first_valid(p), _first_valid(lab[::-1]), ratio))
            arr = np.array(per_seed, dtype=float)
            with np.errstate(all="ignore"):
                means = [float(np.nanmean(c)) if np.isfinite(c).any() else np.nan for c in arr.T]
            out.append([scenario, campaign, g, len(per_seed), *means])
    return pd.DataFrame(out, columns=cols)


def timings_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per round of train/eval/score (and their sum) per (scenario, campaign)."""
    present = [c for c in TIMING_COLUMNS if c in rounds.columns]
    out = []
    for (scenario, campaign), sub in rounds.groupby(["scenario", "campaign"], sort=False):
        rec: dict[str, object] = {
            "scenario": scenario,
            "campaign": campaign,
            "n_seeds": int(sub["seed"].nunique()),
            "n_rounds": int(len(sub)),
        }
        for c in present:
            rec[f"{c}_mean"] = float(numeric(sub, c).mean())
        if present:
            total = sub[present].apply(pd.to_numeric, errors="coerce").sum(axis=1, min_count=1)
            rec["total_seconds_mean"] = float(total.mean())
        out.append(rec)
    return pd.DataFrame(out)
