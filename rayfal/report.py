"""Tables and PNG plots from run directories (Branchaud-Charron et al. 2021, Table 1, Figs. 1-3).

Every run directory holds a ``rounds.csv`` with one row per (campaign, seed, round); see
:data:`REQUIRED_COLUMNS` for the columns that must exist. All other columns are optional: a
missing metric leaves a note in its plot panel instead of failing, and unknown columns are
ignored. Groups are discovered from column names (``acc_group_<g>``, ``query_frac_group_<g>``...).

Conventions
-----------
* Aggregation is over seeds: ``mean`` and the sample standard deviation (``ddof=1``). With a
  single seed the std is NaN; NaN values are skipped by means/stds and shown as ``–``
  (en dash) in Markdown, e.g. ``91.66 ± –``.
* Curves are aggregated per round: x is the mean ``n_labelled`` of that round over seeds, the
  line the mean over seeds and the band ± 1 std over seeds (no band with one seed).
* Campaigns and scenarios keep their order of first appearance in ``rounds.csv``; a campaign
  keeps the same colour in every figure.
* Fraction metrics (accuracies, δA, parity differences, group shares) are plotted as percent
  and multiplied by 100 in Markdown when ``percent=True``; ``nll`` and BALD values never are.
* Figures are built on :class:`matplotlib.figure.Figure` (Agg canvas); pyplot's global state
  and backend are never touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

__all__ = [
    "REQUIRED_COLUMNS",
    "load_rounds",
    "table1",
    "format_table1",
    "selection_table",
    "timings_table",
    "plot_curves",
    "plot_epistemic_gap",
    "plot_selection_audit",
    "write_report",
]

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
TIMING_COLUMNS = ("train_seconds", "eval_seconds", "score_seconds")
FRAC_TOL = 1e-9
NA = "–"

METRIC_LABELS: dict[str, str] = {
    "predictive_parity": "Predictive parity δA",
    "accuracy": "Accuracy",
    "worst_group_accuracy": "Worst-group accuracy",
    "nll": "NLL",
    "demographic_parity_difference": "Demographic parity diff.",
    "equalized_odds_difference": "Equalized odds diff.",
    "epistemic_gap": "Epistemic-uncertainty gap",
    "acc_bias_aligned": "Bias-aligned acc.",
    "acc_bias_conflicting": "Bias-conflicting acc.",
    "acc_bias_mean": "Mean of aligned/conflicting acc.",
    "bias_gap": "Bias gap (aligned − conflicting)",
}
#: GBA paper (Kurmi et al. 2022) Tables 1/4 columns, written when rounds.csv has them.
BIAS_METRICS: tuple[str, ...] = (
    "acc_bias_aligned",
    "acc_bias_conflicting",
    "acc_bias_mean",
    "bias_gap",
    "accuracy",
)
_FRACTION_METRICS = {
    "accuracy",
    "predictive_parity",
    "worst_group_accuracy",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "frac_labelled",
    "acc_bias_aligned",
    "acc_bias_conflicting",
    "acc_bias_mean",
    "bias_gap",
}
_FRACTION_PREFIXES = ("acc_group_", "query_frac_group_", "pool_frac_group_", "labelled_frac_group_")
_AUDIT_SOURCES: tuple[tuple[str, str, str], ...] = (
    # (column prefix, legend label, line style)
    ("query_frac_group_", "queried batch", "-"),
    ("pool_frac_group_", "unlabelled pool", "--"),
    ("labelled_frac_group_", "labelled set", ":"),
)
_SOURCE_COLOURS = {
    "query_frac_group_": "C3",
    "pool_frac_group_": "0.45",
    "labelled_frac_group_": "C0",
}
_PANEL_W, _PANEL_H = 4.3, 3.1


# --------------------------------------------------------------------------- loading


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


def _groups(rounds: pd.DataFrame, prefix: str) -> list[str]:
    """Group keys ``g`` of the columns ``<prefix><g>``, numerically sorted when possible."""
    pat = re.compile(rf"^{re.escape(prefix)}(.+)$")
    keys = [m.group(1) for c in rounds.columns if (m := pat.match(str(c)))]
    return sorted(keys, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))


def _is_fraction(metric: str) -> bool:
    return metric in _FRACTION_METRICS or metric.startswith(_FRACTION_PREFIXES)


def _label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    for prefix, name in (("acc_group_", "Accuracy, group "), ("bald_group_", "Mean BALD, group ")):
        if metric.startswith(prefix):
            return name + metric[len(prefix) :]
    return metric.replace("_", " ").capitalize()


def _scenario_label(scenario: str) -> str:
    return str(scenario).replace("_", " ").capitalize()


def _has_values(rounds: pd.DataFrame, col: str) -> bool:
    return col in rounds.columns and bool(pd.to_numeric(rounds[col], errors="coerce").notna().any())


# --------------------------------------------------------------------------- Table 1


def _pick_rows(sub: pd.DataFrame, target: float, at_frac: float | None) -> pd.DataFrame:
    """Per (campaign, seed): the last round with ``frac_labelled <= target``."""
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
        if at_frac is None:
            target = float(
                sub.groupby(["campaign", "seed"], sort=False)["frac_labelled"].max().min()
            )
        else:
            target = float(at_frac)
        picked = _pick_rows(sub, target, at_frac)
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


def _fmt(value: float, scale: float, digits: int) -> str:
    return NA if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def _frac_text(fracs: pd.Series) -> str:
    lo, hi = float(fracs.min()), float(fracs.max())
    if hi - lo <= 1e-6:
        return f"{100 * hi:.4g}%"
    return f"{100 * lo:.4g}–{100 * hi:.4g}%"


def format_table1(table: pd.DataFrame, *, percent: bool = True) -> str:
    """Markdown like the paper's Table 1: one section per scenario (labelled fraction in the
    heading), one row per campaign, ``mean ± std`` cells; fraction metrics × 100 when
    ``percent``. NaN (e.g. the std of a single seed) is shown as ``–``."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    lines: list[str] = []
    for scenario, sub in table.groupby("scenario", sort=False):
        heading = f"### {_scenario_label(scenario)} @ {_frac_text(sub['frac_labelled'])} labelled"
        if "n_labelled" in sub and sub["n_labelled"].nunique() == 1:
            heading += f" ({int(round(float(sub['n_labelled'].iloc[0])))} labels)"
        header = ["Campaign"]
        for m in metrics:
            pct = percent and _is_fraction(m)
            header.append(_label(m) + (" (%)" if pct else ""))
        header.append("Seeds")
        lines += [heading, "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        for _, row in sub.iterrows():
            cells = [str(row["campaign"]).replace("|", "\\|")]
            for m in metrics:
                pct = percent and _is_fraction(m)
                scale, digits = (100.0, 2) if pct else (1.0, 2 if _is_fraction(m) else 3)
                mean = _fmt(row[f"{m}_mean"], scale, digits)
                std = _fmt(row.get(f"{m}_std", float("nan")), scale, digits)
                cells.append(NA if mean == NA else f"{mean} ± {std}")
            cells.append(str(int(row["n_seeds"])))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Mean ± sample std (ddof=1) over seeds; – marks an undefined value (e.g. std of one seed)."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- other tables


def selection_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Selection audit per (scenario, campaign, group), averaged over seeds.

    ``query_share``: share of all queried labels that fell in the group (weighted by
    ``n_queried`` when present); ``pool_share_initial``: the group's share of the unlabelled pool
    before the first query; ``labelled_share_final``: its share of the last labelled set;
    ``selection_ratio``: mean over queried rounds of query share / pool share (< 1 means the
    strategy selects against the group). Missing sources give NaN columns.
    """
    groups = sorted(
        set(_groups(rounds, "query_frac_group_"))
        | set(_groups(rounds, "pool_frac_group_"))
        | set(_groups(rounds, "labelled_frac_group_")),
        key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k),
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
                q = _num(run, f"query_frac_group_{g}")
                p = _num(run, f"pool_frac_group_{g}")
                lab = _num(run, f"labelled_frac_group_{g}")
                w = _num(run, "n_queried") if "n_queried" in run else pd.Series(1.0, run.index)
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


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _first_valid(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.iloc[0]) if len(s) else np.nan


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
            rec[f"{c}_mean"] = float(_num(sub, c).mean())
        if present:
            total = sub[present].apply(pd.to_numeric, errors="coerce").sum(axis=1, min_count=1)
            rec["total_seconds_mean"] = float(total.mean())
        out.append(rec)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- plotting helpers


def _campaign_colours(rounds: pd.DataFrame) -> dict[str, str]:
    return {c: f"C{i % 10}" for i, c in enumerate(pd.unique(rounds["campaign"]))}


def _over_seeds(sub: pd.DataFrame, col: str, x: str = "n_labelled") -> pd.DataFrame:
    """Per round: mean x, and mean/std over seeds of ``col``."""
    df = pd.DataFrame({"round": sub["round"], "x": _num(sub, x), "y": _num(sub, col)})
    g = df.groupby("round", sort=True)
    agg = pd.DataFrame({"x": g["x"].mean(), "mean": g["y"].mean(), "std": g["y"].std(ddof=1)})
    return agg.dropna(subset=["x"])


def _band(ax: Axes, agg: pd.DataFrame, *, colour: str, label: str, style: str = "-") -> None:
    agg = agg.dropna(subset=["mean"])
    if agg.empty:
        return
    marker = "o" if len(agg) <= 25 else None
    ax.plot(agg["x"], agg["mean"], style, color=colour, label=label, marker=marker, ms=3, lw=1.6)
    std = agg["std"].fillna(0.0)
    if (std > 0).any():
        lo, hi = agg["mean"] - std, agg["mean"] + std
        ax.fill_between(agg["x"], lo, hi, color=colour, alpha=0.18, linewidth=0)


def _note(ax: Axes, text: str) -> None:
    """Mark a panel whose data is missing."""
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9,
        color="0.4",
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _style_axis(ax: Axes, metric: str) -> None:
    if _is_fraction(metric):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def _rows(fig: Figure, n: int) -> list[SubFigure]:
    subs = fig.subfigures(n, 1, squeeze=False)
    return list(np.asarray(subs).ravel())


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=110, format="png")
    return out


def _figure_legend(fig: Figure, handles: list, labels: list[str], title: str | None = None) -> None:
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=len(labels) if len(labels) <= 7 else math.ceil(len(labels) / 2),
            fontsize=9,
            title=title,
            title_fontsize=9,
            frameon=False,
        )


def _campaign_handles(colours: dict[str, str]) -> tuple[list[Line2D], list[str]]:
    handles = [Line2D([], [], color=c, marker="o", ms=3, lw=1.6) for c in colours.values()]
    return handles, list(colours)


# --------------------------------------------------------------------------- figures


def plot_curves(
    rounds: pd.DataFrame,
    out_path: str | Path,
    *,
    metrics: Sequence[str] = ("predictive_parity", "accuracy", "worst_group_accuracy", "nll"),
) -> Path:
    """Figs. 2/3: one panel per metric (x = labels used), one line per campaign (mean over seeds,
    band ± 1 std), one figure row per scenario. Missing metrics leave a note in their panel."""
    scenarios = list(pd.unique(rounds["scenario"]))
    colours = _campaign_colours(rounds)
    fig = Figure(
        figsize=(_PANEL_W * len(metrics), _PANEL_H * len(scenarios) + 0.7), layout="constrained"
    )
    for sfig, scenario in zip(_rows(fig, len(scenarios)), scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        sfig.suptitle(_scenario_label(scenario), fontsize=12, fontweight="bold")
        axes = sfig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            ax.set_title(_label(metric), fontsize=10)
            if not _has_values(sub, metric):
                _note(ax, f"no '{metric}' values\nin rounds.csv")
                continue
            for campaign, runs in sub.groupby("campaign", sort=False):
                _band(ax, _over_seeds(runs, metric), colour=colours[campaign], label=campaign)
            ax.set_xlabel("Labelled examples", fontsize=9)
            ax.set_ylabel(
                _label(metric)
                + (" (lower is better)" if metric in ("predictive_parity", "nll") else ""),
                fontsize=9,
            )
            _style_axis(ax, metric)
    _figure_legend(fig, *_campaign_handles(colours), title="Campaign (mean ± 1 std over seeds)")
    return _save(fig, out_path)


def plot_epistemic_gap(rounds: pd.DataFrame, out_path: str | Path) -> Path:
    """Fig. 1: ``epistemic_gap`` (max − min group mean BALD on the test set) vs labels used, one
    line per campaign with a ± 1 std band over seeds, one panel per scenario."""
    scenarios = list(pd.unique(rounds["scenario"]))
    colours = _campaign_colours(rounds)
    fig = Figure(
        figsize=(max(_PANEL_W * len(scenarios), 6.0), _PANEL_H + 0.9), layout="constrained"
    )
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        ax.set_title(_scenario_label(scenario), fontsize=11)
        if not _has_values(sub, "epistemic_gap"):
            _note(ax, "no 'epistemic_gap' values\nin rounds.csv")
            continue
        for campaign, runs in sub.groupby("campaign", sort=False):
            _band(ax, _over_seeds(runs, "epistemic_gap"), colour=colours[campaign], label=campaign)
        ax.set_xlabel("Labelled examples", fontsize=9)
        ax.set_ylabel("Gap in mean BALD between groups", fontsize=9)
        _style_axis(ax, "epistemic_gap")
    fig.suptitle(
        "Epistemic-uncertainty gap between groups (max − min group mean BALD)", fontsize=11
    )
    _figure_legend(fig, *_campaign_handles(colours), title="Campaign (mean ± 1 std over seeds)")
    return _save(fig, out_path)


def _minority(sub: pd.DataFrame, groups: list[str]) -> str:
    """The group with the smallest share of the initial pool (ties → highest index)."""
    for prefix in ("pool_frac_group_", "labelled_frac_group_", "query_frac_group_"):
        first = sub[sub["round"] == sub["round"].min()]
        shares = {g: _num(first, f"{prefix}{g}").mean() for g in groups}
        shares = {g: v for g, v in shares.items() if np.isfinite(v)}
        if shares:
            low = min(shares.values())
            return [g for g in groups if g in shares and shares[g] <= low + 1e-9][-1]
    return groups[-1]


def plot_selection_audit(rounds: pd.DataFrame, out_path: str | Path) -> Path:
    """The essay's selection audit: per scenario (row) and campaign (panel), a group's share of
    the queried batch per round next to its share of the unlabelled pool and of the labelled
    set (mean over seeds, ± 1 std band). With 2 groups only the minority (smallest initial pool
    share) is drawn; otherwise every group (colour) × source (line style)."""
    scenarios = list(pd.unique(rounds["scenario"]))
    groups = sorted(
        {g for prefix, _, _ in _AUDIT_SOURCES for g in _groups(rounds, prefix)},
        key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k),
    )
    n_cols = max(int(rounds.groupby("scenario")["campaign"].nunique().max()), 1)
    if not groups:
        fig = Figure(figsize=(7.0, 2.5), layout="constrained")
        ax = fig.subplots()
        _note(
            ax,
            "no query_frac_group_* / pool_frac_group_* / labelled_frac_group_*\n"
            "columns in rounds.csv: nothing to audit",
        )
        return _save(fig, out_path)
    fig = Figure(
        figsize=(max(_PANEL_W * n_cols, 6.0), (_PANEL_H + 0.4) * len(scenarios) + 0.9),
        layout="constrained",
    )
    sources = [s for s in _AUDIT_SOURCES if _groups(rounds, s[0])]
    absent = [s[1] for s in _AUDIT_SOURCES if s not in sources]
    multi = len(groups) > 2
    for sfig, scenario in zip(_rows(fig, len(scenarios)), scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        shown = groups if multi else [_minority(sub, groups)]
        title = f"{_scenario_label(scenario)}: " + (
            "share of each group" if multi else f"share of group {shown[0]} (minority in pool)"
        )
        if absent:
            title += f"  [no data: {', '.join(absent)}]"
        sfig.suptitle(title, fontsize=11, fontweight="bold")
        campaigns = list(pd.unique(sub["campaign"]))
        axes = sfig.subplots(1, n_cols, squeeze=False, sharey=True)[0]
        for ax in axes[len(campaigns) :]:
            ax.set_visible(False)
        for ax, campaign in zip(axes, campaigns, strict=False):
            runs = sub[sub["campaign"] == campaign]
            ax.set_title(campaign, fontsize=10)
            for gi, g in enumerate(shown):
                for prefix, label, style in sources:
                    colour = f"C{gi % 10}" if multi else _SOURCE_COLOURS[prefix]
                    agg = _over_seeds(runs, f"{prefix}{g}", x="round")
                    _band(ax, agg, colour=colour, label=label, style=style)
            ax.set_xlabel("Round", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _style_axis(ax, "query_frac_group_0")
        # y is shared across the row: fix the limits only once every panel is drawn.
        axes[0].autoscale_view()
        axes[0].set_ylim(0, max(axes[0].get_ylim()[1], 1e-3))
        axes[0].set_ylabel("Share of rows" if multi else f"Share of group {shown[0]}", fontsize=9)
    if multi:
        handles = [Line2D([], [], color=f"C{i % 10}", lw=2) for i in range(len(groups))]
        labels = [f"group {g}" for g in groups]
        handles += [Line2D([], [], color="0.2", ls=s, lw=1.6) for _, _, s in sources]
        labels += [lab for _, lab, _ in sources]
    else:
        handles = [
            Line2D([], [], color=_SOURCE_COLOURS[p], ls=s, lw=1.6, marker="o", ms=3)
            for p, _, s in sources
        ]
        labels = [lab for _, lab, _ in sources]
    _figure_legend(fig, handles, labels, title="Mean ± 1 std over seeds")
    return _save(fig, out_path)


# --------------------------------------------------------------------------- report


def write_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    at_frac: float | None = None,
) -> dict[str, Path]:
    """Write tables and figures for the runs; returns ``{file name: path}``.

    ``out_dir`` defaults to ``<first run dir>/report``. Files: ``table1.md``, ``table1.csv``,
    ``rounds_all.csv``, ``curves.png``, ``epistemic_gap.png``, ``selection_audit.png``,
    ``selection_audit.csv`` and ``timings.csv``. Table 1 uses the default metrics present.
    When the rounds carry the bias-aligned/conflicting columns (a test set with a
    ``bias_aligned`` column, e.g. Colored-MNIST) also ``bias_table.md``/``bias_table.csv`` (the GBA
    paper's Tables 1/4: aligned, conflicting, mean, bias gap, overall accuracy) and
    ``bias_curves.png``.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    rounds = load_rounds(run_dirs)
    out = Path(out_dir) if out_dir is not None else Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name
        for name in (
            "table1.md",
            "table1.csv",
            "rounds_all.csv",
            "curves.png",
            "epistemic_gap.png",
            "selection_audit.png",
            "selection_audit.csv",
            "timings.csv",
        )
    }

    metrics = [
        m for m in ("predictive_parity", "accuracy", "worst_group_accuracy") if m in rounds.columns
    ]
    table = table1(rounds, at_frac=at_frac, metrics=metrics)
    runs = ", ".join(str(r) for r in run_dirs)
    paths["table1.md"].write_text(f"## Table 1 ({runs})\n\n" + format_table1(table), "utf-8")
    table.to_csv(paths["table1.csv"], index=False)
    rounds.to_csv(paths["rounds_all.csv"], index=False)
    plot_curves(rounds, paths["curves.png"])
    plot_epistemic_gap(rounds, paths["epistemic_gap.png"])
    plot_selection_audit(rounds, paths["selection_audit.png"])
    selection_table(rounds).to_csv(paths["selection_audit.csv"], index=False)
    timings_table(rounds).to_csv(paths["timings.csv"], index=False)
    if _has_values(rounds, "acc_bias_aligned"):
        paths.update(write_bias_report(rounds, out, at_frac=at_frac, runs=runs))
    return paths


def format_bias_table(table: pd.DataFrame) -> str:
    """Markdown of :func:`table1` over :data:`BIAS_METRICS` in the GBA paper's Tables 1/4 layout
    (aligned, conflicting, mean, bias gap; plus overall test accuracy), in percent."""
    return format_table1(table, percent=True).replace(
        "Mean ± sample std", "Bias gap = aligned − conflicting accuracy (GBA paper); mean = their "
        "unweighted mean; accuracy = all test rows.\nMean ± sample std"
    )


def write_bias_report(
    rounds: pd.DataFrame, out: Path, *, at_frac: float | None = None, runs: str = ""
) -> dict[str, Path]:
    """``bias_table.md``, ``bias_table.csv`` and ``bias_curves.png`` under ``out``."""
    metrics = [m for m in BIAS_METRICS if m in rounds.columns]
    table = table1(rounds, at_frac=at_frac, metrics=metrics)
    paths = {name: out / name for name in ("bias_table.md", "bias_table.csv", "bias_curves.png")}
    title = f"## Bias-aligned vs bias-conflicting accuracy ({runs})\n\n" if runs else ""
    paths["bias_table.md"].write_text(title + format_bias_table(table), "utf-8")
    table.to_csv(paths["bias_table.csv"], index=False)
    plot_curves(rounds, paths["bias_curves.png"],
                metrics=("acc_bias_aligned", "acc_bias_conflicting", "bias_gap", "accuracy"))
    return paths
