"""``write_report``: every table and figure of a set of run directories into one folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .load import has_values, load_rounds
from .paired import (
    PAIRED_METRICS,
    format_paired,
    paired_differences,
    paired_rounds,
    plot_paired_differences,
)
from .plots import campaign_colours, plot_curves, plot_epistemic_gap, plot_selection_audit
from .tables import (
    BIAS_METRICS,
    format_bias_table,
    format_table1,
    selection_table,
    table1,
    timings_table,
)


def write_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    at_frac: float | None = None,
    baseline: str = "uniform",
) -> dict[str, Path]:
    """Write tables and figures for the runs; returns ``{file name: path}``.

    ``out_dir`` defaults to ``<first run dir>/report``. Files: ``table1.md``, ``table1.csv``,
    ``rounds_all.csv``, ``curves.png``, ``epistemic_gap.png``, ``selection_audit.png``,
    ``selection_audit.csv`` and ``timings.csv``. Table 1 uses the default metrics present.
    When the rounds carry the bias-aligned/conflicting columns (a test set with a
    ``bias_aligned`` column, e.g. Colored-MNIST) also ``bias_table.md``/``bias_table.csv`` (the GBA
    paper's Tables 1/4: aligned, conflicting, mean, bias gap, overall accuracy) and
    ``bias_curves.png``.

    Always also the paired comparison against the campaign ``baseline`` (see
    :func:`write_paired_report`): ``paired.md``, ``paired.csv``, ``paired_rounds.csv`` and
    ``paired_differences.png``.
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
    paths.update(write_paired_report(rounds, out, baseline=baseline, at_frac=at_frac, runs=runs))
    if has_values(rounds, "acc_bias_aligned"):
        paths.update(write_bias_report(rounds, out, at_frac=at_frac, runs=runs))
    return paths


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
    plot_curves(
        rounds,
        paths["bias_curves.png"],
        metrics=("acc_bias_aligned", "acc_bias_conflicting", "bias_gap", "accuracy"),
    )
    return paths


def write_paired_report(
    rounds: pd.DataFrame,
    out: Path,
    *,
    baseline: str = "uniform",
    at_frac: float | None = None,
    runs: str = "",
) -> dict[str, Path]:
    """Paired differences ``campaign − baseline`` of accuracy and δA (those present) under
    ``out``: ``paired.md`` (at Table 1's round, 95% bootstrap CIs, ``*`` where the CI excludes
    0, paired seeds), ``paired.csv`` (the same, one row per campaign and metric),
    ``paired_rounds.csv`` (per seed and round) and ``paired_differences.png`` (over the
    labelling curve)."""
    names = ("paired.md", "paired.csv", "paired_rounds.csv", "paired_differences.png")
    paths = {name: out / name for name in names}
    metrics = [m for m in PAIRED_METRICS if m in rounds.columns]
    summary = paired_differences(rounds, baseline=baseline, metrics=metrics, at_frac=at_frac)
    pairs = paired_rounds(rounds, baseline=baseline, metrics=metrics)
    title = f"## Paired differences against '{baseline}'" + (f" ({runs})" if runs else "")
    md = f"{title}\n\n" + format_paired(summary, baseline=baseline)
    paths["paired.md"].write_text(md, "utf-8")
    summary.to_csv(paths["paired.csv"], index=False)
    pairs.to_csv(paths["paired_rounds.csv"], index=False)
    plot_paired_differences(
        pairs, paths["paired_differences.png"], colours=campaign_colours(rounds)
    )
    return paths
