"""``dataset.per_seed``: each campaign seed draws its own data; the strategies of one seed share
it (paired comparisons). Without it every seed sees the same data draw."""

from __future__ import annotations

from pathlib import Path

import pytest

import rayfal
from rayfal.campaign.driver import seed_config
from rayfal.data.ledger import LabelLedger

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _job(per_seed: bool) -> dict:
    return {"name": "seeds", "seeds": [0, 1],
            "dataset": {"name": "glyphs", "n_pool": 120, "n_test": 60, "image_size": 8,
                        "seed": 5, "per_seed": per_seed},
            "model": {"width": 4, "hidden": 8},
            "training": {"epochs": 1, "min_steps": 2},
            "al": {"initial_labels": 10, "query_size": 5, "rounds": 0, "max_frac": None},
            "scoring": {"mc_samples": 2}, "evaluation": {"mc_samples": 2},
            "campaigns": [{"strategy": "random"}, {"strategy": "balanced_oracle"}]}


def _pools(run: Path) -> dict[tuple[str, int], str]:
    return {(c, s): LabelLedger(run / f"campaigns/{c}/seed_{s}/ledger.sqlite").identity()["pool"]
            for c in ("random", "balanced_oracle") for s in (0, 1)}


def test_seed_config_shifts_only_the_data_seed() -> None:
    job = rayfal.load_job(_job(True)).config
    assert seed_config(job, 3).dataset.seed == 8 and seed_config(job, None) is job
    assert seed_config(job, 3).al == job.al


@pytest.mark.parametrize("per_seed", [True, False])
def test_each_seed_draws_its_own_data(ray_session, tmp_path: Path, per_seed: bool) -> None:
    run = tmp_path / "run"
    rayfal.run(rayfal.load_job(_job(per_seed)), run, progress=False, report=False)
    data_dirs = sorted(p.name for p in (run / "data").glob("glyphs-*"))
    pools = _pools(run)
    # the strategies of a seed always share its data
    assert pools[("random", 0)] == pools[("balanced_oracle", 0)]
    assert pools[("random", 1)] == pools[("balanced_oracle", 1)]
    if per_seed:
        assert [d.rsplit("-s", 1)[1].split("-")[0] for d in data_dirs] == ["5", "6"]
        assert pools[("random", 0)] != pools[("random", 1)]
    else:
        assert len(data_dirs) == 1 and pools[("random", 0)] == pools[("random", 1)]
