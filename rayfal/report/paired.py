"""Paired comparisons against a baseline campaign, with percentile-bootstrap CIs over seeds.

All campaigns of a seed share the data draw and the initial labels, so the difference
``campaign − baseline`` of a metric is taken per seed (and scenario) before averaging; the
spread of those per-seed differences, not of the raw metrics, decides whether a campaign is
better. Conventions:

* Pairing: :func:`paired_rounds` pairs rows by (scenario, seed, round);
  :func:`paired_differences` picks, per (campaign, seed), the round that :func:`table1` uses
  (same ``at_frac`` rule) and pairs campaign and baseline by (scenario, seed), so its
  ``mean_diff`` is the difference of the Table 1 means whenever every seed is paired.
  Seeds without a partner, and NaN metric values, are left out; ``n_seeds`` counts the rest.
* Baseline: the campaign named ``baseline`` (default ``"uniform"``). A scenario without it
  falls back to its first campaign (order of appearance); ``baseline`` then names the campaign
  used and ``baseline_fallback`` is True, and the Markdown says so.
* CI: percentile bootstrap of the mean (:func:`bootstrap_ci`), seeded, so a report is
  reproducible; a CI excludes 0 when ``lo > 0`` or ``hi < 0`` (never with < 2 seeds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .labels import NA, is_fraction, metric_label, scenario_label
from .load import KEY, numeric
from .plots import (
    PANEL_H,
    PANEL_W,
    campaign_colours,
    campaign_handles,
    figure_legend,
    figure_rows,
    line,
    note,
    save,
    style_axis,
)
from .tables import fmt, frac_text, pick_table_rows, scale_digits

PAIRED_METRICS: tuple[str, ...] = ("accuracy", "predictive_parity")
#: Columns of :func:`paired_differences` (``scenario`` only when the records have one).
PAIRED_COLUMNS: tuple[str, ...] = (
    "scenario",
    "campaign",
    "baseline",
    "baseline_fallback",
    "metric",
    "frac_labelled",
    "n_labelled",
    "n_seeds",
    "campaign_mean",
    "baseline_mean",
    "mean_diff",
    "ci_lo",
    "ci_hi",
    "excludes_zero",
)


def bootstrap_ci(
    diffs: np.ndarray | Sequence[float],
    *,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``diffs`` and its ``level`` percentile-bootstrap CI.

    ``n_boot`` resamples (with replacement, of the same size) are drawn by
    ``numpy.random.default_rng(seed)``, so the result is reproducible. NaNs are dropped first;
    no value gives ``(nan, nan, nan)``, one value ``(v, nan, nan)``, identical values
    ``(v, v, v)``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = np.asarray(diffs, dtype=float).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if d.size == 1:
        return mean, float("nan"), float("nan")
    if np.all(d == d[0]):
        return float(d[0]), float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(lo), float(hi)


def excludes_zero(lo: float, hi: float) -> bool:
    """Whether the interval ``[lo, hi]`` lies strictly on one side of 0 (False for NaN)."""
    return bool(lo > 0.0 or hi < 0.0)


def resolve_baseline(campaigns: Iterable[str], baseline: str) -> tuple[str, bool]:
    """``(campaign used, fell back?)``: ``baseline`` if present, else the first campaign."""
    names = list(campaigns)
    if not names:
        raise ValueError("no campaigns to compare")
    return (baseline, False) if baseline in names else (names[0], True)


def _prepare(records: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, bool]:
    """Copy with a ``scenario`` column (``""`` when absent); checks columns and duplicates."""
    need = ["campaign", "seed", "round", *metrics]
    missing = [c for c in need if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s): {', '.join(missing)}")
    has_scenario = "scenario" in records.columns
    df = records.copy()
    if not has_scenario:
        df["scenario"] = ""
    dup = df.duplicated(KEY, keep=False)
    if dup.any():
        first = df.loc[dup, KEY].head(4).to_dict("records")
        raise ValueError(
            f"{int(dup.sum())} records share a (scenario, campaign, seed, round): {first}"
        )
    return df, has_scenario


def paired_rounds(
    records: pd.DataFrame,
    *,
    baseline: str = "uniform",
    metrics: Iterable[str] = PAIRED_METRICS,
) -> pd.DataFrame:
    """Per-seed, per-round differences ``campaign − baseline``, paired by (scenario, seed, round).

    One row per (scenario, campaign ≠ baseline, seed, round) that the baseline also has, with
    columns ``scenario`` (when the records have one), ``campaign, baseline, baseline_fallback,
    seed, round, n_labelled, frac_labelled`` (the campaign's) and, per metric ``m``: ``m``,
    ``m_baseline`` and ``m_diff``.
    """
    metrics = list(metrics)
    df, has_scenario = _prepare(records, metrics)
    keep = [c for c in ("n_labelled", "frac_labelled") if c in df.columns]
    cols = ["scenario", "campaign", "baseline", "baseline_fallback", "seed", "round", *keep]
    cols += [f"{m}{s}" for m in metrics for s in ("", "_baseline", "_diff")]
    parts = []
    for _, sub in df.groupby("scenario", sort=False):
        campaigns = list(pd.unique(sub["campaign"]))
        name, fallback = resolve_baseline(campaigns, baseline)
        base = sub.loc[sub["campaign"] == name, ["seed", "round", *metrics]]
        base = base.rename(columns={m: f"{m}_baseline" for m in metrics})
        others = sub.loc[
            sub["campaign"] != name, ["scenario", "campaign", "seed", "round", *keep, *metrics]
        ]
        merged = others.merge(base, on=["seed", "round"], how="inner", validate="many_to_one")
        merged["baseline"] = name
        merged["baseline_fallback"] = fallback
        for m in metrics:
            merged[f"{m}_diff"] = numeric(merged, m) - numeric(merged, f"{m}_baseline")
        order = merged["campaign"].map({c: i for i, c in enumerate(campaigns)})
        merged = merged.assign(_order=order).sort_values(["_order", "seed", "round"], kind="stable")
        parts.append(merged[cols])
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return out if has_scenario else out.drop(columns="scenario")


def paired_differences(
    records: pd.DataFrame,
    *,
    baseline: str = "uniform",
    metrics: Iterable[str] = PAIRED_METRICS,
    at_frac: float | None = None,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean per-seed difference ``campaign − baseline`` with a bootstrap CI, at one fraction.

    The round of each (campaign, seed) is chosen as :func:`table1` chooses it (``at_frac=None``:
    the largest fraction every seed of every campaign of the scenario reaches; otherwise the
    last round with ``frac_labelled <= at_frac``, ValueError if a campaign never reaches it).
    One row per (scenario, campaign ≠ baseline, metric); columns :data:`PAIRED_COLUMNS`
    (``scenario`` only when the records have one). A scenario with a single campaign gives no
    rows; see the module docstring for the baseline fallback.
    """
    metrics = list(metrics)
    df, has_scenario = _prepare(records, metrics)
    out = []
    for scenario, sub in df.groupby("scenario", sort=False):
        picked = pick_table_rows(sub, at_frac)
        campaigns = list(pd.unique(sub["campaign"]))
        name, fallback = resolve_baseline(campaigns, baseline)
        base = picked[picked["campaign"] == name].set_index("seed")
        for campaign in campaigns:
            if campaign == name:
                continue
            rows = picked[picked["campaign"] == campaign].set_index("seed")
            rows = rows.loc[rows.index.isin(base.index)]
            partner = base.loc[rows.index]
            for m in metrics:
                a, b = numeric(rows, m), numeric(partner, m)
                ok = a.notna() & b.notna()
                mean, lo, hi = bootstrap_ci(
                    (a - b)[ok].to_numpy(), level=level, n_boot=n_boot, seed=seed
                )
                out.append(
                    {
                        "scenario": scenario,
                        "campaign": campaign,
                        "baseline": name,
                        "baseline_fallback": fallback,
                        "metric": m,
                        "frac_labelled": float(numeric(rows, "frac_labelled").mean()),
                        "n_labelled": float(numeric(rows, "n_labelled").mean()),
                        "n_seeds": int(ok.sum()),
                        "campaign_mean": float(a[ok].mean()),
                        "baseline_mean": float(b[ok].mean()),
                        "mean_diff": mean,
                        "ci_lo": lo,
                        "ci_hi": hi,
                        "excludes_zero": excludes_zero(lo, hi),
                    }
                )
    table = pd.DataFrame(out, columns=list(PAIRED_COLUMNS))
    return table if has_scenario else table.drop(columns="scenario")


# --------------------------------------------------------------------------- Markdown


def _signed(value: float, scale: float, digits: int) -> str:
    text = fmt(value, scale, digits)
    return text if text == NA or text.startswith("-") else "+" + text


def _seeds_text(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def format_paired(
    table: pd.DataFrame,
    *,
    baseline: str | None = None,
    percent: bool = True,
    level: float = 0.95,
) -> str:
    """Markdown of :func:`paired_differences`: per scenario one row per campaign, cells
    ``mean Δ [lo, hi]`` (``*`` when the CI excludes 0), and the number of paired seeds.

    Fraction metrics are in percentage points when ``percent``. ``baseline`` is the requested
    name, quoted when a scenario had to fall back to its first campaign.
    """
    pct_level = f"{100 * level:g}%"
    if table.empty:
        return (
            "No paired comparison: every scenario has a single campaign, so there is nothing "
            "to compare with the baseline.\n"
        )
    scenarios = table["scenario"] if "scenario" in table.columns else pd.Series("", table.index)
    metrics = list(pd.unique(table["metric"]))
    lines: list[str] = []
    for scenario, sub in table.groupby(scenarios, sort=False):
        used = str(sub["baseline"].iloc[0])
        title = f"{scenario_label(scenario)} @ " if scenario != "" else ""
        lines += [f"### {title}{frac_text(sub['frac_labelled'])} labelled: campaign − {used}", ""]
        if bool(sub["baseline_fallback"].iloc[0]):
            asked = f"'{baseline}'" if baseline else "the requested baseline"
            lines += [
                f"No campaign is named {asked} here; the first campaign, '{used}', is the "
                "baseline.",
                "",
            ]
        header = ["Campaign"]
        for m in metrics:
            header.append(f"Δ {metric_label(m)}" + (" (pp)" if percent and is_fraction(m) else ""))
        header.append("Seeds")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        for campaign, rows in sub.groupby("campaign", sort=False):
            cells = [str(campaign).replace("|", "\\|")]
            for m in metrics:
                hit = rows[rows["metric"] == m]
                if hit.empty:
                    cells.append(NA)
                    continue
                r = hit.iloc[0]
                scale, digits = scale_digits(m, percent)
                ci = f"[{_signed(r['ci_lo'], scale, digits)}, {_signed(r['ci_hi'], scale, digits)}]"
                star = " *" if bool(r["excludes_zero"]) else ""
                cells.append(f"{_signed(r['mean_diff'], scale, digits)} {ci}{star}")
            cells.append(_seeds_text(rows["n_seeds"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        f"Δ = campaign − baseline per seed (same seed: same data draw and initial labels), at "
        f"the round Table 1 uses; mean over paired seeds [{pct_level} percentile-bootstrap CI "
        f"of the mean]; * marks a CI that excludes 0; – marks an undefined CI (fewer than 2 "
        f"seeds). Seeds = paired seeds. δA: lower is better, so Δ < 0 favours the campaign."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figure


def _ci_over_seeds(
    runs: pd.DataFrame, col: str, *, level: float, n_boot: int, seed: int
) -> pd.DataFrame:
    """Per round: mean ``n_labelled`` (x), mean of ``col`` and its bootstrap CI over seeds."""
    rec = []
    for rnd, rows in runs.groupby("round", sort=True):
        mean, lo, hi = bootstrap_ci(
            numeric(rows, col).to_numpy(), level=level, n_boot=n_boot, seed=seed
        )
        rec.append(
            {
                "round": rnd,
                "x": float(numeric(rows, "n_labelled").mean()),
                "mean": mean,
                "lo": lo,
                "hi": hi,
            }
        )
    return pd.DataFrame(rec, columns=["round", "x", "mean", "lo", "hi"]).dropna(subset=["x"])


def plot_paired_differences(
    pairs: pd.DataFrame,
    out_path: str | Path,
    *,
    colours: dict[str, str] | None = None,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Path:
    """Paired differences over the labelling curve, from :func:`paired_rounds`: one panel per
    metric (x = labels used), one line per campaign (mean Δ over seeds) with its bootstrap CI
    band, one figure row per scenario; the dashed line at 0 is the baseline.

    ``colours`` maps campaign → colour (pass :func:`campaign_colours` of the records to match
    the other figures)."""
    metrics = [c[: -len("_diff")] for c in pairs.columns if c.endswith("_diff")]
    if pairs.empty or not metrics:
        fig = Figure(figsize=(7.0, 2.5), layout="constrained")
        note(
            fig.subplots(),
            "no paired differences: a single campaign per scenario\n"
            "or no accuracy / predictive_parity column",
        )
        return save(fig, out_path)
    scen = pairs["scenario"] if "scenario" in pairs.columns else pd.Series("", pairs.index)
    scenarios = list(pd.unique(scen))
    colours = colours or campaign_colours(pairs)
    fig = Figure(
        figsize=(max(PANEL_W * len(metrics), 6.0), PANEL_H * len(scenarios) + 0.9),
        layout="constrained",
    )
    shown: dict[str, str] = {}
    for sfig, scenario in zip(figure_rows(fig, len(scenarios)), scenarios, strict=True):
        sub = pairs[scen == scenario]
        used = str(sub["baseline"].iloc[0])
        sfig.suptitle(
            (f"{scenario_label(scenario)}: " if scenario != "" else "") + f"campaign − {used}",
            fontsize=12,
            fontweight="bold",
        )
        axes = sfig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, m in zip(axes, metrics, strict=True):
            ax.set_title(f"Δ {metric_label(m)}", fontsize=10)
            ax.axhline(0.0, color="0.3", lw=1.0, ls="--")
            for campaign, runs in sub.groupby("campaign", sort=False):
                agg = _ci_over_seeds(runs, f"{m}_diff", level=level, n_boot=n_boot, seed=seed)
                colour = colours.get(campaign, "C0")
                if line(ax, agg, colour=colour, label=campaign):
                    shown[campaign] = colour
                ok = agg.dropna(subset=["lo", "hi"])
                if not ok.empty:
                    ax.fill_between(ok["x"], ok["lo"], ok["hi"], color=colour, alpha=0.18, lw=0)
            ax.set_xlabel("Labelled examples", fontsize=9)
            ax.set_ylabel(
                f"Δ vs {used}" + (" (lower is better)" if m == "predictive_parity" else ""),
                fontsize=9,
            )
            style_axis(ax, m)
    figure_legend(
        fig,
        *campaign_handles(shown),
        title=f"Campaign (mean paired Δ over seeds, {100 * level:g}% bootstrap CI)",
    )
    return save(fig, out_path)
