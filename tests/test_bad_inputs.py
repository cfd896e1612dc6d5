"""Bad inputs end cleanly: a table of bad job files, pools, checkpoints, run directories and CLI
flags, each with the fragment its error must contain.

Each case runs through ``rayfal.cli.main`` in-process (exit code 2, exactly one
``rayfal: error:`` line, no traceback) or through the function under test (a ``ValueError``
whose one-line message has the fragment). None of them starts Ray, and nothing is created
outside ``tmp_path``. Job-file cases already in ``test_bad_jobs.py`` are not repeated here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from rayfal.cli import main
from rayfal.data import schema as S

D = 4  # feature width of the test pools
POOL_IDS = np.arange(60, dtype=np.int64)
TEST_IDS = np.arange(1000, 1040, dtype=np.int64)


# ----------------------------------------------------------------------------- data helpers


def _shard(path: Path, ids, *, features=None, group=None, label="default") -> Path:
    ids = np.asarray(ids, dtype=np.int64)
    x = (ids[:, None] * 0.01 + np.arange(D)[None, :]).astype(np.float32) \
        if features is None else features
    g = ids % 2 if group is None else group
    y = (ids % 2) if isinstance(label, str) else label
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(S.feature_table(ids, x, g, label=y), path)
    return path


def _data(tmp: Path, **pool_kw) -> tuple[Path, Path]:
    """A good parquet data set (two pool shards, one test shard); ``pool_kw`` spoils shard 1."""
    pool, test = tmp / "pool", tmp / "test"
    _shard(pool / "a.parquet", POOL_IDS[:30])
    _shard(pool / "b.parquet", POOL_IDS[30:], **pool_kw)
    _shard(test / "t.parquet", TEST_IDS)
    return pool, test


def _job(tmp: Path, pool: Path | str | None = None, test: Path | str | None = None,
         **top) -> Path:
    if pool is None:
        pool, test = _data(tmp)
    job = {
        "name": "bad_inputs", "seeds": [0],
        "dataset": {"name": "parquet", "pool": str(pool), "test": str(test)},
        "model": {"name": "mlp", "hidden": 8},
        "training": {"epochs": 1, "min_steps": 1},
        "al": {"initial_labels": 10, "query_size": 5, "rounds": 2, "max_frac": None},
        "campaigns": [{"strategy": "random"}],
        **top,
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _run(tmp: Path, job: Path | None = None, *extra: str, resume: bool = False) -> list[str]:
    job = job or _job(tmp)
    return (["run", str(job), "--run-dir", str(tmp / "run"), "--no-progress"]
            + (["--resume"] if resume else []) + list(extra))


# ----------------------------------------------------------------------------- run-dir helpers


def _state(tmp: Path, *, records: int = 1, ledger_rounds: dict[int, int] | None = None,
           job_yaml: bool = True, campaign: str = "random", seed: int = 0,
           record_edit: Callable[[int, dict], dict] | None = None) -> Path:
    """The run directory of the good job stopped after ``records`` round records."""
    from rayfal.config import load_job
    from rayfal.data.ledger import LabelLedger

    job = _job(tmp)
    _, resolved = load_job(job)
    run = tmp / "run"
    run.mkdir(parents=True, exist_ok=True)
    if job_yaml:
        (run / "job.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    cdir = run / "campaigns" / campaign / f"seed_{seed}"
    ledger_rounds = ledger_rounds if ledger_rounds is not None else \
        {0: 10, **{r + 1: 5 for r in range(records)}}
    with LabelLedger(cdir / "ledger.sqlite") as ledger:
        start = 0
        for r, n in sorted(ledger_rounds.items()):
            ids = POOL_IDS[start:start + n]
            ledger.commit(ids, ids % 2, round=r)
            start += n
    for r in range(records):
        rec = {"round": r, "campaign": campaign, "strategy": "random", "seed": seed,
               "n_labelled": 10 + 5 * r, "selected": POOL_IDS[10 + 5 * r:15 + 5 * r].tolist()}
        if record_edit:
            rec = record_edit(r, rec)
        (cdir / "rounds").mkdir(parents=True, exist_ok=True)
        (cdir / "rounds" / f"round_{r:03d}.json").write_text(json.dumps(rec))
    return job


def _resume(tmp: Path, **state) -> list[str]:
    return _run(tmp, _state(tmp, **state), resume=True)


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint(tmp: Path, *, spoil: Callable[[Path], None] | None = None,
                input_shape=(D,), hidden: int = 8) -> Path:
    from rayfal.models import build_model
    from rayfal.models.checkpoint import model_spec, save_checkpoint

    torch.manual_seed(0)
    model = build_model("mlp", tuple(input_shape), 2, hidden=hidden, dropout=0.5)
    ckpt = tmp / "ckpt"
    save_checkpoint(ckpt, model.state_dict(), model_spec("mlp", tuple(input_shape), 2,
                                                         hidden=hidden, dropout=0.5))
    if spoil:
        spoil(ckpt)
    return ckpt


def _score(tmp: Path, *flags: str, ckpt: Path | None = None, pool: Path | None = None,
           out: Path | None = None) -> list[str]:
    if pool is None:
        pool, _ = _data(tmp)
    ckpt = ckpt or _checkpoint(tmp)
    return ["score", "--pool", str(pool), "--checkpoint", str(ckpt),
            "--out", str(out or tmp / "out"), "--no-progress", "--compute", "tasks", *flags]


def _pickled(ckpt: Path) -> None:
    torch.save({"w": torch.zeros(3)}, ckpt / "model.safetensors")


def _weights_of_other_model(ckpt: Path) -> None:
    other = _checkpoint(ckpt.parent / "other", hidden=16)
    (ckpt / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())


def _json_edit(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    def spoil(ckpt: Path) -> None:
        meta = json.loads((ckpt / "model.json").read_text())
        (ckpt / "model.json").write_text(json.dumps(fn(meta)))

    return spoil


# ----------------------------------------------------------------------------- function cases


def _pool_labels_beyond_classes(tmp: Path) -> Callable[[], None]:
    from rayfal.data.pool import Pool
    from rayfal.data.validate import check_pool_labels

    pool, test = _data(tmp, label=np.where(POOL_IDS[30:] == 44, 7, 1))

    def call() -> None:
        check_pool_labels(Pool(str(pool)), Pool(str(test), name="test set"))

    return call


def _image_table(ids, shape_meta: bytes, pixels: int = 4 * 4 * 3) -> pa.Table:
    ids = np.asarray(ids, np.int64)
    flat = pa.array(np.zeros(len(ids) * pixels, np.uint8))
    t = pa.table({S.ROW_ID: ids, S.IMAGE: pa.FixedSizeListArray.from_arrays(flat, pixels),
                  S.GROUP: ids % 2, S.LABEL: ids % 2})
    return t.replace_schema_metadata({S.IMAGE_SHAPE_KEY: shape_meta})


def _image_pool_case(shape_meta: bytes) -> Callable[[Path], Callable[[], None]]:
    def make(tmp: Path) -> Callable[[], None]:
        from rayfal.data.pool import Pool

        pq.write_table(_image_table(POOL_IDS, shape_meta), tmp / "img.parquet")
        return lambda: Pool(str(tmp / "img.parquet"))

    return make


def _schedule_case(al: dict, rows: int) -> Callable[[Path], Callable[[], None]]:
    def make(tmp: Path) -> Callable[[], None]:
        from rayfal.campaign.schedule import check_schedule
        from rayfal.config import config_from_dict

        cfg = config_from_dict({"al": al})
        return lambda: check_schedule(cfg, rows)

    return make


def _round_gap(tmp: Path) -> Callable[[], None]:
    from rayfal.campaign.rundir import check_round_records

    _state(tmp, records=3)
    cdir = tmp / "run" / "campaigns" / "random" / "seed_0"
    (cdir / "rounds" / "round_001.json").unlink()
    return lambda: check_round_records(cdir)


def _load_pickled_checkpoint(tmp: Path) -> Callable[[], None]:
    from rayfal.models.checkpoint import load_checkpoint

    ckpt = _checkpoint(tmp, spoil=_pickled)
    return lambda: load_checkpoint(ckpt)


def _other_host_lock(tmp: Path) -> list[str]:
    job = _job(tmp)
    (tmp / "run").mkdir()
    (tmp / "run" / "rayfal.lock").write_text(json.dumps(
        {"pid": 4242, "host": socket.gethostname() + "-elsewhere", "started": "2024-01-01",
         "purpose": "run"}))
    return _run(tmp, job)


def _live_lock(tmp: Path) -> list[str]:
    """A lock of a live process on this host (this test's parent process stands in)."""
    job = _job(tmp)
    (tmp / "run").mkdir()
    (tmp / "run" / "rayfal.lock").write_text(json.dumps(
        {"pid": os.getppid(), "host": socket.gethostname(), "started": "now",
         "started_ts": 4e9, "purpose": "run --resume"}))
    return _run(tmp, job)


def _write(name: str, text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["validate", str(tmp / name)]

    return make


def _ledger_not_sqlite(tmp: Path) -> list[str]:
    argv = _resume(tmp, records=1)
    (tmp / "run" / "campaigns" / "random" / "seed_0" / "ledger.sqlite").write_text("x" * 200)
    return argv


def _job_yaml(text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        argv = _resume(tmp, records=1)
        (tmp / "run" / "job.yaml").write_text(text)
        return argv

    return make


def _record_text(name: str, text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        argv = _resume(tmp, records=2)
        (tmp / "run" / "campaigns" / "random" / "seed_0" / "rounds" / name).write_text(text)
        return argv

    return make


def _foreign_dir(rel: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        argv = _resume(tmp, records=1)
        other = tmp / "run" / "campaigns" / rel
        other.mkdir(parents=True)
        (other / "ledger.sqlite").write_bytes(b"")
        return argv

    return make


def _pool_file(tmp: Path, table: pa.Table, name: str = "b.parquet") -> list[str]:
    pool, test = _data(tmp)
    pq.write_table(table, pool / name)
    return _run(tmp, _job(tmp, pool, test))


def _empty_pool(tmp: Path) -> list[str]:
    pool, test = _data(tmp)
    for f in pool.iterdir():
        f.unlink()
    _shard(pool / "empty.parquet", np.zeros(0, np.int64), features=np.zeros((0, D)))
    return _run(tmp, _job(tmp, pool, test))


def _nan_features() -> np.ndarray:
    x = (POOL_IDS[30:, None] * 0.01 + np.arange(D)[None, :]).astype(np.float32)
    x[[3, 17], 1] = np.nan
    x[5, 0] = np.inf
    return x


def _big_flag(tmp: Path) -> list[str]:
    (tmp / "out.txt").write_text("a file")
    return _score(tmp, out=tmp / "out.txt")


def _score_out_locked(tmp: Path) -> list[str]:
    argv = _score(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "rayfal.lock").write_text(json.dumps(
        {"pid": os.getppid(), "host": socket.gethostname(), "started_ts": 4e9}))
    return argv


Case = tuple[str, Callable[[Path], object], str]

# (id, make(tmp) -> argv for rayfal.cli.main or a callable to call, fragment of the error)
CASES: list[Case] = [
    # --- job files: names used in paths, schedule, overrides, the file itself
    ("label_dotdot", lambda t: _run(t, _job(t, campaigns=[{"strategy": "random",
                                                            "label": ".."}])),
     "campaigns[0].label: '..' — must be a plain name"),
    ("label_backslash", lambda t: _run(t, _job(t, campaigns=[{"strategy": "random",
                                                               "label": "a\\b"}])),
     "must be a plain name"),
    ("label_dotdot_path", lambda t: _run(t, _job(t, campaigns=[{"strategy": "random",
                                                                 "label": "../../etc"}])),
     "campaigns[0].label: '../../etc' — must be a plain name"),
    ("empty_job_name", lambda t: _run(t, _job(t, name="")), "name: '' — must be a plain name"),
    ("job_name_with_slash", lambda t: _run(t, _job(t, name="a/b")), "name: 'a/b'"),
    ("variant_name_with_slash", lambda t: _run(t, _job(t, variants=[{"name": "v/../../x",
                                                                      "set": {}}])),
     "variants[0].name"),
    ("query_size_times_rounds_over_pool",
     lambda t: _run(t, _job(t, al={"initial_labels": 10, "query_size": 20, "rounds": 3,
                                   "max_frac": None})),
     "al.query_size=20 x al.rounds=3 + al.initial_labels=10 = 70 labels, more than the pool's "
     "60 rows"),
    ("initial_labels_over_pool",
     lambda t: _run(t, _job(t, al={"initial_labels": 61, "query_size": 5, "rounds": 0,
                                   "max_frac": None})),
     "al.initial_labels=61 exceeds the pool's 60 rows"),
    ("glyphs_query_size_over_pool",
     lambda t: _run(t, _job(t, pool="x", test="y", dataset={"n_pool": 50, "n_test": 20},
                            al={"initial_labels": 10, "query_size": 100, "rounds": 1,
                                "max_frac": None})),
     "al.query_size=100 x al.rounds=1"),
    ("schedule_rule_rounds", _schedule_case({"initial_labels": 5, "query_size": 10,
                                             "rounds": 2, "max_frac": None}, 20),
     "= 25 labels, more than the pool's 20 rows"),
    ("set_bad_int_tag", lambda t: ["validate", str(_job(t)), "--set", "training.epochs=!!int x"],
     "--set training.epochs: '!!int x' is not a valid YAML value"),
    ("set_bad_float_tag", lambda t: ["validate", str(_job(t)), "--set", "training.lr=!!float x"],
     "--set training.lr: '!!float x' is not a valid YAML value"),
    ("set_bad_timestamp", lambda t: ["validate", str(_job(t)), "--set", "a=!!timestamp 2020-13-1"],
     "--set a: '!!timestamp 2020-13-1' is not a valid YAML value"),
    ("set_without_equals", lambda t: ["validate", str(_job(t)), "--set", "training.epochs"],
     "expected key.sub=value"),
    ("set_unclosed_quote", lambda t: ["validate", str(_job(t)), "--set", "name='x"],
     "--set name: \"'x\" is not a valid YAML value"),
    ("job_file_is_a_list", _write("list.yaml", "- a\n- b\n"), "the top level must be a mapping"),
    ("job_file_bad_yaml", _write("tab.yaml", "name: x\n\tseeds: [0]\n"),
     "not valid YAML (line 2"),
    ("job_file_is_a_directory", lambda t: ["validate", str(t)], "not a file"),
    # --- pools (dataset: parquet), opened by `rayfal run` before Ray starts
    ("nan_features", lambda t: _run(t, _job(t, *_data(t, features=_nan_features()))),
     "b.parquet: NaN/inf features in row_id(s) [33, 35, 47]"),
    ("negative_labels", lambda t: _run(t, _job(t, *_data(
        t, label=np.where(POOL_IDS[30:] == 41, -1, 0)))),
     "b.parquet: column 'label' has negative class ids [-1] in row_id(s) [41]"),
    ("negative_groups", lambda t: _run(t, _job(t, *_data(
        t, group=np.where(POOL_IDS[30:] == 50, -3, 0)))),
     "b.parquet: column 'group' has negative group ids [-3] in row_id(s) [50]"),
    ("labels_beyond_test_classes", _pool_labels_beyond_classes,
     "b.parquet: column 'label' has class ids [7] outside [0, 2)"),
    ("empty_pool", _empty_pool, "hold no rows"),
    ("duplicate_row_ids", lambda t: _pool_file(t, S.feature_table(
        np.array([3, 4]), np.zeros((2, D)), np.array([0, 1]), label=np.array([0, 1]))),
     "duplicated row_id(s), e.g. [3, 4]"),
    ("pool_and_test_share_rows", lambda t: _pool_file(t, S.feature_table(
        np.array([1000, 1001]), np.zeros((2, D)), np.array([0, 1]), label=np.array([0, 1]))),
     "row_ids appear in both the pool and the test set"),
    ("corrupt_parquet", lambda t: (_data(t), (t / "pool" / "b.parquet").write_bytes(b"PAR1xx"),
                                   _run(t, _job(t, t / "pool", t / "test")))[-1],
     "b.parquet is not a readable Parquet file"),
    ("group_is_float", lambda t: _pool_file(t, pa.table({
        S.ROW_ID: pa.array([70, 71], pa.int64()), S.GROUP: pa.array([0.0, 1.0]),
        S.FEATURES: S.feature_table(np.array([70, 71]), np.zeros((2, D)),
                                    np.array([0, 1])).column(S.FEATURES)})),
     "column 'group' must be integer group ids"),
    ("label_is_text", lambda t: _pool_file(t, S.feature_table(
        np.array([70, 71]), np.zeros((2, D)), np.array([0, 1])).append_column(
        S.LABEL, pa.array(["cat", "dog"]))), "column 'label' must be integer class ids"),
    ("no_feature_column", lambda t: _pool_file(t, pa.table({
        S.ROW_ID: pa.array([70], pa.int64()), S.GROUP: pa.array([0], pa.int64())})),
     "no 'image' or 'features' column"),
    ("ragged_features", lambda t: _pool_file(t, pa.table({
        S.ROW_ID: pa.array([70, 71], pa.int64()), S.GROUP: pa.array([0, 1], pa.int64()),
        S.FEATURES: pa.array([[0.0, 1.0], [2.0]], pa.list_(pa.float32()))})),
     "column 'features' must be a fixed-size list"),
    ("null_group", lambda t: _pool_file(t, pa.table({
        S.ROW_ID: pa.array([70, 71], pa.int64()),
        S.FEATURES: S.feature_table(np.array([70, 71]), np.zeros((2, D)),
                                    np.array([0, 1])).column(S.FEATURES),
        S.GROUP: pa.array([0, None], pa.int64()), S.LABEL: pa.array([0, 1], pa.int64())})),
     "column 'group' has null values"),
    ("image_shape_mismatch", _image_pool_case(b"[4, 4, 1]"),
     "'rayfal.image_shape' = [4, 4, 1] gives 16 values per image, but the 'image' column has "
     "48 per row"),
    ("image_shape_not_json", _image_pool_case(b"4x4x3"),
     "'rayfal.image_shape' must be JSON [H, W, C]"),
    ("image_shape_not_a_list", _image_pool_case(b"48"),
     "'rayfal.image_shape' must be JSON [H, W, C] (positive integers), found b'48'"),
    # --- checkpoints (`rayfal score` checks them before Ray starts)
    ("pickled_safetensors", lambda t: _score(t, ckpt=_checkpoint(t, spoil=_pickled)),
     "model.safetensors: is a pickle (torch.save) file, not safetensors"),
    ("pickled_safetensors_load", _load_pickled_checkpoint, "is a pickle (torch.save) file"),
    ("garbage_safetensors", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=lambda c: (c / "model.safetensors").write_bytes(b"\x10" * 64))),
     "model.safetensors: not a safetensors file"),
    ("truncated_safetensors", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=lambda c: (c / "model.safetensors").write_bytes(
            (c / "model.safetensors").read_bytes()[:40]))),
     "model.safetensors: not a safetensors file (header length"),
    ("corrupt_model_json", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=lambda c: (c / "model.json").write_text('{"spec": {"name": "mlp",'))),
     "model.json: not valid JSON (line 1"),
    ("model_json_without_spec", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=_json_edit(lambda m: {"train_logs": {}}))),
     "model.json: no 'spec' object"),
    ("model_json_bad_shape", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=_json_edit(lambda m: {"spec": {**m["spec"], "input_shape": "4"}}))),
     "model.json: 'spec' must have name (str), input_shape (positive ints)"),
    ("model_json_unknown_model", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=_json_edit(lambda m: {"spec": {**m["spec"], "name": "resnet9000"}}))),
     "model.json: its spec builds no model"),
    ("weights_of_another_model", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=_weights_of_other_model)),
     "model.safetensors: the weights do not fit the model in model.json"),
    ("checkpoint_without_json", lambda t: _score(t, ckpt=_checkpoint(
        t, spoil=lambda c: (c / "model.json").unlink())), "has no model.json"),
    ("checkpoint_missing", lambda t: _score(t, ckpt=t / "nowhere"), "does not exist"),
    ("checkpoint_other_inputs", lambda t: _score(t, ckpt=_checkpoint(t, input_shape=(7,))),
     "expects inputs [7], pool has (4,)"),
    ("score_pool_with_nan", lambda t: _score(t, pool=_data(t, features=_nan_features())[0]),
     "b.parquet: NaN/inf features in row_id(s) [33, 35, 47]"),
    # --- `rayfal score` flags
    ("score_mc_zero", lambda t: _score(t, "--mc", "0"), "--mc 0: the number of MC-dropout"),
    ("score_out_is_a_file", _big_flag, "out.txt: is a file; the output must be a directory"),
    ("score_top_k_negative", lambda t: _score(t, "--top-k", "-1"), "--top-k -1: must be >= 0"),
    ("score_batch_size_zero", lambda t: _score(t, "--batch-size", "0"),
     "--batch-size 0: must be >= 1"),
    ("score_actors_negative", lambda t: _score(t, "--actors", "-2"), "--actors -2"),
    ("score_cpus_not_a_number", lambda t: _score(t, "--cpus-per-actor", "lots"),
     "--cpus-per-actor 'lots': must be a number > 0 or 'auto'"),
    ("score_cpus_zero", lambda t: _score(t, "--cpus-per-actor", "0"),
     "--cpus-per-actor 0: must be a number > 0 or 'auto'"),
    ("score_gpus_negative", lambda t: _score(t, "--gpus-per-actor", "-1"),
     "--gpus-per-actor -1.0: must be >= 0"),
    ("score_unknown_strategy", lambda t: _score(t, "--strategy", "bladd"),
     "--strategy 'bladd': unknown; allowed: "),
    ("score_whole_pool_strategy", lambda t: _score(t, "--strategy", "coreset"),
     "rayfal score needs a per-row strategy"),
    ("score_pool_missing", lambda t: _score(t, pool=t / "none"), "none"),
    ("score_out_in_use", _score_out_locked,
     "output folder T/out is in use: locked by pid"),
    # --- run directories
    ("state_without_resume", lambda t: _run(t, _state(t, records=0)),
     "already holds a run (campaign state: campaigns/random/seed_0/ledger.sqlite); pass "
     "--resume"),
    ("rounds_csv_without_resume", lambda t: (_job(t), (t / "run").mkdir(),
                                             (t / "run" / "rounds.csv").write_text("round\n"),
                                             _run(t, t / "job.yaml"))[-1],
     "already holds a run (campaign state: rounds.csv)"),
    ("state_without_job_yaml", lambda t: _resume(t, job_yaml=False),
     "holds campaign state (campaigns/random/seed_0/ledger.sqlite, "),
    ("resume_corrupt_job_yaml", _job_yaml("name: [unclosed\n"), "job.yaml is not valid YAML"),
    ("resume_job_yaml_not_mapping", _job_yaml("- 1\n- 2\n"),
     "job.yaml does not hold a job (a mapping), found list"),
    ("resume_other_job", lambda t: _run(t, _state(t), "--set", "al.query_size=4",
                                        resume=True),
     "--resume: the job differs from the one in"),
    ("resume_round_gap", _record_text("round_003.json", json.dumps({"round": 3})),
     "round record(s) round_002.json missing"),
    ("resume_round_gap_function", _round_gap, "round record(s) round_001.json missing"),
    ("resume_corrupt_record", _record_text("round_001.json", '{"round": 1, "seed"'),
     "round_001.json: not valid JSON (line 1"),
    ("resume_record_not_object", _record_text("round_001.json", "[1]"),
     "round_001.json: a round record must be a JSON object"),
    ("resume_record_wrong_round", _record_text("round_001.json", '{"round": 7}'),
     "round_001.json: holds round 7, not 1"),
    ("resume_record_badly_named", _record_text("round_1.json", '{"round": 1}'),
     "round_1.json: not a round record name"),
    ("resume_record_of_other_strategy", lambda t: _resume(
        t, records=2, record_edit=lambda r, rec: {**rec, "strategy": "bald"}),
     "is a record of strategy 'bald', not 'random': the run directory mixes two jobs"),
    ("resume_foreign_campaign", _foreign_dir("jin/seed_0"),
     "campaigns/jin is not a campaign of this job (its campaigns: random)"),
    ("resume_foreign_seed", _foreign_dir("random/seed_9"),
     "campaigns/random/seed_9 is not a seed of this job (seeds: [0])"),
    ("resume_ledger_of_other_run", lambda t: _resume(t, records=1,
                                                     ledger_rounds={0: 20, 1: 5}),
     "round_000.json trained on 10 labels but"),
    ("resume_ledger_ahead_of_records", lambda t: _resume(t, records=1,
                                                         ledger_rounds={0: 10, 1: 5, 2: 5}),
     "holds labels of round 2 but only 1 round record(s) exist"),
    ("resume_records_without_ledger", lambda t: (
        _resume(t, records=1),
        (t / "run" / "campaigns" / "random" / "seed_0" / "ledger.sqlite").unlink())[0],
     "holds round records but no ledger.sqlite"),
    ("resume_ledger_not_sqlite", _ledger_not_sqlite, "not a readable label ledger"),
    ("locked_on_another_host", _other_host_lock,
     "which cannot be checked from this host; if no rayfal process uses it there any more, "
     "remove "),
    ("locked_by_a_live_process", _live_lock, "is in use: locked by pid"),
    ("run_dir_is_a_file", lambda t: (_job(t), (t / "run").write_text("x"),
                                     _run(t, t / "job.yaml"))[-1],
     "is a file, not a directory"),
    ("run_dir_below_a_file", lambda t: (_job(t), (t / "run").write_text("x"),
                                        _run(t, t / "job.yaml", "--run-dir",
                                             str(t / "run" / "sub")))[-1],
     "cannot create the run directory"),
]


