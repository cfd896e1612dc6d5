"""Tests for rayfal.report: Table 1 numbers, round selection, Markdown and PNG outputs."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayfal import report

SCENARIOS = ("sensitive_attribute", "minority_group")
CAMPAIGNS = ("random", "bald+grad(0.5)")
SEEDS = (0, 1, 2)
N_ROUNDS = 4
POOL = 1000
BATCH = 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _accuracy(scenario: str, campaign: str, seed: int, r: int) -> float:
    return (
        0.6
        + 0.05 * r
        + 0.01 * seed**2
        + (0.02 if campaign == "random" else 0.0)
        + (0.1 if scenario == "minority_group" else 0.0)
    )


def _parity(campaign: str, seed: int, r: int) -> float:
    return 0.2 - 0.03 * r + 0.005 * seed * (1 + CAMPAIGNS.index(campaign))


def _rows(scenario: str, campaign: str, seed: int, n_rounds: int = N_ROUNDS) -> list[dict]:
    rows = []
    for r in range(n_rounds):
        n = BATCH * (r + 1)
        acc = _accuracy(scenario, campaign, seed, r)
        pp = _parity(campaign, seed, r)
        minority_q = 0.1 if campaign == "random" else 0.3 + 0.02 * seed
        last = r == n_rounds - 1
        rows.append(
            {
                "scenario": scenario,
                "campaign": campaign,
                "strategy": campaign.split("+")[0],
                "seed": seed,
                "round": r,
                "n_labelled": n,
                "frac_labelled": n / POOL,
                "accuracy": acc,
                "nll": 0.7 - 0.1 * r + 0.01 * seed + 0.05 * CAMPAIGNS.index(campaign),
                "predictive_parity": pp,
                "worst_group_accuracy": acc - pp / 2,
                "demographic_parity_difference": 0.05,
                "equalized_odds_difference": float("nan"),
                "acc_group_0": acc + pp / 2,
                "acc_group_1": acc - pp / 2,
                "epistemic_gap": (0.1 / (r + 1) + 0.01 * seed) * (1 + CAMPAIGNS.index(campaign)),
                "bald_group_0": 0.2,
                "bald_group_1": 0.2 + 0.1 / (r + 1),
                "n_queried": 0 if last else BATCH,
                "query_frac_group_0": float("nan") if last else 1 - minority_q,
                "query_frac_group_1": float("nan") if last else minority_q,
                "pool_frac_group_0": 0.9,
                "pool_frac_group_1": 0.1,
                "labelled_frac_group_0": 0.9 - 0.01 * r,
                "labelled_frac_group_1": 0.1 + 0.01 * r,
                "train_seconds": 2.0 + r,
                "eval_seconds": 0.5,
                "score_seconds": 0.0 if last else 1.0,
                "some_future_column": "ignored",
            }
        )
    return rows


def _frame(**short: int) -> pd.DataFrame:
    """Full synthetic grid; ``short={campaign: n_rounds}`` truncates campaigns in scenario 0."""
    rows = []
    for scenario in SCENARIOS:
        for campaign in CAMPAIGNS:
            for seed in SEEDS:
                n = short.get(campaign, N_ROUNDS) if scenario == SCENARIOS[0] else N_ROUNDS
                rows += _rows(scenario, campaign, seed, n)
    return pd.DataFrame(rows)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    _frame().to_csv(d / "rounds.csv", index=False)
    return d


@pytest.fixture
def rounds(run_dir: Path) -> pd.DataFrame:
    return report.load_rounds([run_dir])


def _cell(table: pd.DataFrame, scenario: str, campaign: str) -> pd.Series:
    hit = table[(table["scenario"] == scenario) & (table["campaign"] == campaign)]
    assert len(hit) == 1
    return hit.iloc[0]


# --------------------------------------------------------------------------- loading


def test_load_rounds_concatenates_and_keeps_types(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    extra = pd.DataFrame(_rows("sensitive_attribute", "random", 7))
    extra.to_csv(other / "rounds.csv", index=False)
    df = report.load_rounds([run_dir, str(other)])
    assert len(df) == len(SCENARIOS) * len(CAMPAIGNS) * len(SEEDS) * N_ROUNDS + N_ROUNDS
    assert set(df["run_dir"]) == {str(run_dir), str(other)}
    assert df["campaign"].tolist()[0] == "random"
    assert "bald+grad(0.5)" in set(df["campaign"])


def test_load_rounds_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*rounds\.csv"):
        report.load_rounds([missing])


def test_load_rounds_missing_columns_are_named(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    _frame().drop(columns=["frac_labelled", "seed"]).to_csv(d / "rounds.csv", index=False)
    with pytest.raises(ValueError, match="seed, frac_labelled") as err:
        report.load_rounds([d])
    assert "rounds.csv" in str(err.value)


def test_load_rounds_rejects_duplicate_runs(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="pass each run once"):
        report.load_rounds([run_dir, run_dir])


# --------------------------------------------------------------------------- Table 1


def test_table1_default_uses_final_common_fraction(rounds: pd.DataFrame) -> None:
    table = report.table1(rounds)
    assert list(table.columns[:5]) == [
        "scenario",
        "campaign",
        "frac_labelled",
        "n_labelled",
        "n_seeds",
    ]
    assert {"accuracy_mean", "accuracy_std", "predictive_parity_std"} <= set(table.columns)
    assert len(table) == len(SCENARIOS) * len(CAMPAIGNS)
    assert (table["n_seeds"] == 3).all()
    assert np.allclose(table["frac_labelled"], 0.2)

    # Hand-computed cell: minority_group / random at the last round (r = 3).
    cell = _cell(table, "minority_group", "random")
    accs = [0.6 + 0.15 + 0.01 * s**2 + 0.02 + 0.1 for s in SEEDS]  # 0.87, 0.88, 0.91
    assert cell["accuracy_mean"] == pytest.approx(statistics.mean(accs))
    assert cell["accuracy_std"] == pytest.approx(statistics.stdev(accs))
    assert cell["accuracy_mean"] == pytest.approx(0.886666666, abs=1e-8)
    pps = [0.2 - 0.09 + 0.005 * s for s in SEEDS]
    assert cell["predictive_parity_mean"] == pytest.approx(statistics.mean(pps))
    assert cell["predictive_parity_std"] == pytest.approx(0.005)


def test_table1_default_is_limited_by_shortest_campaign(run_dir: Path) -> None:
    _frame(**{"bald+grad(0.5)": 3}).to_csv(run_dir / "rounds.csv", index=False)
    table = report.table1(report.load_rounds([run_dir]))
    first = table[table["scenario"] == "sensitive_attribute"]
    assert np.allclose(first["frac_labelled"], 0.15)  # round 2 for every campaign
    cell = _cell(table, "sensitive_attribute", "random")
    assert cell["accuracy_mean"] == pytest.approx(
        statistics.mean(_accuracy("sensitive_attribute", "random", s, 2) for s in SEEDS)
    )
    second = table[table["scenario"] == "minority_group"]
    assert np.allclose(second["frac_labelled"], 0.2)  # other scenario unaffected


@pytest.mark.parametrize(
    ("at_frac", "expected_round"), [(0.10, 1), (0.12, 1), (0.15, 2), (0.05, 0), (0.2, 3)]
)
def test_table1_at_frac_picks_last_round_not_above(
    rounds: pd.DataFrame, at_frac: float, expected_round: int
) -> None:
    table = report.table1(rounds, at_frac=at_frac, metrics=("accuracy",))
    cell = _cell(table, "sensitive_attribute", "bald+grad(0.5)")
    assert cell["frac_labelled"] == pytest.approx((expected_round + 1) * BATCH / POOL)
    assert cell["n_labelled"] == (expected_round + 1) * BATCH
    expected = [
        _accuracy("sensitive_attribute", "bald+grad(0.5)", s, expected_round) for s in SEEDS
    ]
    assert cell["accuracy_mean"] == pytest.approx(statistics.mean(expected))


def test_table1_at_frac_tolerates_float_noise(rounds: pd.DataFrame) -> None:
    noisy = rounds.copy()
    noisy["frac_labelled"] = noisy["frac_labelled"] * (1 + 1e-12)
    table = report.table1(noisy, at_frac=0.15)
    assert np.allclose(table["n_labelled"], 150)


def test_table1_errors_on_campaign_that_never_reaches_at_frac(run_dir: Path) -> None:
    _frame(**{"bald+grad(0.5)": 2}).to_csv(run_dir / "rounds.csv", index=False)
    rounds = report.load_rounds([run_dir])
    with pytest.raises(ValueError, match=r"bald\+grad\(0\.5\).*never reaches"):
        report.table1(rounds, at_frac=0.2)
    report.table1(rounds, at_frac=0.1)  # reached by every campaign: fine


def test_table1_errors_when_at_frac_below_first_round(rounds: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"'random'.*no round with frac_labelled <= 0.01"):
        report.table1(rounds, at_frac=0.01)


def test_table1_missing_metric_is_named(rounds: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no_such_metric"):
        report.table1(rounds, metrics=("accuracy", "no_such_metric"))


def test_table1_single_seed_has_nan_std(rounds: pd.DataFrame) -> None:
    table = report.table1(rounds[rounds["seed"] == 0])
    assert (table["n_seeds"] == 1).all()
    assert table["accuracy_std"].isna().all()
    md = report.format_table1(table)
    assert "± –" in md


# --------------------------------------------------------------------------- Markdown


def test_format_table1_markdown(rounds: pd.DataFrame) -> None:
    table = report.table1(rounds, metrics=("predictive_parity", "accuracy", "nll"))
    md = report.format_table1(table)
    assert md.count("±") >= len(table) * 3
    for name in CAMPAIGNS:
        assert f"| {name} |" in md
    assert "### Sensitive attribute @ 20% labelled (200 labels)" in md
    assert "### Minority group @ 20% labelled" in md
    assert "Predictive parity δA (%)" in md and "Accuracy (%)" in md
    assert "NLL |" in md and "NLL (%)" not in md  # nll is never scaled
    cell = _cell(table, "minority_group", "random")
    expected = f"{100 * cell['accuracy_mean']:.2f} ± {100 * cell['accuracy_std']:.2f}"
    assert expected in md
    raw = report.format_table1(table, percent=False)
    assert f"{cell['accuracy_mean']:.2f} ± {cell['accuracy_std']:.2f}" in raw
    # one heading per scenario, in order of appearance
    headings = [line for line in md.splitlines() if line.startswith("###")]
    assert [h.split(" @ ")[0] for h in headings] == [
        "### Sensitive attribute",
        "### Minority group",
    ]


# --------------------------------------------------------------------------- other tables


def test_selection_table_flags_under_selection(rounds: pd.DataFrame) -> None:
    sel = report.selection_table(rounds)
    row = sel[
        (sel["scenario"] == "sensitive_attribute")
        & (sel["campaign"] == "random")
        & (sel["group"] == "1")
    ].iloc[0]
    assert row["query_share"] == pytest.approx(0.1)
    assert row["pool_share_initial"] == pytest.approx(0.1)
    assert row["labelled_share_final"] == pytest.approx(0.13)
    assert row["selection_ratio"] == pytest.approx(1.0)
    bald = sel[(sel["campaign"] == "bald+grad(0.5)") & (sel["group"] == "1")].iloc[0]
    assert bald["query_share"] == pytest.approx(0.32)  # mean over seeds of 0.30, 0.32, 0.34
    assert bald["selection_ratio"] == pytest.approx(3.2)


def test_timings_table(rounds: pd.DataFrame) -> None:
    tim = report.timings_table(rounds)
    row = tim[(tim["scenario"] == "minority_group") & (tim["campaign"] == "random")].iloc[0]
    assert row["train_seconds_mean"] == pytest.approx(3.5)
    assert row["eval_seconds_mean"] == pytest.approx(0.5)
    assert row["score_seconds_mean"] == pytest.approx(0.75)
    assert row["total_seconds_mean"] == pytest.approx(4.75)
    assert row["n_rounds"] == N_ROUNDS * len(SEEDS)


# --------------------------------------------------------------------------- report + plots


def _assert_png(path: Path, colours: tuple[str, ...] = ()) -> None:
    """A PNG that decodes, has a plausible size and is not blank: a good share of inked
    pixels, many distinct colours, and every colour in ``colours`` drawn somewhere."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    h, w, _ = rgb.shape
    assert w >= 400 and h >= 250, (path, w, h)
    ink = (rgb < 245).any(axis=2)
    assert ink.mean() > 0.01, (path, ink.mean())  # not an empty canvas
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20, path  # lines, text, bands
    for colour in colours:
        want = np.round(np.asarray(to_rgb(colour)) * 255).astype(int)
        assert (np.abs(rgb - want).max(axis=2) <= 3).sum() >= 20, (path, colour)


