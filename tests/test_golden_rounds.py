"""The campaign layer reproduces, record for record, what rayfal produced before it was
restructured: selections, labels and metrics of ``jobs/tiny.yaml`` (whole job) and
the first quickstart job (seed 0, its first three rounds; every strategy of the job; frozen as
``tests/fixtures/golden/quickstart_job.yaml`` when ``jobs/quickstart.yaml`` was redesigned),
against fixtures recorded with the previous code (``tests/fixtures/golden``). Timing fields are
left out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import rayfal

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def _records(run_dir: Path) -> list[dict]:
    out = []
    for p in sorted(run_dir.glob("campaigns/*/seed_*/rounds/round_*.json")):
        rec = json.loads(p.read_text())
        out.append({k: v for k, v in rec.items() if not k.endswith("_seconds")})
    return sorted(out, key=lambda r: (r["campaign"], r["seed"], r["round"]))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _assert_equal(got: list[dict], want: list[dict]) -> None:
    assert [(r["campaign"], r["seed"], r["round"]) for r in got] == \
        [(r["campaign"], r["seed"], r["round"]) for r in want]
    for g, w in zip(got, want, strict=True):
        where = f"{w['campaign']} seed {w['seed']} round {w['round']}"
        assert sorted(g) == sorted(w), f"{where}: keys differ: {set(g) ^ set(w)}"
        diff = {k: (g[k], w[k]) for k in w if not _same(g[k], w[k])}
        assert not diff, f"{where}: {diff}"


#: the keys only a round that queries has (the last round of a run selects nothing)
QUERY_KEYS = {"selected", "selected_labels", "n_queried", "query_frac_group_0", "query_frac_group_1",
              "score_nodes"}


@pytest.mark.parametrize("job, overrides", [
    ("tiny", []),
    # seed 0, rounds 0-2 of 4 (30, 70, 110 labels): a round's record does not depend on later
    # rounds, except that the run's last round (here round 2) queries nothing
    ("quickstart", ["seeds=[0]", "al.max_frac=0.0734"]),
])
def test_rounds_identical_to_recorded(ray_session, tmp_path: Path, job: str,
                                      overrides: list[str]) -> None:
    want = [r for r in json.loads((GOLDEN / f"{job}.json").read_text())
            if job != "quickstart" or (r["seed"] == 0 and r["round"] <= 2)]
    run_dir = tmp_path / job
    job_file = GOLDEN / "quickstart_job.yaml" if job == "quickstart" else REPO / "jobs" / "tiny.yaml"
    rayfal.run(rayfal.load_job(job_file, overrides), run_dir,
               progress=False, report=False)
    got = _records(run_dir)
    if job == "quickstart":  # the truncated run's last round: all but the query's keys
        last = max(r["round"] for r in got)
        got, want = ([{k: v for k, v in r.items() if r["round"] < last or k not in QUERY_KEYS}
                      for r in records] for records in (got, want))
    _assert_equal(got, want)
