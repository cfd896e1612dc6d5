"""PNG figures (paper Figs. 1-3 and the selection audit) on an Agg canvas, no pyplot state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .labels import is_fraction, metric_label, scenario_label
from .load import group_keys, has_values, numeric, sort_groups

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
PANEL_W, PANEL_H = 4.3, 3.1


# --------------------------------------------------------------------------- helpers


def campaign_colours(rounds: pd.DataFrame) -> dict[str, str]:
    """One colour per campaign, in order of first appearance (the same in every figure)."""
    return {c: f"C{i % 10}" for i, c in enumerate(pd.unique(rounds["campaign"]))}


def over_seeds(sub: pd.DataFrame, col: str, x: str = "n_labelled") -> pd.DataFrame:
    """Per round: mean x, and mean/std over seeds of ``col``."""
    df = pd.DataFrame({"round": sub["round"], "x": numeric(sub, x), "y": numeric(sub, col)})
    g = df.groupby("round", sort=True)
    agg = pd.DataFrame({"x": g["x"].mean(), "mean": g["y"].mean(), "std": g["y"].std(ddof=1)})
    return agg.dropna(subset=["x"])


def line(ax: Axes, agg: pd.DataFrame, *, colour: str, label: str, style: str = "-") -> bool:
    """Plot ``agg['mean']`` vs ``agg['x']``; False (nothing drawn) when no mean is finite."""
    agg = agg.dropna(subset=["mean"])
    if agg.empty:
        return False
    marker = "o" if len(agg) <= 25 else None
    ax.plot(agg["x"], agg["mean"], style, color=colour, label=label, marker=marker, ms=3, lw=1.6)
    return True


def band(ax: Axes, agg: pd.DataFrame, *, colour: str, label: str, style: str = "-") -> None:
    """Line of the mean over seeds with a ± 1 std band (no band when std is 0 or NaN)."""
    if not line(ax, agg, colour=colour, label=label, style=style):
        return
    agg = agg.dropna(subset=["mean"])
    std = agg["std"].fillna(0.0)
    if (std > 0).any():
        lo, hi = agg["mean"] - std, agg["mean"] + std
        ax.fill_between(agg["x"], lo, hi, color=colour, alpha=0.18, linewidth=0)


def note(ax: Axes, text: str) -> None:
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


def style_axis(ax: Axes, metric: str) -> None:
    """Percent ticks for fraction metrics, light grid, small tick labels."""
    if is_fraction(metric):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def figure_rows(fig: Figure, n: int) -> list[SubFigure]:
    """``n`` stacked sub-figures (one per scenario)."""
    subs = fig.subfigures(n, 1, squeeze=False)
    return list(np.asarray(subs).ravel())


def save(fig: Figure, out_path: str | Path) -> Path:
    """Write ``fig`` as PNG (creating parent directories) and return the path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=110, format="png")
    return out


def figure_legend(fig: Figure, handles: list, labels: list[str], title: str | None = None) -> None:
    """A legend below the figure (nothing when there are no handles)."""
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


def campaign_handles(colours: dict[str, str]) -> tuple[list[Line2D], list[str]]:
    """Legend handles and labels of the campaign colours."""
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
    colours = campaign_colours(rounds)
    fig = Figure(
        figsize=(PANEL_W * len(metrics), PANEL_H * len(scenarios) + 0.7), layout="constrained"
    )
    for sfig, scenario in zip(figure_rows(fig, len(scenarios)), scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        sfig.suptitle(scenario_label(scenario), fontsize=12, fontweight="bold")
        axes = sfig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            ax.set_title(metric_label(metric), fontsize=10)
            if not has_values(sub, metric):
                note(ax, f"no '{metric}' values\nin rounds.csv")
                continue
            for campaign, runs in sub.groupby("campaign", sort=False):
                band(ax, over_seeds(runs, metric), colour=colours[campaign], label=campaign)
            ax.set_xlabel("Labelled examples", fontsize=9)
            ax.set_ylabel(
                metric_label(metric)
                + (" (lower is better)" if metric in ("predictive_parity", "nll") else ""),
                fontsize=9,
            )
            style_axis(ax, metric)
    figure_legend(fig, *campaign_handles(colours), title="Campaign (mean ± 1 std over seeds)")
    return save(fig, out_path)


def plot_epistemic_gap(rounds: pd.DataFrame, out_path: str | Path) -> Path:
    """Fig. 1: ``epistemic_gap`` (max − min group mean BALD on the test set) vs labels used, one
    line per campaign with a ± 1 std band over seeds, one panel per scenario."""
    scenarios = list(pd.unique(rounds["scenario"]))
    colours = campaign_colours(rounds)
    fig = Figure(figsize=(max(PANEL_W * len(scenarios), 6.0), PANEL_H + 0.9), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        ax.set_title(scenario_label(scenario), fontsize=11)
        if not has_values(sub, "epistemic_gap"):
            note(ax, "no 'epistemic_gap' values\nin rounds.csv")
            continue
        for campaign, runs in sub.groupby("campaign", sort=False):
            band(ax, over_seeds(runs, "epistemic_gap"), colour=colours[campaign], label=campaign)
        ax.set_xlabel("Labelled examples", fontsize=9)
        ax.set_ylabel("Gap in mean BALD between groups", fontsize=9)
        style_axis(ax, "epistemic_gap")
    fig.suptitle(
        "Epistemic-uncertainty gap between groups (max − min group mean BALD)", fontsize=11
    )
    figure_legend(fig, *campaign_handles(colours), title="Campaign (mean ± 1 std over seeds)")
    return save(fig, out_path)


def _minority(sub: pd.DataFrame, groups: list[str]) -> str:
    """The group with the smallest share of the initial pool (ties → highest index)."""
    for prefix in ("pool_frac_group_", "labelled_frac_group_", "query_frac_group_"):
        first = sub[sub["round"] == sub["round"].min()]
        shares = {g: numeric(first, f"{prefix}{g}").mean() for g in groups}
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
    groups = sort_groups({g for prefix, _, _ in _AUDIT_SOURCES for g in group_keys(rounds, prefix)})
    n_cols = max(int(rounds.groupby("scenario")["campaign"].nunique().max()), 1)
    if not groups:
        fig = Figure(figsize=(7.0, 2.5), layout="constrained")
        ax = fig.subplots()
        note(
            ax,
            "no query_frac_group_* / pool_frac_group_* / labelled_frac_group_*\n"
            "columns in rounds.csv: nothing to audit",
        )
        return save(fig, out_path)
    fig = Figure(
        figsize=(max(PANEL_W * n_cols, 6.0), (PANEL_H + 0.4) * len(scenarios) + 0.9),
        layout="constrained",
    )
    sources = [s for s in _AUDIT_SOURCES if group_keys(rounds, s[0])]
    absent = [s[1] for s in _AUDIT_SOURCES if s not in sources]
    multi = len(groups) > 2
    for sfig, scenario in zip(figure_rows(fig, len(scenarios)), scenarios, strict=True):
        sub = rounds[rounds["scenario"] == scenario]
        shown = groups if multi else [_minority(sub, groups)]
        title = f"{scenario_label(scenario)}: " + (
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
                    agg = over_seeds(runs, f"{prefix}{g}", x="round")
                    band(ax, agg, colour=colour, label=label, style=style)
            ax.set_xlabel("Round", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            style_axis(ax, "query_frac_group_0")
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
    figure_legend(fig, handles, labels, title="Mean ± 1 std over seeds")
    return save(fig, out_path)
