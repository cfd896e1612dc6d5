"""Tables and PNG plots from run directories (Branchaud-Charron et al. 2021, Table 1, Figs. 1-3).

Every run directory holds a ``rounds.csv`` with one row per (campaign, seed, round); see
:data:`REQUIRED_COLUMNS` for the columns that must exist. All other columns are optional: a
missing metric leaves a note in its plot panel instead of failing, and unknown columns are
ignored. Groups are discovered from column names (``acc_group_<g>``, ``query_frac_group_<g>``...).

Modules: :mod:`.load` (reading ``rounds.csv``), :mod:`.tables` (Table 1 and other tables),
:mod:`.plots` (figures), :mod:`.paired` (paired differences against a baseline with bootstrap
CIs), :mod:`.write` (:func:`write_report`), :mod:`.labels` (metric names).

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

from .labels import METRIC_LABELS, NA
from .load import KEY, REQUIRED_COLUMNS, ROUNDS_FILE, load_rounds
from .paired import (
    PAIRED_COLUMNS,
    PAIRED_METRICS,
    bootstrap_ci,
    format_paired,
    paired_differences,
    paired_rounds,
    plot_paired_differences,
)
from .plots import plot_curves, plot_epistemic_gap, plot_selection_audit
from .tables import (
    BIAS_METRICS,
    FRAC_TOL,
    TIMING_COLUMNS,
    format_bias_table,
    format_table1,
    selection_table,
    table1,
    timings_table,
)
from .write import write_bias_report, write_paired_report, write_report

__all__ = [
    "BIAS_METRICS",
    "FRAC_TOL",
    "KEY",
    "METRIC_LABELS",
    "NA",
    "PAIRED_COLUMNS",
    "PAIRED_METRICS",
    "REQUIRED_COLUMNS",
    "ROUNDS_FILE",
    "TIMING_COLUMNS",
    "bootstrap_ci",
    "format_bias_table",
    "format_table1",
    "format_paired",
    "load_rounds",
    "paired_differences",
    "paired_rounds",
    "plot_curves",
    "plot_epistemic_gap",
    "plot_paired_differences",
    "plot_selection_audit",
    "selection_table",
    "table1",
    "timings_table",
    "write_bias_report",
    "write_paired_report",
    "write_report",
]
