"""Every number of a committed experiment table can be recomputed from its per-seed CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayfal.report import paired_differences, table1

DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiments"


@pytest.mark.parametrize("name", ["quickstart_10seeds", "quickstart_10seeds_pretrained"])
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
