"""benchmarks/fral_jin_tables.py recomputes FRAL's tables from a small hand-made rounds CSV:
paired differences (per seed, after the last round) with bootstrap CIs, Table 1's
Initialization row, the per-round summary, and the published CSV (no row lists, no paths)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from rayfal.report.paired import bootstrap_ci

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fral_jin_tables.py"


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fral_jin_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# F_rob after the last round (round 1) per seed; round 0 is shared by all campaigns of a seed
LAST_F_ROB = {"jin": [0.50, 0.54, 0.58], "group_random": [0.48, 0.50, 0.52],
              "random": [0.45, 0.49, 0.53], "jin_std": [0.50, 0.54, 0.58]}
INIT_F_ROB = [0.30, 0.32, 0.34]


def _rows() -> pd.DataFrame:
    rows = []
    for camp, last in LAST_F_ROB.items():
        for seed in range(3):
            for r in (0, 1):
                f_rob = INIT_F_ROB[seed] if r == 0 else last[seed]
                rows.append({
                    "campaign": camp, "strategy": camp, "seed": seed, "round": r,
                    "n_labelled": 500 + 50 * r, "n_queried": 50 if r else 0,
                    "F_std": 0.6 + 0.01 * seed, "std_disparity": 0.10,
                    "std_group_avg": 0.7, "F_rob": f_rob,
                    # JIN's robust disparity is 0.02 *higher* than G-RAND's on every seed
                    "rob_disparity": 0.12 if (camp == "jin" and r) else 0.10,
                    "rob_group_avg": f_rob + 0.05, "rob_acc_group_0": f_rob + 0.10,
                    "rob_acc_group_1": f_rob, "std_acc_group_0": 0.8, "std_acc_group_1": 0.6,
                    "worst_group": (1 if seed < 2 else 0) if (r == 0 and "jin" in camp
                                                             or camp == "group_random")
                    else np.nan,
                    "ms_std_accuracy": 0.9 if camp == "jin" else np.nan,
                    "jin_grand_jaccard": 0.1 * (seed + 1) if camp == "jin" else np.nan,
                    "score_seconds": 1.0, "train_seconds": 2.0,
                })
    return pd.DataFrame(rows)


def test_paired_differences_per_seed_after_the_last_round(tables) -> None:
    p = tables.paired(_rows())
    row = p[(p["campaign"] == "jin") & (p["baseline"] == "group_random")
            & (p["metric"] == "F_rob")].iloc[0]
    # per-seed differences 0.02, 0.04, 0.06 (the last round's, not round 0's zeros)
    want = bootstrap_ci([0.02, 0.04, 0.06], n_boot=10_000, seed=0)
    assert row["n_seeds"] == 3 and row["mean_diff"] == pytest.approx(0.04)
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx(want[1:])
    assert 0.02 <= row["ci_lo"] < 0.04 < row["ci_hi"] <= 0.06 and row["better"] == "better"
    # identical per-seed differences: a point CI; disparity is "lower is better": worse
    dis = p[(p["campaign"] == "jin") & (p["baseline"] == "group_random")
            & (p["metric"] == "rob_disparity")].iloc[0]
    assert (dis["mean_diff"], dis["ci_lo"], dis["ci_hi"]) == pytest.approx((0.02, 0.02, 0.02))
    assert dis["better"] == "worse"
    # JIN - RAND on F_rob: 0.05 on every seed
    jr = p[(p["campaign"] == "jin") & (p["baseline"] == "random") & (p["metric"] == "F_rob")]
    assert jr.iloc[0]["mean_diff"] == pytest.approx(0.05)
    # equal runs: 0 with a point CI, not significant
    same = p[(p["campaign"] == "jin_std") & (p["metric"] == "F_rob")].iloc[0]
    assert same["baseline"] == "jin" and same["mean_diff"] == 0 and same["better"] == "n.s."
    # no entropy / jin_rob campaign here: those pairs are left out, not NaN rows
    assert not ((p["baseline"] == "entropy") | (p["campaign"] == "jin_rob")).any()
    md = tables.paired_markdown(p)
    assert "| JIN − G-RAND | " in md and "+4.00 [" in md and "+2.00 [+2.00, +2.00] *" in md


def test_unpaired_seeds_are_left_out(tables) -> None:
    df = _rows()
    df = df[~((df["campaign"] == "group_random") & (df["seed"] == 2))]
    row = tables.paired(df).query("campaign == 'jin' and baseline == 'group_random' "
                                  "and metric == 'F_rob'").iloc[0]
    assert row["n_seeds"] == 2 and row["mean_diff"] == pytest.approx(0.03)


def test_table1_initialization_and_per_round_summary(tables) -> None:
    df = _rows()
    t1 = tables.table1(df)
    init = next(line for line in t1.splitlines() if line.startswith("| Initialization"))
    assert "32.00 ± 2.00" in init and "| 3 |" in init  # F_rob at round 0 over the 3 seeds
    jin = next(line for line in t1.splitlines() if line.startswith("| JIN |"))
    assert "54.00 ± 4.00" in jin and "75.07±0.53" in jin  # ours, and the paper's beside
    pr = tables.per_round(df).set_index(["campaign", "round"])
    assert pr.loc[("jin", 1), "rob_acc_group_1"] == pytest.approx(0.54)
    assert pr.loc[("jin", 1), "rob_acc_group_0"] == pytest.approx(0.64)
    assert pr.loc[("jin", 0), "zstar_is_1"] == pytest.approx(2 / 3)
    assert pr.loc[("jin", 1), "jin_grand_jaccard"] == pytest.approx(0.2)
    assert np.isnan(pr.loc[("random", 1), "ms_std_accuracy"])
    assert list(pr.index.get_level_values(0).unique()) == ["random", "group_random", "jin",
                                                           "jin_std"]
    md = tables.per_round_markdown(tables.per_round(df))
    assert "| JIN | 1 | 64.0 | 54.0 |" in md


def test_main_writes_published_csv_and_recomputes_from_it(tables, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for rec in _rows().to_dict("records"):
        d = run / "campaigns" / rec["campaign"] / f"seed_{rec['seed']}" / "rounds"
        d.mkdir(parents=True, exist_ok=True)
        rec = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        rec.update(selected=[1, 2, 3], checkpoint="/home/someone/run/model.safetensors")
        (d / f"round_{rec['round']:03d}.json").write_text(json.dumps(rec))
    out = tmp_path / "out"
    tables.main([str(run), "--out", str(out)])
    csv = pd.read_csv(out / "rounds_all.csv")
    assert "selected" not in csv.columns and "checkpoint" not in csv.columns
    assert {"rob_acc_group_0", "rob_acc_group_1", "jin_grand_jaccard"} <= set(csv.columns)
    assert len(csv) == 24
    assert (out / "fral_tables.md").read_text() == tables.render_from_csv(out / "rounds_all.csv")
    got = pd.read_csv(out / "paired.csv")
    want = tables.paired(_rows())
    np.testing.assert_allclose(got["mean_diff"], want["mean_diff"], rtol=0, atol=1e-12)
