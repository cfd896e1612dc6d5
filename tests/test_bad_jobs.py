"""Bad job files fail fast: ``rayfal validate`` and ``rayfal run`` print exactly one
``rayfal: error:`` line naming the dotted key and exit with code 2, before any data is
generated, any run directory is written or Ray is started. Also ``rayfal schema`` and
``rayfal strategies``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rayfal.cli import main

GOOD: dict = {
    "name": "bad_jobs",
    "seeds": [0, 1],
    "dataset": {"name": "glyphs", "n_pool": 200, "n_test": 100},
    "training": {"epochs": 1},
    "al": {"initial_labels": 10, "query_size": 10, "rounds": 1, "max_frac": None},
    "campaigns": [{"strategy": "jin", "params": {"eps": 0.03}},
                  {"strategy": "bald", "label": "bald_grad",
                   "training": {"mode": "grad", "mode_params": {"lam": 0.5}}}],
}


def _put(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def edit(**changes) -> Callable[[dict, Path], dict]:
    """A job-file edit: ``edit(**{"training.epochs": "x"})``; ``None`` deletes the key."""

    def apply(job: dict, tmp: Path) -> dict:
        for key, value in changes.items():
            if isinstance(value, str):
                value = value.replace("{tmp}", str(tmp))
            if value is None:
                *head, last = key.split(".")
                node = job
                for k in head:
                    node = node[int(k)] if isinstance(node, list) else node[k]
                del node[last]
            else:
                _put(job, key, value)
        return job

    return apply


# (id, edit of the job file, --set overrides, fragment the error line must contain)
CASES = [
    ("unknown_dataset", edit(**{"dataset.name": "glyph"}), [],
     "dataset.name: 'glyph' — unknown; allowed: adult, colored_mnist, glyphs, image_files, "
     "parquet"),
    ("unknown_strategy", edit(**{"campaigns.1.strategy": "bladd"}), [],
     "campaigns[1].strategy: 'bladd' — unknown; allowed:"),
    ("unknown_mode", edit(**{"training.mode": "tradez"}), [], "training.mode: 'tradez'"),
    ("bad_mode_composition", edit(**{"training.mode": "trades+gba"}), [],
     "training.mode: 'trades+gba' — unsupported"),
    ("unknown_model", edit(**{"model": {"name": "resnet"}}), [], "model.name: 'resnet'"),
    ("unknown_top_level_key", edit(trainig={"epochs": 2}), [], "trainig: "),
    ("unknown_training_key", edit(**{"training.epoch": 2}), [], "training.epoch: 2 — unknown key"),
    ("key_of_another_dataset", edit(**{"dataset.skew": 0.9}), [], "dataset.skew: 0.9 — unknown key"),
    ("unknown_campaign_key", edit(**{"campaigns.0.stratgy": "bald"}), [],
     "campaigns[0].stratgy"),
    ("unknown_oracle", edit(oracle={"kind": "crowd"}), [], "oracle.kind: 'crowd'"),
    ("type_int", edit(**{"training.epochs": "five"}), [],
     "training.epochs: 'five' — must be an integer"),
    ("type_bool", edit(**{"training.use_gpu": 1}), [], "training.use_gpu: 1 — must be true/false"),
    ("type_list", edit(seeds=3), [], "seeds: 3 — must be a list"),
    ("type_mapping", edit(training=3), [], "training: 3 — must be a mapping"),
    ("range_max_frac", edit(**{"al.max_frac": 1.5, "al.rounds": None}), [],
     "al.max_frac: 1.5 — must be <= 1"),
    ("range_query_size", edit(**{"al.query_size": 0}), [], "al.query_size: 0 — must be >= 1"),
    ("range_dropout", edit(model={"dropout": 1.0}), [], "model.dropout: 1.0 — must be < 1"),
    ("no_stop_rule", edit(**{"al.rounds": None}), [], "al: set 'rounds' or 'max_frac'"),
    ("duplicate_seeds", edit(seeds=[1, 1]), [], "seeds: [1, 1] — duplicate"),
    ("scoring_actors", edit(scoring={"actors": "many"}), [], "scoring.actors: 'many'"),
    ("jin_eps_negative", edit(**{"campaigns.0.params.eps": -1}), [],
     "campaigns[0].params.eps: -1 — must be >= 0"),
    ("jin_unknown_param", edit(**{"campaigns.0.params.epsilon": 0.1}), [],
     "campaigns[0].params.epsilon: 0.1 — unknown key; allowed: alpha, attack_loss, eps, steps"),
    ("bad_mode_params", edit(training={"mode": "trades", "mode_params": {"beta": -1}}), [],
     "training.mode_params.beta: -1 — must be >= 0"),
    ("unknown_mode_param", edit(training={"mode": "grad", "mode_params": {"lambda": 1}}), [],
     "training.mode_params.lambda: 1 — unknown key; allowed: lam"),
    ("campaign_training_override", edit(**{"campaigns.1.training.mode_params.lam": "high"}), [],
     "campaigns[1].training.mode_params.lam: 'high' — must be a number"),
    ("missing_parquet", edit(dataset={"name": "parquet", "pool": "{tmp}/none/*.parquet",
                                      "test": "{tmp}/none"}), [],
     "dataset.pool: '"),
    ("missing_adult_files", edit(dataset={"name": "adult", "src_dir": "{tmp}/no_adult"}), [],
     "dataset.src_dir: '"),
    ("missing_mnist_csv", edit(dataset={"name": "colored_mnist", "src_dir": "{tmp}"}), [],
     "mnist_5k.csv.gz not found"),
    ("set_bad_yaml", edit(), ["training.epochs=[1"], "--set training.epochs: '[1'"),
    ("set_bad_index", edit(), ["campaigns.9.strategy=x"],
     "--set campaigns.9.strategy: '9' is not a valid list index"),
    ("set_bad_value", edit(), ["al.initial_labels=0"], "al.initial_labels: 0 — must be >= 1"),
    ("label_with_slash", edit(**{"campaigns.1.label": "a/b"}), [],
     "campaigns[1].label: 'a/b' — must be a plain name"),
    ("absolute_job_name", edit(name="/tmp/abs"), [], "name: '/tmp/abs' — must be a plain name"),
    ("variant_name_dotdot", edit(variants=[{"name": "..", "set": {}}]), [], "variants[0].name"),
    ("bad_variant_value", edit(variants=[{"name": "v", "set": {"dataset.scenario": "x"}}]), [],
     "variants[0] (v): dataset.scenario: 'x'"),
    ("model_target_module", edit(model={"target": "no_such_pkg_xyz.nets:Net"}), [],
     "model.target: 'no_such_pkg_xyz.nets:Net' — cannot import module"),
    ("model_target_attribute", edit(model={"target": "collections:NoSuchNet"}), [],
     "model.target: 'collections:NoSuchNet' — module 'collections' has no attribute"),
    ("model_target_with_name", edit(model={"target": "collections:OrderedDict", "name": "cnn"}),
     [], "model.name: 'cnn' — must be 'auto'"),
    ("robust_worst_group", edit(evaluation={"worst_group_by": "robust_accuracy"}), [],
     "evaluation.worst_group_by"),
    ("tune_num_samples", edit(tune={"space": {"training.lr": "loguniform(0.001, 0.1)"},
                                    "objectives": [{"metric": "accuracy", "mode": "max"}],
                                    "num_samples": 0}), [], "tune.num_samples"),
]


@pytest.fixture(scope="module", autouse=True)
def _no_ray_started():
    """No bad job may start Ray (checked when the session's Ray is not already up)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        yield  # another module's session Ray: cannot tell, the run-dir checks still apply
        return
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a bad job started Ray"


def _write(tmp_path: Path, change: Callable[[dict, Path], dict]) -> Path:
    job = change(copy.deepcopy(GOOD), tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rayfal: error: ") and "Traceback" not in err
    return lines[0]


def test_the_good_job_is_valid(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(_write(tmp_path, edit()))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 2 campaigns x 2 seeds, dataset glyphs"), out


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("change", "overrides", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_job_is_one_error_line(tmp_path: Path, capsys, command: str, change, overrides,
                                   fragment: str) -> None:
    path = _write(tmp_path, change)
    run_dir = tmp_path / "run"
    argv = [command, str(path)] + [a for o in overrides for a in ("--set", o)]
    if command == "run":
        argv += ["--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert fragment in line, line
    assert str(path) in line or "--set" in line
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_missing_job_file(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in _error_line(capsys)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_subprocess_has_no_traceback(tmp_path: Path, command: str) -> None:
    path = _write(tmp_path, edit(**{"campaigns.0.params.eps": -1}))
    proc = subprocess.run([sys.executable, "-m", "rayfal.cli", command, str(path)]
                          + (["--run-dir", str(tmp_path / "run")] if command == "run" else []),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rayfal: error: "), proc.stderr
    assert "campaigns[0].params.eps: -1 — must be >= 0" in lines[0]
    assert not (tmp_path / "run").exists()


def test_schema_is_json_schema(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    props = schema["properties"]
    assert {"dataset", "training", "campaigns", "al", "model", "oracle"} <= set(props)
    assert schema["additionalProperties"] is False
    dataset = json.dumps(props["dataset"])
    for member in ("GlyphsDataset", "ParquetDataset", "AdultDataset", "ColoredMnistDataset"):
        assert member in dataset
    from rayfal.acquisition import STRATEGIES

    camp = schema["$defs"]["CampaignConfig"]
    assert camp["properties"]["strategy"]["enum"] == STRATEGIES.names()
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(GOOD))
    for dataset in ({"seed": 3}, {"name": "adult", "seed": 3}, {"name": "colored_mnist"},
                    {"name": "parquet", "pool": "p", "test": "t"}):
        assert not list(validator.iter_errors({**GOOD, "dataset": dataset})), dataset
    assert list(validator.iter_errors({**GOOD, "dataset": {"name": "adult", "skew": 0.5}}))
    bad = edit(**{"campaigns.0.params.epsilon": 1, "training.epoch": 2})(copy.deepcopy(GOOD), None)
    assert len(list(validator.iter_errors(bad))) >= 2


def test_strategies_lists_every_strategy_and_mode(capsys) -> None:
    from rayfal.acquisition import STRATEGIES
    from rayfal.training import MODES

    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    names = {ln.split()[0] for ln in out.splitlines() if ln.startswith("  ") and
             not ln.startswith("   ")}
    assert set(STRATEGIES.names()) <= names and set(MODES.names()) <= names
    assert "eps: float (default" in out and "lam: float (default 1.0)" in out
    assert "trades+grad" in out


def test_every_argument_has_help() -> None:
    from rayfal.cli import build_parser

    def walk(parser, where):
        for action in parser._actions:
            if action.dest == "help":
                continue
            if action.choices and hasattr(action, "_choices_actions"):  # subcommands
                helped = {a.dest for a in action._choices_actions if a.help}
                assert set(action.choices) <= helped, (where, set(action.choices) - helped)
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            else:
                assert action.help, f"{where}: {action.option_strings or action.dest} has no help"

    walk(build_parser(), "rayfal")


@pytest.mark.parametrize("case", ["jin_eps_negative", "unknown_mode_param", "tune_num_samples"])
def test_bad_job_fails_tune_too(tmp_path: Path, capsys, case: str) -> None:
    _, change, overrides, fragment = next(c for c in CASES if c[0] == case)
    path = _write(tmp_path, change)
    assert main(["tune", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert fragment in _error_line(capsys)
    assert not (tmp_path / "run").exists()
