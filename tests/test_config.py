"""Tests of job files: YAML -> validated dataclasses, --set overrides, error messages."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from rayfal.config import (
    ConfigError,
    JobConfig,
    TrainingConfig,
    config_from_dict,
    load_job,
    parse_override,
)

JOBS = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml"))

BASE = """\
name: unit
seeds: [3]
training:
  epochs: 2
al:
  rounds: 1
campaigns:
  - strategy: random
  - strategy: entropy
    label: ent
"""


def _job(tmp_path: Path, text: str = BASE, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _raises(path: Path, overrides: list[str] | None, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_job(path, overrides)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_defaults_fill_in(tmp_path: Path) -> None:
    cfg, resolved = load_job(_job(tmp_path))
    assert isinstance(cfg, JobConfig)
    assert cfg.name == "unit" and cfg.seeds == [3]
    assert cfg.training.epochs == 2
    assert cfg.training.batch_size == TrainingConfig().batch_size == 32
    assert cfg.training.lr == 1e-3 and cfg.training.mode == "standard"
    assert cfg.al.rounds == 1 and cfg.al.max_frac == 0.1 and cfg.al.initial_labels == 20
    assert cfg.dataset.name == "glyphs" and cfg.dataset.dir is None
    assert cfg.scoring.actors == "auto" and cfg.scoring.mc_samples == 20
    assert [c.name for c in cfg.campaigns] == ["random", "ent"]
    assert cfg.campaigns[1].strategy == "entropy" and cfg.campaigns[0].params == {}
    assert resolved == cfg.to_dict()
    assert resolved["training"]["batch_size"] == 32  # the resolved dict has the defaults too


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg, _ = load_job(_job(tmp_path, ""))
    assert cfg == JobConfig()


def test_int_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    cfg, _ = load_job(_job(tmp_path), ["training.lr=1", "scoring.cpus_per_actor=2"])
    assert cfg.training.lr == 1.0 and isinstance(cfg.training.lr, float)
    assert cfg.scoring.cpus_per_actor == 2.0


def test_overrides_apply(tmp_path: Path) -> None:
    path = _job(tmp_path)
    cfg, resolved = load_job(path, [
        "training.epochs=5", "campaigns.0.strategy=bald", "seeds=[1,2]", "al.max_frac=null",
        "dataset.n_pool=300", "campaigns.1.params.foo=1", "name=with=equals",
    ])
    assert cfg.training.epochs == 5
    assert cfg.campaigns[0].strategy == "bald" and cfg.campaigns[0].name == "bald"
    assert cfg.campaigns[1].params == {"foo": 1}
    assert cfg.seeds == [1, 2]
    assert cfg.al.max_frac is None
    assert cfg.dataset.n_pool == 300
    assert cfg.name == "with=equals"
    assert resolved["training"]["epochs"] == 5 and resolved["seeds"] == [1, 2]
    assert "epochs: 2" in path.read_text()  # the file itself is untouched


def test_later_override_wins_and_overrides_can_add_sections(tmp_path: Path) -> None:
    cfg, _ = load_job(_job(tmp_path, "name: x\n"),
                      ["training.epochs=5", "training.epochs=7", "ray.num_cpus=2"])
    assert cfg.training.epochs == 7 and cfg.ray.num_cpus == 2


def test_parse_override() -> None:
    assert parse_override("training.epochs=5") == ("training.epochs", 5)
    assert parse_override(" a.b =[1, 2]") == ("a.b", [1, 2])
    assert parse_override("name=") == ("name", "")
    assert parse_override("x=true") == ("x", True)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_override("training.epochs")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")


@pytest.mark.parametrize(
    ("text", "overrides", "key"),
    [
        ("trainig:\n  epochs: 3\n", None, "trainig"),
        ("training:\n  epoch: 3\n", None, "training.epoch"),
        (BASE, ["training.epoch=3"], "training.epoch"),
        (BASE, ["al.foo.bar=1"], "al.foo"),
        (BASE, ["campaigns.1.stratgy=bald"], "campaigns[1].stratgy"),
        ("dataset:\n  scenario: x\n  bogus: 1\n", None, "dataset.bogus"),
    ],
)
def test_unknown_keys_name_the_dotted_key(tmp_path: Path, text: str, overrides, key: str) -> None:
    path = _job(tmp_path, text)
    msg = _raises(path, overrides, str(path), "unknown key", key)
    assert re.search(rf"(^|[\s,]){re.escape(key)}([;,]|$)", msg), msg
    assert "allowed:" in msg


@pytest.mark.parametrize(
    ("overrides", "key", "what"),
    [
        (["training.epochs=five"], "training.epochs", "integer"),
        (["training.epochs=2.5"], "training.epochs", "integer"),
        (["training.epochs=true"], "training.epochs", "integer"),
        (["training.use_gpu=1"], "training.use_gpu", "true/false"),
        (["training.lr=fast"], "training.lr", "number"),
        (["seeds=3"], "seeds", "list"),
        (["seeds=[1, x]"], "seeds[1]", "integer"),
        (["training=3"], "training", "mapping"),
        (["name=[a]"], "name", "string"),
        (["campaigns.0.params=3"], "campaigns[0].params", "mapping"),
        (["al.rounds=many"], "al.rounds", "integer"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, overrides, key: str, what: str) -> None:
    path = _job(tmp_path)
    _raises(path, overrides, str(path), key, what)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["seeds=[1, 1]"], "seeds"),
        (["seeds=[]"], "seeds"),
        (["campaigns.1.label=random"], "campaigns"),
        (["campaigns.1.strategy=random", "campaigns.1.label=null"], "campaigns"),
        (["campaigns=[]"], "campaigns"),
        (["al.max_frac=0"], "al.max_frac"),
        (["al.max_frac=1.5"], "al.max_frac"),
        (["al.max_frac=-0.1"], "al.max_frac"),
        (["al.rounds=null", "al.max_frac=null"], "al"),
        (["al.rounds=-1"], "al.rounds"),
        (["al.initial_labels=0"], "al.initial_labels"),
        (["al.query_size=0"], "al.query_size"),
        (["scoring.compute=gpus"], "scoring.compute"),
        (["scoring.actors=many"], "scoring.actors"),
        (["scoring.cpus_per_actor=lots"], "scoring.cpus_per_actor"),
        (["scoring.mc_samples=0"], "scoring.mc_samples"),
        (["training.num_workers=-1"], "training.num_workers"),
        (["training.lr=0"], "training"),
        (["dataset.name=parquet"], "dataset"),
    ],
)
def test_validation_errors_name_the_key(tmp_path: Path, overrides, key: str) -> None:
    path = _job(tmp_path)
    _raises(path, overrides, f"{path}: {key}:")


def test_boundary_values_are_valid(tmp_path: Path) -> None:
    cfg, _ = load_job(_job(tmp_path), ["al.max_frac=1", "al.rounds=0", "scoring.compute=tasks",
                                       "scoring.actors=3", "scoring.cpus_per_actor=0.5",
                                       "dataset.name=parquet", "dataset.pool=p/*.parquet",
                                       "dataset.test=t/*.parquet"])
    assert cfg.al.max_frac == 1.0 and cfg.al.rounds == 0
    assert cfg.scoring.actors == 3 and cfg.scoring.cpus_per_actor == 0.5


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("seeds.5=3", "'5' is not a valid list index"),
        ("seeds.x=3", "'x' is not a valid list index"),
        ("campaigns.7.strategy=bald", "'7' is not a valid list index"),
        ("seeds.0.x=1", "'0' is not a section"),
        ("name.x=1", "'name' is not a section"),
    ],
)
def test_bad_override_paths_raise_config_error(tmp_path: Path, override: str, needle: str) -> None:
    _raises(_job(tmp_path), [override], f"--set {override.split('=')[0]}", needle)


def test_missing_file_and_invalid_yaml_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    _raises(missing, None, str(missing), "does not exist")
    _raises(tmp_path, None, str(tmp_path))  # a directory is not a job file
    bad = _job(tmp_path, "name: [unclosed\nseeds: 1\n", name="bad.yaml")
    _raises(bad, None, str(bad), "not valid YAML")
    top = _job(tmp_path, "- a\n- b\n", name="list.yaml")
    _raises(top, None, str(top), "top level must be a mapping")


def test_config_from_dict_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^<cli>: unknown key\(s\) x;"):
        config_from_dict({"x": 1}, source="<cli>")
    assert config_from_dict({"seeds": [4, 5]}).seeds == [4, 5]


def test_shipped_jobs_exist() -> None:
    assert JOBS, "no jobs/*.yaml found"


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_shipped_job_validates(path: Path) -> None:
    cfg, resolved = load_job(path)
    assert cfg.name and cfg.seeds and cfg.campaigns
    assert config_from_dict(resolved, source="resolved") == cfg  # the resolved dict round-trips
    from rayfal.acquisition import STRATEGIES
    from rayfal.training import MODES

    for campaign in cfg.campaigns:
        assert campaign.strategy in STRATEGIES
    assert cfg.training.mode in MODES
