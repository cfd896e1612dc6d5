"""The README's Python example (docs/examples/own_data.py) runs as written."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "own_data.py"


def test_own_data_example_runs(ray_session, tmp_path: Path) -> None:
    main = runpy.run_path(str(EXAMPLE))["main"]
    result = main(str(tmp_path / "example"))
    df = result.records
    assert set(df["campaign"]) == {"uniform", "bald"} and len(df) == 2 * 2 * 4
    assert (df.groupby(["campaign", "seed"])["n_labelled"].max() == 80).all()
    assert (result.report_dir / "paired.md").is_file()
