"""The public Python API end to end: a pool written from numpy arrays with
``rayfal.write_pool``, a torch model of the user's own given by import path (defined here, not
in rayfal), a 2-round campaign run with ``rayfal.run`` on the session's local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rayfal
from rayfal.models.custom import WrappedModel, build_custom, load_target

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


class TinyNet(nn.Module):
    """A user's plain classifier (no trunk/head split; an ordinary nn.Dropout)."""

    def __init__(self, input_shape: tuple[int], num_classes: int, *, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _blobs(n: int, seed: int, start: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    group = (rng.random(n) < 0.3).astype(np.int64)
    x = rng.normal(size=(n, 4)) + 1.5 * y[:, None] + 0.5 * group[:, None]
    return {"row_id": np.arange(start, start + n), "group": group,
            "features": x.astype(np.float32), "label": y}


def test_wrapped_model_is_mc_dropout() -> None:
    model = build_custom("test_api:TinyNet", (4,), 2, hidden=8)
    assert isinstance(model, WrappedModel)
    assert model.embed(torch.zeros(3, 4)).shape == (3, 4)
    model.eval()
    x = torch.randn(5, 4)
    assert not torch.equal(model(x), model(x)), "dropout must stay on (MC dropout) in eval"


@pytest.mark.parametrize("target, fragment", [
    ("test_api", "expected 'package.module:Class'"),
    ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
    ("test_api:Missing", "has no attribute 'Missing'"),
    ("__main__:Net", "cannot be imported by Ray workers"),
])
def test_load_target_errors(target: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        load_target(target)


def test_python_api_campaign_with_own_model(ray_session, tmp_path: Path) -> None:
    pool_glob = rayfal.write_pool(tmp_path / "data" / "pool", shard_rows=150, **_blobs(400, 0, 0))
    test_glob = rayfal.write_pool(tmp_path / "data" / "test", **_blobs(200, 1, 10_000))
    assert len(list((tmp_path / "data" / "pool").glob("part-*.parquet"))) == 3
    job = rayfal.load_job({
        "name": "api", "seeds": [0],
        "dataset": {"name": "parquet", "pool": str(pool_glob), "test": str(test_glob)},
        "model": {"target": "test_api:TinyNet", "kwargs": {"hidden": 16}},
        "training": {"epochs": 2, "min_steps": 20, "batch_size": 16},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 2, "max_frac": None},
        "scoring": {"mc_samples": 8}, "evaluation": {"mc_samples": 8},
        "campaigns": [{"strategy": "bald"}, {"strategy": "random"}],
    }, overrides={"al.query_size": 15})
    result = rayfal.run(job, tmp_path / "run", progress=False, report=False)
    df = result.records
    assert len(df) == 6  # 2 campaigns x rounds 0, 1, 2
    assert df.groupby("campaign")["n_labelled"].apply(list).to_dict() == {
        "bald": [20, 35, 50], "random": [20, 35, 50]}
    assert (df["accuracy"] > 0.6).all(), df["accuracy"].tolist()
    prov = json.loads((tmp_path / "run/provenance.json").read_text())
    assert len(prov) == 1 and prov[0]["status"] == "finished" and prov[0]["ended"]
    assert {"rayfal", "ray", "torch", "python", "git_commit", "host", "job_fingerprint"} <= \
        set(prov[0])
    spec = json.loads((tmp_path / "run/campaigns/bald/seed_0/round_000/model.json").read_text())
    assert spec["spec"]["name"] == "custom" and spec["spec"]["kwargs"]["target"] == \
        "test_api:TinyNet"
    rounds = [json.loads(p.read_text()) for p in
              sorted((tmp_path / "run/campaigns/bald/seed_0/rounds").glob("round_*.json"))]
    picked = rounds[0]["selected"] + rounds[1]["selected"]
    assert len(set(picked)) == 30 and not set(picked) & set(range(10_000, 10_200))
    # BALD and random pick differently from the same initial labels
    other = json.loads((tmp_path / "run/campaigns/random/seed_0/rounds/round_000.json").read_text())
    assert set(other["selected"]) != set(rounds[0]["selected"])


def test_write_pool_rejects_bad_input(tmp_path: Path) -> None:
    good = _blobs(10, 0, 0)
    with pytest.raises(ValueError, match="exactly one of features"):
        rayfal.write_pool(tmp_path, row_id=good["row_id"], group=good["group"])
    with pytest.raises(ValueError, match=r"duplicate row_id values \[3\]"):
        ids = good["row_id"].copy()
        ids[4] = 3
        rayfal.write_pool(tmp_path, row_id=ids, group=good["group"], features=good["features"])
    x = good["features"].copy()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite features in rows with row_id \[2\]"):
        rayfal.write_pool(tmp_path, row_id=good["row_id"], group=good["group"], features=x)
    with pytest.raises(ValueError, match="group has 9 rows"):
        rayfal.write_pool(tmp_path, row_id=good["row_id"], group=good["group"][:9],
                          features=good["features"])
    assert not list(tmp_path.glob("*.parquet"))
