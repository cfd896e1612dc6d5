"""``variants:`` in a job file (README: "one sub-run per variant, e.g. the two scenarios"):
:func:`rayfal.config.expand_variants` gives one validated job per variant, and running the job
(:func:`rayfal.api.run` on the session's local Ray) runs each of them in ``RUN_DIR/<variant>``
with its own data, settings and records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rayfal.config import ConfigError, expand_variants, load_job


def _job(tmp_path: Path, **extra) -> Path:
    job = {
        "name": "variants", "seeds": [0],
        "dataset": {"name": "glyphs", "scenario": "sensitive_attribute", "n_pool": 160,
                    "n_test": 60, "seed": 0, "shard_rows": 80},
        "model": {"name": "cnn", "width": 4, "hidden": 16},
        "training": {"epochs": 1, "min_steps": 2},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 1, "max_frac": None},
        "scoring": {"mc_samples": 2}, "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "random"}],
        "variants": [
            {"name": "sens", "set": {"al.query_size": 10}},
            {"name": "minority", "set": {"dataset.scenario": "minority_group",
                                         "al.query_size": 5}},
        ],
        **extra,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_expand_variants_gives_one_validated_job_per_variant(tmp_path) -> None:
    cfg, resolved = load_job(_job(tmp_path))
    subs = expand_variants(cfg, resolved)
    assert [name for name, _, _ in subs] == ["sens", "minority"]
    (_, sens, sens_raw), (_, minority, minority_raw) = subs
    assert (sens.dataset.scenario, sens.al.query_size) == ("sensitive_attribute", 10)
    assert (minority.dataset.scenario, minority.al.query_size) == ("minority_group", 5)
    # everything else is the job's; no sub-job carries variants any more
    assert minority.dataset.n_pool == 160 and minority.training.min_steps == 2
    assert not sens.variants and not minority.variants
    assert sens_raw["variants"] == [] and minority_raw["al"]["query_size"] == 5
    assert resolved["al"]["query_size"] == 10  # the job's own mapping is left alone
    # a job without variants is its own (unnamed) variant
    plain, plain_raw = load_job(_job(tmp_path, variants=[]))
    assert expand_variants(plain, plain_raw) == [("", plain, plain_raw)]
    # a variant setting an unknown key or a bad value fails with the variant's name
    with pytest.raises(ConfigError, match=r"variants\[1\].*minority"):
        cfg2, raw2 = load_job(_job(tmp_path, variants=[
            {"name": "ok", "set": {"al.query_size": 4}},
            {"name": "minority", "set": {"al.query_size": -1}}]))
        expand_variants(cfg2, raw2)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_job_with_variants_runs_each_in_its_own_directory(ray_session, tmp_path) -> None:
    from rayfal.api import run

    run_dir = tmp_path / "run"
    result = run(str(_job(tmp_path)), run_dir, progress=False, report=False)
    recs = result.records
    assert len(recs) == 4  # 2 variants x 1 campaign x 1 seed x (round 0 + 1 query round)
    for name, scenario, query in (("sens", "sensitive_attribute", 10),
                                  ("minority", "minority_group", 5)):
        sub = run_dir / name
        job = yaml.safe_load((sub / "job.yaml").read_text())
        assert job["dataset"]["scenario"] == scenario and job["al"]["query_size"] == query
        assert job["variants"] == []
        # the variant's own data set (under its own run directory), generated for its scenario
        (meta,) = sub.glob("data/glyphs-*/dataset.json")
        assert json.loads(meta.read_text())["scenario"] == scenario
        rounds = pd.read_csv(sub / "rounds.csv")
        assert rounds["round"].tolist() == [0, 1]
        assert rounds["n_labelled"].tolist() == [20, 20 + query]
        assert (rounds["scenario"] == scenario).all()
    assert not (run_dir / "rounds.csv").exists()  # no run outside the variants' directories
