"""Names and units of metrics: display labels, percent scaling and the Markdown NA mark."""

from __future__ import annotations

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


def is_fraction(metric: str) -> bool:
    """Whether ``metric`` is a fraction in [0, 1] (shown in percent)."""
    return metric in _FRACTION_METRICS or metric.startswith(_FRACTION_PREFIXES)


def metric_label(metric: str) -> str:
    """Human-readable name of a metric column."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    for prefix, name in (("acc_group_", "Accuracy, group "), ("bald_group_", "Mean BALD, group ")):
        if metric.startswith(prefix):
            return name + metric[len(prefix) :]
    return metric.replace("_", " ").capitalize()


def scenario_label(scenario: str) -> str:
    """``minority_group`` -> ``Minority group``."""
    return str(scenario).replace("_", " ").capitalize()
