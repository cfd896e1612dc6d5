"""Tests for rayfal.report.paired: bootstrap CIs, per-seed pairing against a baseline, outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayfal import report
from rayfal.report.paired import bootstrap_ci, paired_differences, paired_rounds

SEEDS = (0, 1, 2, 3)
POOL = 100
BATCH = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- bootstrap_ci


def test_bootstrap_ci_constant_diffs_collapse_to_the_value() -> None:
    assert bootstrap_ci(np.full(6, 0.1)) == (0.1, 0.1, 0.1)
    assert bootstrap_ci(np.array([-3.0, -3.0])) == (-3.0, -3.0, -3.0)


def test_bootstrap_ci_one_value_and_nans() -> None:
    mean, lo, hi = bootstrap_ci(np.array([0.25]))
    assert mean == 0.25 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    # NaNs are dropped before resampling: [1, nan, 3] is the sample [1, 3]
    assert bootstrap_ci(np.array([1.0, np.nan, 3.0])) == bootstrap_ci(np.array([1.0, 3.0]))
    assert bootstrap_ci(np.array([np.nan, 2.0]))[0] == 2.0


def test_bootstrap_ci_two_values_known_quantiles() -> None:
    # Resample means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% quantiles are 0 and 1, and the 50% interval (25%..75%) is [0.5, 0.5] or close to it.
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)
    _, lo, hi = bootstrap_ci(np.array([0.0, 1.0]), level=0.4)
    assert lo == hi == 0.5


def test_bootstrap_ci_symmetric_about_zero_includes_zero() -> None:
    diffs = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    mean, lo, hi = bootstrap_ci(diffs)
    assert mean == 0.0
    assert lo < 0.0 < hi
    # bootstrap std of the mean = population std / sqrt(n) = sqrt(2 / 5); 95% ≈ ± 1.96 of it
    half = 1.96 * math.sqrt(2.0 / 5.0)
    assert lo == pytest.approx(-half, abs=0.15)
    assert hi == pytest.approx(half, abs=0.15)
    assert not report.paired.excludes_zero(lo, hi)


def test_bootstrap_ci_clearly_positive_excludes_zero() -> None:
    diffs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mean, lo, hi = bootstrap_ci(diffs)
    assert mean == 3.0
    assert 1.0 <= lo < 3.0 < hi <= 5.0
    assert lo == pytest.approx(3.0 - 1.96 * math.sqrt(2.0 / 5.0), abs=0.15)
    assert report.paired.excludes_zero(lo, hi)
    assert report.paired.excludes_zero(-hi, -lo)


def test_bootstrap_ci_is_seeded_and_level_sets_width() -> None:
    diffs = np.array([0.3, -0.1, 0.7, 0.2, 0.05, 0.4])
    assert bootstrap_ci(diffs, seed=3) == bootstrap_ci(diffs, seed=3)
    assert bootstrap_ci(diffs, seed=3) != bootstrap_ci(diffs, seed=4)
    _, lo95, hi95 = bootstrap_ci(diffs)
    _, lo50, hi50 = bootstrap_ci(diffs, level=0.5)
    assert lo95 < lo50 < hi50 < hi95
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(diffs, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(diffs, n_boot=0)


# --------------------------------------------------------------------------- pairing

# Per seed the baseline differs a lot (0.1 * seed), the campaign's gain is small and known:
# accuracy gain (round + 1) * 0.01 * (seed + 1); δA of "bald" is the baseline's minus 0.01.


def _gain(seed: int, r: int) -> float:
    return (r + 1) * 0.01 * (seed + 1)


def _records(*, n_rounds: int = 2, scenario: str | None = None) -> pd.DataFrame:
    rows = []
    for campaign in ("uniform", "bald"):
        for seed in SEEDS:
            for r in range(n_rounds):
                acc = 0.5 + 0.1 * seed + 0.01 * r
                pp = 0.2 + 0.05 * seed
                if campaign == "bald":
                    acc, pp = acc + _gain(seed, r), pp - 0.01
                rows.append(
                    {
                        "campaign": campaign,
                        "strategy": campaign,
                        "seed": seed,
                        "round": r,
                        "n_labelled": BATCH * (r + 1),
                        "frac_labelled": BATCH * (r + 1) / POOL,
                        "accuracy": acc,
                        "predictive_parity": pp,
                    }
                )
    df = pd.DataFrame(rows)
    if scenario is not None:
        df.insert(0, "scenario", scenario)
    return df


def _one(table: pd.DataFrame, **match: object) -> pd.Series:
    hit = table
    for col, value in match.items():
        hit = hit[hit[col] == value]
    assert len(hit) == 1, match
    return hit.iloc[0]


def test_paired_rounds_pairs_by_seed_and_round_not_position() -> None:
    shuffled = _records().sample(frac=1.0, random_state=7).reset_index(drop=True)
    pairs = paired_rounds(shuffled)
    assert len(pairs) == len(SEEDS) * 2
    assert set(pairs["campaign"]) == {"bald"} and set(pairs["baseline"]) == {"uniform"}
    assert not pairs["baseline_fallback"].any()
    assert "scenario" not in pairs.columns  # the records had none
    for _, row in pairs.iterrows():
        seed, r = int(row["seed"]), int(row["round"])
        assert row["accuracy_diff"] == pytest.approx(_gain(seed, r))
        assert row["accuracy_baseline"] == pytest.approx(0.5 + 0.1 * seed + 0.01 * r)
        assert row["predictive_parity_diff"] == pytest.approx(-0.01)
    assert list(pairs[["seed", "round"]].itertuples(index=False, name=None)) == [
        (s, r) for s in SEEDS for r in (0, 1)
    ]


def test_paired_differences_known_answer_at_final_round() -> None:
    records = _records().sample(frac=1.0, random_state=1)
    table = paired_differences(records)
    assert len(table) == 2  # one campaign x two metrics
    acc = _one(table, campaign="bald", metric="accuracy")
    diffs = np.array([_gain(s, 1) for s in SEEDS])  # 0.02, 0.04, 0.06, 0.08
    assert acc["n_seeds"] == 4
    assert acc["frac_labelled"] == pytest.approx(0.2) and acc["n_labelled"] == 20
    assert acc["mean_diff"] == pytest.approx(0.05)
    expected = bootstrap_ci(diffs)
    assert (acc["mean_diff"], acc["ci_lo"], acc["ci_hi"]) == pytest.approx(expected)
    assert 0.02 <= acc["ci_lo"] < 0.05 < acc["ci_hi"] <= 0.08
    assert acc["excludes_zero"]
    # unpaired, the seeds' spread (0.1 per seed) would swamp the gain: the pairing is what
    # makes the interval exclude 0
    assert acc["baseline_mean"] == pytest.approx(0.66)
    pp = _one(table, campaign="bald", metric="predictive_parity")
    assert (pp["mean_diff"], pp["ci_lo"], pp["ci_hi"]) == pytest.approx((-0.01, -0.01, -0.01))
    assert pp["excludes_zero"]


def test_paired_differences_at_frac_picks_table1_round() -> None:
    records = _records()
    acc = _one(paired_differences(records, at_frac=0.15), metric="accuracy")
    assert acc["n_labelled"] == 10  # last round with frac <= 0.15 is round 0
    assert acc["mean_diff"] == pytest.approx(np.mean([_gain(s, 0) for s in SEEDS]))
    # the mean difference is the difference of the Table 1 means
    t1 = report.table1(records.assign(scenario="s"), at_frac=0.15, metrics=("accuracy",))
    gap = t1.set_index("campaign")["accuracy_mean"]
    assert acc["mean_diff"] == pytest.approx(gap["bald"] - gap["uniform"])
    with pytest.raises(ValueError, match="never reaches"):
        paired_differences(records, at_frac=0.5)


def test_paired_differences_default_round_is_common_to_all_campaigns() -> None:
    records = _records(n_rounds=3)
    short = records[~((records["campaign"] == "uniform") & (records["round"] == 2))]
    acc = _one(paired_differences(short), metric="accuracy")
    assert acc["n_labelled"] == 20  # the baseline stops at round 1
    assert acc["mean_diff"] == pytest.approx(0.05)


def test_paired_differences_unpaired_seeds_and_nans_are_left_out() -> None:
    records = _records()
    records = records[~((records["campaign"] == "uniform") & (records["seed"] == 3))].copy()
    records.loc[(records["campaign"] == "bald") & (records["seed"] == 0), "predictive_parity"] = (
        np.nan
    )
    records.loc[
        (records["campaign"] == "uniform") & (records["seed"] == 1), "predictive_parity"
    ] = np.nan
    table = paired_differences(records)
    acc = _one(table, metric="accuracy")
    assert acc["n_seeds"] == 3
    assert acc["mean_diff"] == pytest.approx(np.mean([_gain(s, 1) for s in (0, 1, 2)]))
    pp = _one(table, metric="predictive_parity")  # only seed 2 has both values
    assert pp["n_seeds"] == 1 and pp["mean_diff"] == pytest.approx(-0.01)
    assert pp["baseline_mean"] == pytest.approx(0.3)


def test_paired_differences_keeps_scenarios_apart() -> None:
    a = _records(scenario="a")
    b = _records(scenario="b")
    b.loc[b["campaign"] == "bald", "accuracy"] -= 0.5  # a different, negative effect
    table = paired_differences(pd.concat([a, b], ignore_index=True))
    assert list(table["scenario"]) == ["a", "a", "b", "b"]
    assert _one(table, scenario="a", metric="accuracy")["mean_diff"] == pytest.approx(0.05)
    assert _one(table, scenario="b", metric="accuracy")["mean_diff"] == pytest.approx(-0.45)
    pairs = paired_rounds(pd.concat([a, b], ignore_index=True))
    assert len(pairs) == 2 * len(SEEDS) * 2


def test_paired_differences_named_baseline_and_fallback() -> None:
    records = _records()
    flipped = _one(paired_differences(records, baseline="bald"), metric="accuracy")
    assert flipped["campaign"] == "uniform" and flipped["baseline"] == "bald"
    assert flipped["mean_diff"] == pytest.approx(-0.05)
    assert not flipped["baseline_fallback"]
    # no campaign named "random": the first campaign ("uniform") is the baseline, flagged
    fallback = paired_differences(records, baseline="random")
    assert set(fallback["baseline"]) == {"uniform"} and fallback["baseline_fallback"].all()
    assert _one(fallback, metric="accuracy")["mean_diff"] == pytest.approx(0.05)
    md = report.format_paired(fallback, baseline="random")
    assert "No campaign is named 'random'" in md and "'uniform', is the baseline" in md


def test_paired_differences_single_campaign_and_missing_metric() -> None:
    only = _records()
    only = only[only["campaign"] == "uniform"]
    assert paired_differences(only).empty
    assert paired_rounds(only).empty
    assert "nothing to compare" in report.format_paired(paired_differences(only))
    with pytest.raises(ValueError, match="no_such_metric"):
        paired_differences(_records(), metrics=("accuracy", "no_such_metric"))


def test_format_paired_marks_cis_excluding_zero_and_shows_seeds() -> None:
    records = _records(scenario="minority_group")
    # a third campaign equal to the baseline except seed-dependent noise around 0
    noise = records[records["campaign"] == "uniform"].copy()
    noise["campaign"] = "noisy"
    noise["accuracy"] += np.where(noise["seed"] % 2 == 0, 0.03, -0.03)
    table = paired_differences(pd.concat([records, noise], ignore_index=True))
    md = report.format_paired(table)
    assert "### Minority group @ 20% labelled: campaign − uniform" in md
    assert "Δ Accuracy (pp)" in md and "Δ Predictive parity δA (pp)" in md
    _, lo, hi = bootstrap_ci(np.array([_gain(s, 1) for s in SEEDS]))
    bald = f"| bald | +5.00 [+{100 * lo:.2f}, +{100 * hi:.2f}] * | -1.00 [-1.00, -1.00] * | 4 |"
    assert bald in md.splitlines()
    # noise symmetric about 0 and an identical δA: no star on either cell
    noisy = next(line for line in md.splitlines() if line.startswith("| noisy |"))
    assert "*" not in noisy and noisy.endswith("| +0.00 [+0.00, +0.00] | 4 |"), noisy
    assert "* marks a CI that excludes 0" in md


def test_format_paired_single_seed_has_no_ci() -> None:
    records = _records(scenario="s")
    md = report.format_paired(paired_differences(records[records["seed"] == 2]))
    row = next(line for line in md.splitlines() if line.startswith("| bald |"))
    assert row == "| bald | +6.00 [–, –] | -1.00 [–, –] | 1 |"


# --------------------------------------------------------------------------- write_report


def test_write_report_writes_paired_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _records(scenario="sensitive_attribute").to_csv(run_dir / "rounds.csv", index=False)
    paths = report.write_report([run_dir], tmp_path / "rep")
    for name in ("paired.md", "paired.csv", "paired_rounds.csv", "paired_differences.png"):
        assert paths[name] == tmp_path / "rep" / name and paths[name].is_file(), name
    png = paths["paired_differences.png"].read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1024
    md = paths["paired.md"].read_text("utf-8")
    assert md.startswith("## Paired differences against 'uniform'")
    assert "| bald | +5.00 [" in md and "| Seeds |" in md and md.count(" * |") == 2
    csv = pd.read_csv(paths["paired.csv"])
    acc = _one(csv, metric="accuracy")
    assert acc["n_seeds"] == 4 and acc["baseline"] == "uniform" and bool(acc["excludes_zero"])
    assert acc["mean_diff"] == pytest.approx(0.05)
    per_round = pd.read_csv(paths["paired_rounds.csv"])
    assert len(per_round) == len(SEEDS) * 2
    assert per_round["accuracy_diff"].tolist() == pytest.approx(
        [_gain(s, r) for s in SEEDS for r in (0, 1)]
    )
    # the baseline is a parameter
    other = report.write_report([run_dir], tmp_path / "rep2", baseline="bald", at_frac=0.1)
    acc = _one(pd.read_csv(other["paired.csv"]), metric="accuracy")
    assert acc["campaign"] == "uniform" and acc["n_labelled"] == 10
    assert acc["mean_diff"] == pytest.approx(-0.025)
    assert "against 'bald'" in other["paired.md"].read_text("utf-8")


def test_write_report_single_campaign_still_writes_paired_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = _records(scenario="s")
    records[records["campaign"] == "bald"].to_csv(run_dir / "rounds.csv", index=False)
    paths = report.write_report([run_dir], tmp_path / "rep")
    assert "nothing to compare" in paths["paired.md"].read_text("utf-8")
    assert pd.read_csv(paths["paired.csv"]).empty
    assert paths["paired_differences.png"].read_bytes()[:8] == PNG_MAGIC