@pytest.fixture(scope="module", autouse=True)
def _no_ray_started():
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        yield  # another module's session Ray: cannot tell
        return
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a bad input started Ray"


def test_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, monkeypatch, capsys, make, fragment: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default runs/ or stray file would show up here
    outside = sorted(p.name for p in tmp_path.parent.iterdir())
    what = make(tmp_path)
    capsys.readouterr()
    if callable(what):
        with pytest.raises(ValueError) as err:
            what()
        text = str(err.value)
        assert "\n" not in text, text
    else:
        out = Path(what[what.index("--out") + 1]) if "--out" in what else None
        out_existed = out is not None and out.exists()
        code = main(list(what))
        if out is not None and not out_existed:  # `rayfal score` leaves no empty output folder
            # (only the row checks of shards that passed, kept for the next try)
            assert not out.exists() or {p.name for p in out.iterdir()} == {"pool-checks"}
        captured = capsys.readouterr()
        lines = [ln for ln in captured.err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("rayfal: error: ")]
        assert code == 2, captured.err
        assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
        text = errors[0]
    assert fragment.replace("T/", f"{tmp_path}/") in text, text
    assert not any(work.iterdir()), sorted(work.iterdir())
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == outside
    lock = tmp_path / "run" / "rayfal.lock"
    assert not lock.exists() or json.loads(lock.read_text())["pid"] != os.getpid()
