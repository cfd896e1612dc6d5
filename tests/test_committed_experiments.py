"""Every number of a committed experiment table can be recomputed from its per-seed CSV."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from rayfal.report import paired_differences, table1

DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiments"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` (the script that wrote a committed table), imported."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["quickstart_10seeds", "quickstart_10seeds_pretrained",
                                  "quickstart_minority", "bald_table1_adam"])
def test_quickstart_10_seeds_paired_table_recomputes_from_the_per_seed_rounds(name: str) -> None:
    folder = DOCS / name
    rounds = pd.read_csv(folder / "rounds_all.csv")
    assert rounds.groupby("campaign")["seed"].nunique().to_dict() == {"bald": 10, "uniform": 10}
    got = paired_differences(rounds, baseline="uniform")
    want = pd.read_csv(folder / "paired.csv")
    cols = ["mean_diff", "ci_lo", "ci_hi", "n_seeds"]
    for _, row in want.iterrows():
        mine = got[(got["campaign"] == row["campaign"]) & (got["metric"] == row["metric"])]
        assert len(mine) == 1, row["metric"]
        np.testing.assert_allclose(mine[cols].to_numpy(float)[0], row[cols].to_numpy(float),
                                   rtol=0, atol=1e-12, err_msg=row["metric"])
    # and the per-seed differences behind it
    last = rounds[rounds["n_labelled"] == 150].pivot(index="seed", columns="campaign",
                                                      values="predictive_parity")
    delta = want.loc[want["metric"] == "predictive_parity", "mean_diff"].item()
    assert (last["bald"] - last["uniform"]).mean() == pytest.approx(delta, abs=1e-12)
    t1 = table1(rounds)
    assert len(t1) == 2


def test_adult_panda_figure1_recomputes_from_the_per_seed_rounds() -> None:
    """docs/experiments/adult_panda/figure1.csv (means, stds, paired differences vs random and
    their bootstrap CIs at B = 400) from rounds.csv, by the report's own function and, for the
    means and differences, by hand."""
    folder = DOCS / "adult_panda"
    report = _benchmark_script("adult_panda_report")
    rounds = pd.read_csv(folder / "rounds.csv")
    assert rounds.loc[rounds["campaign"] == "random", "seed"].nunique() >= 5
    got = report.figure1_table(rounds)
    want = pd.read_csv(folder / "figure1.csv")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False,
                                  rtol=0, atol=1e-12)
    final = rounds[rounds["budget"] == rounds["budget"].max()]
    piv = final.pivot(index="seed", columns="campaign", values="f_score")
    for method in want["method"]:
        row = want[want["method"] == method].iloc[0]
        assert row["f_score_mean"] == pytest.approx(piv[method].mean(), abs=1e-12)
        diff = (piv[method] - piv["random"]).dropna()
        assert row["f_score_diff"] == pytest.approx(diff.mean(), abs=1e-12)


def test_quickstart_selection_summary_recomputes_from_the_per_seed_rounds() -> None:
    """The measurements behind the quickstart's choice of scenario (EXPERIMENTS.md)."""
    folder = DOCS / "quickstart_selection"
    summary = pd.read_csv(folder / "summary.csv")
    for setting, want in summary.groupby("setting"):
        rounds = pd.read_csv(folder / f"{setting}.csv")
        assert rounds.groupby("campaign")["seed"].nunique().to_dict() == {"bald": 10,
                                                                          "uniform": 10}
        got = paired_differences(rounds, baseline="uniform").set_index("metric")
        for _, row in want.iterrows():
            mine = got.loc[row["metric"]]
            np.testing.assert_allclose(
                [mine["mean_diff"], mine["ci_lo"], mine["ci_hi"], mine["n_seeds"]],
                [row["mean_diff"], row["ci_lo"], row["ci_hi"], row["n_seeds"]],
                rtol=0, atol=1e-12, err_msg=f"{setting} {row['metric']}")


