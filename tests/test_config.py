"""Tests of job files: YAML -> validated pydantic models, --set overrides, error messages."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from rayfal.config import (
    AdultDataset,
    CampaignConfig,
    ConfigError,
    DatasetConfig,
    GlyphsDataset,
    JobConfig,
    ParquetDataset,
    TrainingConfig,
    campaign_training,
    config_from_dict,
    expand_variants,
    load_job,
    parse_override,
    set_dotted,
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
        "dataset.n_pool=300", "campaigns.1.strategy=jin", "campaigns.1.params.steps=2",
        "name=with=equals",
    ])
    assert cfg.training.epochs == 5
    assert cfg.campaigns[0].strategy == "bald" and cfg.campaigns[0].name == "bald"
    assert cfg.campaigns[1].params == {"steps": 2}
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
    assert re.search(rf": {re.escape(key)}: ", msg), msg
    assert "allowed:" in msg and "\n" not in msg


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
        (["campaigns.1.label=random"], "campaigns[1]"),
        (["campaigns.1.strategy=random", "campaigns.1.label=null"], "campaigns[1]"),
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
        (["training.lr=0"], "training.lr"),
        (["training.lr=.inf"], "training.lr"),
        (["dataset.name=parquet"], "dataset.pool"),
        (["dataset.name=glyph"], "dataset.name"),
        (["dataset.scenario=x"], "dataset.scenario"),
        (["dataset.image_size=4"], "dataset.image_size"),
        (["model.name=resnet"], "model.name"),
        (["model.dropout=1"], "model.dropout"),
        (["model.hidden=0"], "model.hidden"),
        (["oracle.kind=people"], "oracle.kind"),
        (["training.mode=tradez"], "training.mode"),
        (["training.mode=trades+gba"], "training.mode"),
        (["training.mode=grad", "training.mode_params.lam=-1"], "training.mode_params.lam"),
        (["training.mode_params.lam=1"], "training.mode_params.lam"),
        (["training.placement_strategy=FAST"], "training.placement_strategy"),
        (["campaigns.0.strategy=bladd"], "campaigns[0].strategy"),
        (["campaigns.1.strategy=jin", "campaigns.1.params.eps=-1"], "campaigns[1].params.eps"),
        (["campaigns.1.params.foo=1"], "campaigns[1].params.foo"),
        (["campaigns.1.training.epochz=1"], "campaigns[1].training.epochz"),
        (["campaigns.1.training.mode=grad", "campaigns.1.training.mode_params.beta=1"],
         "campaigns[1].training.mode_params.beta"),
        (["campaigns.0.label=a/b"], "campaigns[0].label"),
        (["name=/abs/path"], "name"),
        (["name=.."], "name"),
        (["name="], "name"),
        (["variants=[{name: a}, {name: a}]"], "variants[1].name"),
        (["variants=[{name: x, set: {}, extra: 1}]"], "variants[0].extra"),
        (["scoring.scheduling_strategy=RANDOM"], "scoring.scheduling_strategy"),
        (["evaluation.worst_group_by=robust_accuracy"], "evaluation.worst_group_by"),
        (["evaluation.val_fraction=1"], "evaluation.val_fraction"),
        (["tune={space: {training.lr: 'uniform(0.1, 1)'}, objectives: [{metric: a, mode: up}]}"],
         "tune.objectives[0]"),
    ],
)
def test_validation_errors_name_the_key(tmp_path: Path, overrides, key: str) -> None:
    path = _job(tmp_path)
    msg = _raises(path, overrides, f"{path}: {key}:")
    assert "\n" not in msg


def test_boundary_values_are_valid(tmp_path: Path) -> None:
    for part in ("p/a.parquet", "p/b.parquet", "t/a.parquet"):
        (tmp_path / part).parent.mkdir(exist_ok=True)
        (tmp_path / part).write_bytes(b"")
    cfg, _ = load_job(_job(tmp_path), [
        "al.max_frac=1", "al.rounds=0", "scoring.compute=tasks", "scoring.actors=3",
        "scoring.cpus_per_actor=0.5", f"dataset={{name: parquet, pool: '{tmp_path}/p/*.parquet', "
                                      f"test: '{tmp_path}/t'}}",
        "training.mode=grad + trades", "training.mode_params={lam: 0, beta: 0, steps: 0}",
        "model.dropout=0", "evaluation.val_fraction=0"])
    assert cfg.al.max_frac == 1.0 and cfg.al.rounds == 0
    assert cfg.scoring.actors == 3 and cfg.scoring.cpus_per_actor == 0.5
    assert isinstance(cfg.dataset, ParquetDataset) and cfg.dataset.test == f"{tmp_path}/t"


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
    with pytest.raises(ConfigError, match=r"^<cli>: x: 1 — unknown key; allowed: al, "):
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


def test_load_job_takes_a_mapping_and_leaves_it_alone() -> None:
    raw = {"name": "m", "training": {"epochs": 3}}
    cfg, resolved = load_job(raw, ["training.epochs=4"])
    assert cfg.training.epochs == 4 and raw["training"]["epochs"] == 3
    with pytest.raises(ConfigError, match=r"^<job>: training.epochs: 'x' — must be an integer$"):
        load_job(raw, ["training.epochs=x"])
    with pytest.raises(ConfigError, match=r"^my job: seeds"):
        load_job({"seeds": []}, source="my job")


def test_set_dotted_is_public() -> None:
    tree: dict = {"campaigns": [{"strategy": "random"}]}
    set_dotted(tree, "campaigns.0.params.eps", 0.1)
    set_dotted(tree, "a.b.c", 1)
    assert tree == {"campaigns": [{"strategy": "random", "params": {"eps": 0.1}}],
                    "a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match="'-1' is not a valid list index"):
        set_dotted(tree, "campaigns.-1.strategy", "x")
    with pytest.raises(ConfigError, match="empty key part"):
        set_dotted(tree, "a..b", 1)


def test_dataset_is_a_union_on_name(tmp_path: Path) -> None:
    cfg = config_from_dict({"dataset": {"n_pool": 10}})
    assert isinstance(cfg.dataset, GlyphsDataset) and cfg.dataset.n_pool == 10
    cfg = config_from_dict({"dataset": {"name": "adult", "d0_size": 5}})
    assert isinstance(cfg.dataset, AdultDataset) and isinstance(cfg.dataset, DatasetConfig)
    assert not hasattr(cfg.dataset, "scenario") and "scenario" not in cfg.to_dict()["dataset"]
    with pytest.raises(ConfigError, match=r"dataset.scenario: 'x' — unknown key; allowed: d0_size"):
        config_from_dict({"dataset": {"name": "adult", "scenario": "x"}})
    # DatasetConfig(...) builds the member named (the data-source tests construct it this way)
    d = DatasetConfig(name="adult", dir="x", d0_size=40)
    assert type(d) is AdultDataset and d.d0_size == 40
    assert type(DatasetConfig()) is GlyphsDataset
    assert type(DatasetConfig.model_validate({"name": "parquet", "pool": "p", "test": "t"})) \
        is ParquetDataset


def test_glyph_scenarios_match_the_generator() -> None:
    import typing

    from rayfal.data.sources.glyphs import ALL_SCENARIOS

    ann = GlyphsDataset.model_fields["scenario"].annotation
    assert set(typing.get_args(ann)) == set(ALL_SCENARIOS)


def test_data_files_are_checked_at_load(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    job = {"dataset": {"name": "parquet", "pool": f"{missing}/*.parquet", "test": str(missing)}}
    with pytest.raises(ConfigError, match=rf"dataset.pool: '{missing}/\*.parquet' — no Parquet"):
        load_job(job)
    config_from_dict(job)  # the file system is only checked by load_job
    with pytest.raises(ConfigError, match=r"dataset.src_dir: .* adult.data, adult.test, adult.names "
                                          r"not found"):
        load_job({"dataset": {"name": "adult", "src_dir": str(missing)}})
    with pytest.raises(ConfigError, match=r"dataset.src_dir: .* mnist_5k.csv.gz not found"):
        load_job({"dataset": {"name": "colored_mnist", "src_dir": str(missing)}})
    prepared = tmp_path / "prepared"  # already prepared data need no source files
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    load_job({"dataset": {"name": "adult", "src_dir": str(missing), "dir": str(prepared)}})


def test_model_target(tmp_path: Path) -> None:
    cfg = config_from_dict({"model": {"target": "collections:OrderedDict", "kwargs": {"a": 1}}})
    assert cfg.model.target == "collections:OrderedDict" and cfg.model.kwargs == {"a": 1}
    for target, why in [("nope_pkg_xyz.mod:Net", "cannot import module 'nope_pkg_xyz.mod'"),
                        ("collections:Nope", "module 'collections' has no attribute 'Nope'"),
                        ("collections", "expected 'package.module:Class'"),
                        ("os:sep", "'sep' is not callable")]:
        with pytest.raises(ConfigError, match=rf"model.target: '{target}' — {why}"):
            config_from_dict({"model": {"target": target}})
    with pytest.raises(ConfigError, match="model.name: 'cnn' — must be 'auto'"):
        config_from_dict({"model": {"name": "cnn", "target": "collections:OrderedDict"}})
    with pytest.raises(ConfigError, match="model.kwargs: .* only used with model.target"):
        config_from_dict({"model": {"kwargs": {"a": 1}}})


def test_oracle_defaults_to_simulated() -> None:
    assert config_from_dict({}).oracle.kind == "simulated"
    assert config_from_dict({}).to_dict()["oracle"] == {"kind": "simulated"}


def test_campaign_training_applies_the_overrides() -> None:
    cfg = config_from_dict({
        "training": {"epochs": 3},
        "campaigns": [{"strategy": "random"},
                      {"strategy": "bald", "training": {"mode": "grad",
                                                        "mode_params": {"lam": 1}}}]})
    plain, fair = (campaign_training(cfg, c) for c in cfg.campaigns)
    assert isinstance(fair, TrainingConfig) and fair.mode == "grad" and fair.epochs == 3
    assert fair.mode_params == {"lam": 1} and plain == cfg.training and plain is not cfg.training
    changed = fair.model_copy(update={"mode": "standard", "mode_params": {}})
    assert changed.mode == "standard" and fair.mode == "grad"


def test_models_construct_like_the_dataclasses_did() -> None:
    assert TrainingConfig(num_workers=2, epochs=3).num_workers == 2
    assert CampaignConfig(strategy="bald").name == "bald"
    with pytest.raises(ValueError):
        TrainingConfig(epochs=0)


def test_variants_expand_and_may_switch_the_dataset(tmp_path: Path) -> None:
    path = _job(tmp_path, BASE + textwrap.dedent("""\
        dataset: {seed: 4}
        variants:
          - {name: glyphs_minority, set: {dataset.scenario: minority_group}}
          - {name: adult, set: {dataset.name: adult, dataset.d0_size: 10}}
    """))
    cfg, resolved = load_job(path)
    subs = expand_variants(cfg, resolved)
    assert [n for n, _, _ in subs] == ["glyphs_minority", "adult"]
    assert subs[0][1].dataset.scenario == "minority_group"
    adult = subs[1][1].dataset
    assert isinstance(adult, AdultDataset) and adult.seed == 4 and adult.d0_size == 10
    assert all(not s.variants for _, s, _ in subs)
    bad = _job(tmp_path, BASE + "variants: [{name: v, set: {dataset.scenario: x}}]\n", "bad.yaml")
    _raises(bad, None, f"{bad}: variants[0] (v): dataset.scenario: 'x' — unknown")


def test_tune_section_is_checked_at_load(tmp_path: Path) -> None:
    text = BASE + "tune: {space: {training.lr: 'uniform(0.1, 1)'}, num_samples: 0, " \
                  "objectives: [{metric: accuracy, mode: max}]}\n"
    _raises(_job(tmp_path, text), None, "tune.num_samples")


def test_mode_params_models_match_the_factories() -> None:
    """Each mode's Params (the job-file check) declares what its factory takes, same defaults."""
    import inspect

    from rayfal.training import MODES

    for name in MODES.names():
        factory = MODES.get(name)
        sig = inspect.signature(factory).parameters
        if any(p.kind is p.VAR_KEYWORD for p in sig.values()):  # fairlearn: **params
            continue
        declared = {k: f.default for k, f in factory.Params.model_fields.items()}
        assert declared == {k: p.default for k, p in sig.items()}, name
        assert factory.summary and "\n" not in factory.summary