class _Captured(list):
    """The figures the plot functions build, captured at ``plots.save`` (which still runs)."""


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> _Captured:
    from rayfal.report import plots

    captured = _Captured()
    real_save = plots.save

    def spy(fig, out_path):
        captured.append(fig)
        return real_save(fig, out_path)

    monkeypatch.setattr(plots, "save", spy)
    return captured


def _mean_over_seeds(fn) -> list[float]:
    """Per round: the mean over SEEDS of ``fn(seed, r)``, computed here, not with pandas."""
    return [statistics.fmean(fn(s, r) for s in SEEDS) for r in range(N_ROUNDS)]


def _lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {ln.get_label(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_curves_draw_the_mean_over_seeds_per_campaign(tmp_path: Path, figures) -> None:
    """Fig. 2/3: the data behind the lines, one panel per metric and scenario, against means
    computed from the generating formulas; the band spans mean ± the sample std."""
    df = _frame()
    out = report.plot_curves(df, tmp_path / "curves.png", metrics=("accuracy", "nll"))
    _assert_png(out, colours=("C0", "C1"))
    (fig,) = figures
    assert [sf._suptitle.get_text() for sf in fig.subfigs] == ["Sensitive attribute",
                                                               "Minority group"]
    x_want = [BATCH * (r + 1) for r in range(N_ROUNDS)]
    for sfig, scenario in zip(fig.subfigs, SCENARIOS, strict=True):
        acc_ax, nll_ax = sfig.axes
        for ci, campaign in enumerate(CAMPAIGNS):
            x, y = _lines(acc_ax)[campaign]
            np.testing.assert_allclose(x, x_want)
            np.testing.assert_allclose(
                y, _mean_over_seeds(lambda s, r, c=campaign, sc=scenario: _accuracy(sc, c, s, r)))
            x, y = _lines(nll_ax)[campaign]
            np.testing.assert_allclose(
                y, _mean_over_seeds(lambda s, r, ci=ci: 0.7 - 0.1 * r + 0.01 * s + 0.05 * ci))
        # accuracy std over seeds = 0.01 * std(seed^2) (the same every round)
        sd = 0.01 * statistics.stdev(s**2 for s in SEEDS)
        mean0 = _mean_over_seeds(lambda s, r, sc=scenario: _accuracy(sc, CAMPAIGNS[0], s, r))
        band = acc_ax.collections[0].get_paths()[0].vertices[:, 1]
        assert band.min() == pytest.approx(min(mean0) - sd)
        assert band.max() == pytest.approx(max(mean0) + sd)


def test_epistemic_gap_draws_the_per_campaign_mean(tmp_path: Path, figures) -> None:
    """Fig. 1: one panel per scenario, one line per campaign at the mean epistemic gap."""
    out = report.plot_epistemic_gap(_frame(), tmp_path / "gap.png")
    _assert_png(out, colours=("C0", "C1"))
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == ["Sensitive attribute", "Minority group"]
    for ax in fig.axes:
        for ci, campaign in enumerate(CAMPAIGNS):
            x, y = _lines(ax)[campaign]
            np.testing.assert_allclose(x, [BATCH * (r + 1) for r in range(N_ROUNDS)])
            np.testing.assert_allclose(y, _mean_over_seeds(
                lambda s, r, ci=ci: (0.1 / (r + 1) + 0.01 * s) * (1 + ci)))
            assert (np.diff(y) < 0).all()  # the gap shrinks as labels are added


def test_selection_audit_draws_the_minority_share(tmp_path: Path, figures) -> None:
    """Two groups: only the minority (group 1, 10% of the pool) is drawn; the queried batch's
    share per round (none in the final round), the pool's and the labelled set's."""
    out = report.plot_selection_audit(_frame(), tmp_path / "audit.png")
    _assert_png(out)
    (fig,) = figures
    for sfig in fig.subfigs:
        assert "share of group 1" in sfig._suptitle.get_text()
        for ax, campaign in zip(sfig.axes, CAMPAIGNS, strict=True):
            assert ax.get_title() == campaign
            lines = _lines(ax)
            x, q = lines["queried batch"]
            np.testing.assert_allclose(x, range(N_ROUNDS - 1))  # the last round queries nothing
            want = 0.1 if campaign == "random" else statistics.fmean(0.3 + 0.02 * s
                                                                      for s in SEEDS)
            np.testing.assert_allclose(q, want)
            np.testing.assert_allclose(lines["unlabelled pool"][1], 0.1)
            np.testing.assert_allclose(lines["labelled set"][1],
                                       [0.1 + 0.01 * r for r in range(N_ROUNDS)])


def test_write_report_creates_all_files(run_dir: Path) -> None:
    paths = report.write_report([run_dir])
    expected = {
        "table1.md",
        "table1.csv",
        "rounds_all.csv",
        "curves.png",
        "epistemic_gap.png",
        "selection_audit.png",
        "selection_audit.csv",
        "timings.csv",
        "paired.md",
        "paired.csv",
        "paired_rounds.csv",
        "paired_differences.png",
    }
    assert set(paths) == expected
    for name, path in paths.items():
        assert path == run_dir / "report" / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in (
        "curves.png",
        "epistemic_gap.png",
        "selection_audit.png",
        "paired_differences.png",
    ):
        _assert_png(paths[name])
    md = paths["table1.md"].read_text("utf-8")
    assert "±" in md and "random" in md and "bald+grad(0.5)" in md
    t1 = pd.read_csv(paths["table1.csv"])
    assert len(t1) == 4 and "predictive_parity_mean" in t1.columns
    assert len(pd.read_csv(paths["rounds_all.csv"])) == 2 * 2 * 3 * N_ROUNDS
    tim = pd.read_csv(paths["timings.csv"])
    assert {"train_seconds_mean", "eval_seconds_mean", "score_seconds_mean"} <= set(tim.columns)


def test_write_report_out_dir_and_at_frac(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "rep"
    paths = report.write_report([run_dir], out, at_frac=0.1)
    assert paths["curves.png"].parent == out
    t1 = pd.read_csv(paths["table1.csv"])
    assert np.allclose(t1["frac_labelled"], 0.1)
    assert "@ 10% labelled" in paths["table1.md"].read_text("utf-8")


def test_plots_survive_missing_optional_columns(run_dir: Path, tmp_path: Path) -> None:
    df = _frame()
    optional = [c for c in df.columns if c not in report.REQUIRED_COLUMNS and c != "accuracy"]
    df[list(report.REQUIRED_COLUMNS) + ["accuracy"]].to_csv(run_dir / "rounds.csv", index=False)
    paths = report.write_report([run_dir], tmp_path / "minimal")
    for name in ("curves.png", "epistemic_gap.png", "selection_audit.png"):
        _assert_png(paths[name])
    assert "Accuracy (%)" in paths["table1.md"].read_text("utf-8")
    assert optional  # the frame really lost columns


def test_selection_audit_many_groups_and_single_seed(tmp_path: Path) -> None:
    df = _frame()
    df = df[df["seed"] == 0].copy()
    for prefix in ("query_frac_group_", "pool_frac_group_", "labelled_frac_group_"):
        df[f"{prefix}2"] = 0.05
    out = report.plot_selection_audit(df, tmp_path / "audit3.png")
    _assert_png(out)
    gap = report.plot_epistemic_gap(df, tmp_path / "gap.png")
    _assert_png(gap)


def test_format_handles_nan_mean() -> None:
    table = pd.DataFrame(
        {
            "scenario": ["s"],
            "campaign": ["c|x"],
            "frac_labelled": [0.1],
            "n_labelled": [10.0],
            "n_seeds": [2],
            "accuracy_mean": [math.nan],
            "accuracy_std": [math.nan],
        }
    )
    md = report.format_table1(table)
    assert "| c\\|x | – | 2 |" in md