def test_bald_table1_recomputes_from_the_per_seed_rounds() -> None:
    """docs/experiments/bald_table1/table1.md and paired.csv (the paper's Table 1 on our
    protocol) from rounds_all.csv, by the script that wrote them."""
    folder = DOCS / "bald_table1"
    script = _benchmark_script("bald_table1_report")
    rounds = pd.read_csv(folder / "rounds_all.csv")
    assert rounds.groupby(["scenario", "campaign"])["seed"].nunique().min() >= 10
    assert script.table_markdown(rounds) == (folder / "table1.md").read_text()
    want = pd.read_csv(folder / "paired.csv")
    got = paired_differences(rounds, baseline="uniform", metrics=script.METRICS)
    cols = ["mean_diff", "ci_lo", "ci_hi", "n_seeds"]
    np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float),
                               rtol=0, atol=1e-12)
    # the tuned-λ rows are there, in both scenarios
    assert {"uniform+grad_tuned", "bald+grad_tuned"} <= set(
        rounds.loc[rounds["scenario"] == "minority_group", "campaign"])
    # one number by hand: BALD - uniform accuracy at 150 labels, sensitive attribute
    last = rounds[(rounds["n_labelled"] == 150) & (rounds["scenario"] == "sensitive_attribute")]
    piv = last.pivot(index="seed", columns="campaign", values="accuracy")
    row = want[(want["scenario"] == "sensitive_attribute") & (want["campaign"] == "bald")
               & (want["metric"] == "accuracy")]
    assert (piv["bald"] - piv["uniform"]).mean() == pytest.approx(row["mean_diff"].item(),
                                                                   abs=1e-12)


def test_rayfal_run_prints_the_paired_differences_of_the_quickstart() -> None:
    from rayfal.cli import run_summary

    rounds = pd.read_csv(DOCS / "quickstart_minority" / "rounds_all.csv")
    text = run_summary(rounds, "uniform")
    assert "| uniform | 90.73 ± 1.52 | 12.20 ± 3.38 |" in text
    assert "| bald | +2.70 [+1.47, +3.88] * | -3.73 [-6.20, -1.00] * | 10 |" in text


def test_gba_table_recomputes_from_the_per_seed_rounds() -> None:
    """docs/experiments/gba_colored_mnist_paired/gba_table.md and paired.csv from
    rounds_all.csv, by the script that wrote them, and one paired difference by hand."""
    folder = DOCS / "gba_colored_mnist_paired"
    script = _benchmark_script("gba_report")
    rounds = pd.read_csv(folder / "rounds_all.csv")
    assert script.table_markdown(rounds) == (folder / "gba_table.md").read_text()
    want = pd.read_csv(folder / "paired.csv")
    got = script.paired(rounds)
    cols = ["mean_diff", "ci_lo", "ci_hi", "n_seeds"]
    np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float),
                               rtol=0, atol=1e-12)
    # GBA (lambda 0.1) - vanilla test accuracy at 95% skew, per seed, by hand
    sub = rounds[rounds["scenario"] == "skew_0.95"]
    piv = sub.pivot(index="seed", columns="campaign", values="accuracy")
    row = want[(want["scenario"] == "skew_0.95") & (want["campaign"] == "gba_0.1")
               & (want["reference"] == "vanilla") & (want["metric"] == "accuracy")]
    assert (piv["gba_0.1"] - piv["vanilla"]).dropna().mean() == pytest.approx(
        row["mean_diff"].item(), abs=1e-12)


def test_fral_tables_recompute_from_the_per_seed_rounds() -> None:
    """docs/experiments/fral_jin_v2/fral_tables.md from rounds_all.csv, by the script that
    wrote it; and the round-0 model is shared by every strategy of a seed (one robust
    worst-group accuracy per seed at round 0, the tables' "Initialization" row)."""
    folder = DOCS / "fral_jin_v2"
    script = _benchmark_script("fral_jin_tables")
    assert script.render_from_csv(folder / "rounds_all.csv") == (folder / "fral_tables.md").read_text()
    rounds = pd.read_csv(folder / "rounds_all.csv")
    first = rounds[rounds["round"] == 0]
    assert first.groupby("seed")["F_rob"].nunique().eq(1).all()  # one round-0 model per seed
