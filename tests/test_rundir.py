"""The run directory is safe to run for real: one process at a time (lock), no mixing of runs
(campaign state without --resume, state of another job on --resume, a missing middle round
record), leftovers of a kill cleaned, pool rows checked once (cached), and nothing outside the
run directory created or removed, Ray Train's scratch space included."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from rayfal.campaign.rundir import (
    LOCK_FILE,
    RunDirError,
    check_campaign_state,
    check_round_records,
    remove_stale_files,
    run_dir_lock,
)
from rayfal.config import ConfigError, config_from_dict
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger

HOST = socket.gethostname()


def _job(**al) -> dict:
    return config_from_dict({
        "name": "rundir", "seeds": [0, 1],
        "dataset": {"name": "glyphs", "n_pool": 60, "n_test": 40, "image_size": 8},
        "al": {"initial_labels": 10, "query_size": 5, "rounds": 2, "max_frac": None, **al},
        "campaigns": [{"strategy": "random"}, {"strategy": "bald", "label": "b"}],
    }).to_dict()


def _campaign(run: Path, name: str = "random", seed: int = 0, *, records: int = 2,
              strategy: str = "random", initial: int = 10) -> Path:
    """A campaign directory as ``Campaign`` leaves it after ``records`` rounds."""
    cdir = run / "campaigns" / name / f"seed_{seed}"
    with LabelLedger(cdir / "ledger.sqlite") as ledger:
        ledger.commit(np.arange(initial), np.zeros(initial, np.int64), round=0)
        for r in range(records):
            ids = np.arange(initial + 5 * r, initial + 5 * r + 5)
            rec = {"round": r, "campaign": name, "strategy": strategy, "seed": seed,
                   "n_labelled": initial + 5 * r, "selected": ids.tolist(),
                   "selected_labels": [0] * 5}
            (cdir / "rounds").mkdir(parents=True, exist_ok=True)
            (cdir / "rounds" / f"round_{r:03d}.json").write_text(json.dumps(rec))
            (cdir / f"round_{r:03d}").mkdir(exist_ok=True)
            ledger.commit(ids, np.zeros(5, np.int64), round=r + 1)
    return cdir


def _saved(run: Path, resolved: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "job.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


# ----------------------------------------------------------------------------- the lock


def test_lock_file_holds_pid_host_and_time_and_goes_away(tmp_path: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    with run_dir_lock(run, "import labels") as lock:
        info = json.loads((run / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == HOST
        assert info["purpose"] == "import labels" and abs(info["started_ts"] - time.time()) < 60
        assert lock.held
        with pytest.raises(RunDirError, match=r"is in use: locked by pid \d+ \(this process\)"):
            with run_dir_lock(run, "run"):
                pass
    assert not (tmp_path / "a").exists()  # made for the lock, empty again: removed
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("x")
    with run_dir_lock(run, "run"):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_gone_process_is_taken_over(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": HOST,
                                             "started": "earlier", "started_ts": 1.0}))
    with run_dir_lock(run, "run --resume"):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and "is gone" in caplog.text
    # a pid now used by a process that started after the lock was written: reused, stale
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        (run / LOCK_FILE).write_text(json.dumps({"pid": proc.pid, "host": HOST,
                                                 "started_ts": time.time() - 3600}))
        with run_dir_lock(run, "run"):
            pass
        assert "now another process" in caplog.text
        # the same pid, the lock written after it started: alive, refused
        (run / LOCK_FILE).write_text(json.dumps({"pid": proc.pid, "host": HOST,
                                                 "started_ts": time.time() + 5}))
        with pytest.raises(RunDirError, match=f"locked by pid {proc.pid} on host"):
            with run_dir_lock(run, "run"):
                pass
    finally:
        proc.kill()
        proc.wait()
    # an empty lock file (killed between creating and writing it) is stale too
    (run / LOCK_FILE).write_text("")
    with run_dir_lock(run, "run"):
        pass


def test_lock_of_another_host_is_reported_with_how_to_remove_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-7", "started": "Monday",
                                             "purpose": "tune"}))
    with pytest.raises(RunDirError) as err:
        with run_dir_lock(run, "run"):
            pass
    text = str(err.value)
    assert "pid 1 on host node-7 since Monday ('tune')" in text
    assert f"remove {run / LOCK_FILE} and try again" in text
    assert (run / LOCK_FILE).exists()  # never removed for the user


def _holder(run: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom rayfal.campaign.rundir import run_dir_lock\n"
            f"with run_dir_lock({str(run)!r}, 'run'):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_gets_one_error_line_and_a_killed_holder_frees_the_dir(
        tmp_path: Path, capsys) -> None:
    from rayfal.cli import main

    run = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_job()))
    proc = _holder(run)
    try:
        for argv in (["run", str(job), "--run-dir", str(run)],
                     ["run", str(job), "--run-dir", str(run), "--resume"]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "Traceback" not in err[0], err
            assert err[0].startswith("rayfal: error: run directory") and \
                f"is in use: locked by pid {proc.pid} on host {HOST}" in err[0], err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        proc.kill()  # -9: the lock file stays behind
        proc.wait()
    assert (run / LOCK_FILE).exists()
    with run_dir_lock(run, "run"):  # stale: taken over
        pass
    assert not any(run.iterdir())


def test_run_job_holds_the_lock_and_the_check_cache_throughout(tmp_path: Path,
                                                                monkeypatch) -> None:
    from rayfal.campaign import driver
    from rayfal.data.validate import current_check_cache

    cfg = config_from_dict(_job())
    seen = {}

    def stop(cfg, run_dir, **kw):
        seen["lock"] = json.loads((run_dir / LOCK_FILE).read_text())
        seen["cache"] = current_check_cache()
        raise RuntimeError("stop here")

    monkeypatch.setattr(driver, "build_context", stop)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stop here"):
        driver.run_job(cfg, cfg.to_dict(), run, progress=False)
    assert seen["lock"]["pid"] == os.getpid() and seen["lock"]["purpose"] == "run"
    assert seen["cache"] == run / "data" / "pool-checks"
    assert not (run / LOCK_FILE).exists() and current_check_cache() is None
    with pytest.raises(RuntimeError, match="stop here"):  # released: a second call goes in
        driver.run_job(cfg, cfg.to_dict(), run, resume=True, progress=False)
    assert seen["lock"]["purpose"] == "run --resume"


# ----------------------------------------------------------------------------- stale state


def test_killed_in_round_0_then_run_without_resume_and_other_initial_labels(tmp_path: Path
                                                                            ) -> None:
    """The issue's case: the old guard saw job.yaml without round records and started anew,
    reusing the old ledger (10 initial labels) for a job with 12."""
    from rayfal.campaign.driver import check_resume

    run = tmp_path / "run"
    _saved(run, _job())
    _campaign(run, records=0)  # the ledger of round 0, no round record yet
    (run / "campaigns" / "random" / "seed_0" / "round_000").mkdir()
    with pytest.raises(RunDirError, match="already holds a run .*ledger.sqlite.*pass --resume"):
        check_resume(run, _job(initial_labels=12), resume=False)
    with pytest.raises(ConfigError, match=r"--resume: the job differs .*\['al'\]"):
        check_resume(run, _job(initial_labels=12), resume=True)
    check_resume(run, _job(), resume=True)  # the same job continues


def test_state_without_job_yaml_is_refused(tmp_path: Path) -> None:
    from rayfal.campaign.driver import check_resume

    run = tmp_path / "run"
    _campaign(run, records=1)
    for resume in (False, True):
        with pytest.raises(RunDirError, match="campaigns/random/seed_0/"):
            check_resume(run, _job(), resume=resume)
    with pytest.raises(RunDirError, match="but no job.yaml"):
        check_resume(run, _job(), resume=True)


def test_job_file_and_data_alone_may_start_again(tmp_path: Path) -> None:
    from rayfal.campaign.driver import check_resume

    run = tmp_path / "run"
    _saved(run, _job(initial_labels=3))  # a run that failed while preparing its data
    (run / "data" / "glyphs").mkdir(parents=True)
    (run / "data" / "glyphs" / "dataset.json").write_text("{}")
    (run / "campaigns").mkdir()  # an empty campaigns folder is no state either
    check_resume(run, _job(), resume=False)
    check_resume(tmp_path / "fresh", _job(), resume=True)  # nothing yet: starts


def test_consistent_state_of_the_job_resumes(tmp_path: Path) -> None:
    from rayfal.campaign.driver import check_resume

    run = tmp_path / "run"
    resolved = _job()
    _saved(run, resolved)
    _campaign(run, "random", 0, records=3)
    _campaign(run, "random", 1, records=1)
    _campaign(run, "b", 0, records=0, strategy="bald")
    (run / "campaigns" / "b" / "seed_0" / "pending.json").write_text("{}")
    check_resume(run, resolved, resume=True)
    check_campaign_state(run, resolved)


def test_record_written_but_labels_not_committed_still_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    resolved = _job()
    cdir = run / "campaigns" / "random" / "seed_0"
    with LabelLedger(cdir / "ledger.sqlite") as ledger:
        ledger.commit(np.arange(10), np.zeros(10, np.int64), round=0)
    (cdir / "rounds").mkdir()
    (cdir / "rounds" / "round_000.json").write_text(json.dumps(
        {"round": 0, "campaign": "random", "strategy": "random", "seed": 0, "n_labelled": 10,
         "selected": [10, 11]}))
    check_campaign_state(run, resolved)


def test_missing_middle_round_record_is_named(tmp_path: Path) -> None:
    """Old code: --resume read the records it found (0 and 2), started at round 2 and wrote
    it again: rounds.csv got the round twice."""
    from rayfal.campaign.driver import check_resume

    run = tmp_path / "run"
    _saved(run, _job())
    cdir = _campaign(run, records=3)
    (cdir / "rounds" / "round_001.json").unlink()
    with pytest.raises(RunDirError, match=r"round record\(s\) round_001.json missing"):
        check_round_records(cdir)
    with pytest.raises(RunDirError, match="round_001.json missing"):
        check_resume(run, _job(), resume=True)
    check_round_records(tmp_path / "nothing")  # no rounds yet: fine


def test_state_of_another_job_is_refused_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    resolved = _job()
    _campaign(run, "random", 0, records=1)
    check_campaign_state(run, resolved)
    _campaign(run, ".jin", 0, records=1, strategy="jin")
    with pytest.raises(RunDirError, match="campaigns/.jin is not a campaign of this job"):
        check_campaign_state(run, resolved)
    for d in sorted((run / "campaigns" / ".jin").rglob("*"), reverse=True):
        d.rmdir() if d.is_dir() else d.unlink()
    _campaign(run, "random", 5, records=1)
    with pytest.raises(RunDirError, match=r"seed_5 is not a seed of this job \(seeds: \[0, 1\]\)"):
        check_campaign_state(run, resolved)


def test_remove_stale_files_touches_only_leftovers_inside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cdir = _campaign(run, ".hidden", records=1)  # a plain name may start with '.'
    check_round_records(cdir)
    leftovers = [run / ".job.yaml.tmp-123", run / ".rounds.csv.tmp-9",
                 cdir / "rounds" / ".round_001.json.tmp-77", cdir / ".pending.json.tmp-5"]
    for p in leftovers:
        p.write_text("half")
    ckpt_tmp = cdir / "round_000" / "tmpab12_xyz"
    ckpt_tmp.mkdir()
    (ckpt_tmp / "model.safetensors").write_bytes(b"x")
    train = run / "_ray_train" / "random-s0-r0"
    train.mkdir(parents=True)
    (train / "checkpoint").write_text("x")
    keep = [run / "notes.tmp-1", run / "job.yaml", cdir / "rounds" / "round_000.json",
            run / "data" / ".cache.tmp-4", cdir / "round_000" / "model.json"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            p.write_text("keep")
    outside = tmp_path / ".x.tmp-1"
    outside.write_text("not ours")
    removed = remove_stale_files(run)
    assert sorted(removed) == sorted([*leftovers, ckpt_tmp, train])
    assert all(p.exists() for p in keep) and outside.exists()
    assert (run / "_ray_train").is_dir() and not any((run / "_ray_train").iterdir())


# ----------------------------------------------------------------------------- pool checks


def _feature_shard(path: Path, ids, x=None, label=None) -> None:
    ids = np.asarray(ids, np.int64)
    x = np.ones((len(ids), 3), np.float32) if x is None else x
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(S.feature_table(ids, x, ids % 2, label=ids % 2 if label is None else label),
                   path)


def test_pool_rows_are_checked_once_and_cached_by_fingerprint(tmp_path: Path) -> None:
    from rayfal.data.pool import Pool, PoolError
    from rayfal.data.validate import check_cache, validate_pool

    for i in range(3):
        _feature_shard(tmp_path / "pool" / f"{i}.parquet", np.arange(i * 10, i * 10 + 10))
    cache = tmp_path / "run" / "data" / "pool-checks"
    pool = Pool(str(tmp_path / "pool"))
    assert pool.checked is None  # no cache given: values checked lazily
    first = validate_pool(pool, cache_dir=cache)
    assert first.read == 3 and len(list(cache.glob("*.json"))) == 3
    assert (first.label_min, first.label_max) == (0, 1)
    assert validate_pool(pool, cache_dir=cache).read == 0
    # a shard rewritten (new size/mtime) is read again; its NaN row is named with the file
    x = np.ones((10, 3), np.float32)
    x[4, 2] = np.nan
    bad = tmp_path / "pool" / "1.parquet"
    _feature_shard(bad, np.arange(10, 20), x)
    os.utime(bad, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(PoolError, match=rf"{bad}: NaN/inf features in row_id\(s\) \[14\]"):
        validate_pool(pool, cache_dir=cache)
    with check_cache(cache), pytest.raises(PoolError, match=r"row_id\(s\) \[14\]"):
        Pool(str(tmp_path / "pool"))  # opened inside the run's context: checked on opening
    _feature_shard(bad, np.arange(10, 20))
    with check_cache(cache):
        assert Pool(str(tmp_path / "pool")).checked.read == 1


def test_pool_labels_must_be_classes_of_the_test_set(tmp_path: Path) -> None:
    from rayfal.data.pool import Pool, PoolError
    from rayfal.data.validate import check_pool_labels

    _feature_shard(tmp_path / "test" / "t.parquet", np.arange(100, 110))
    _feature_shard(tmp_path / "pool" / "p.parquet", np.arange(10),
                   label=np.array([0, 1, 2, 1, 0, 0, 2, 1, 0, 1]))
    pool, test = Pool(str(tmp_path / "pool")), Pool(str(tmp_path / "test"))
    with pytest.raises(PoolError, match=r"p\.parquet: column 'label' has class ids \[2\] "
                                        r"outside \[0, 2\).* in row_id\(s\) \[2, 6\]"):
        check_pool_labels(pool, test)
    _feature_shard(tmp_path / "test" / "t.parquet", np.arange(100, 110),
                   label=np.arange(10) % 3)
    check_pool_labels(pool, Pool(str(tmp_path / "test")))


def test_score_removes_only_dead_processes_temp_files(tmp_path: Path) -> None:
    from rayfal.scoring.score_job import remove_stale_temp_files

    out = tmp_path / "out"
    (out / "scores").mkdir(parents=True)
    (out / "done").mkdir()
    dead, live = _dead_pid(), os.getppid()
    stale = [out / "scores" / f".a.parquet.tmp-{dead}", out / "done" / f".a.json.tmp-{dead}",
             out / f".topk.parquet.tmp-{os.getpid()}"]
    kept = [out / "scores" / f".b.parquet.tmp-{live}", out / "scores" / "a.parquet"]
    for p in stale + kept:
        p.write_text("x")
    assert sorted(remove_stale_temp_files(out)) == sorted(stale)
    assert all(p.exists() for p in kept)


# ----------------------------------------------------------------------------- end to end


def _tree(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if skip not in p.parents and p != skip}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_real_run_stays_inside_its_run_dir_and_resumes_only_itself(
        ray_session, tmp_path: Path, monkeypatch, capsys) -> None:
    from rayfal.cli import main

    work = tmp_path / "work"
    run = work / "runs" / "mine"
    # decoys where a path bug would write or delete: Ray Train's run names next to the run dir
    for decoy in (work / "runs" / "...x-s0-r0", work / "_ray_train" / "...x-s0-r0",
                  tmp_path / "...x-s0-r1", work / "runs" / "_ray_train" / "...x-s0-r1"):
        decoy.mkdir(parents=True)
        (decoy / "keep").write_text("x")
    job = work / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "stays_inside", "seeds": [0],
        "dataset": {"name": "glyphs", "n_pool": 60, "n_test": 40, "image_size": 8,
                    "shard_rows": 30},
        "model": {"width": 4, "hidden": 8},
        "training": {"epochs": 1, "min_steps": 2, "batch_size": 16},
        "al": {"initial_labels": 10, "query_size": 5, "rounds": 2, "max_frac": None},
        "scoring": {"compute": "tasks", "batch_size": 32, "mc_samples": 2},
        "evaluation": {"mc_samples": 2},
        "campaigns": [{"strategy": "random", "label": "...x"}],
    }))
    monkeypatch.chdir(work)
    before = _tree(tmp_path, run)
    assert main(["run", str(job), "--run-dir", str(run), "--no-progress"]) == 0
    assert _tree(tmp_path, run) == before  # nothing created or removed outside the run dir
    assert not (run / LOCK_FILE).exists()
    train = run / "_ray_train"  # Ray Train's storage: emptied by each round (if it was used)
    assert not train.exists() or not any(train.iterdir())
    assert len(list((run / "data" / "pool-checks").glob("*.json"))) == 2 + 2  # pool + test
    cdir = run / "campaigns" / "...x" / "seed_0"
    assert sorted(p.name for p in (cdir / "rounds").iterdir()) == \
        ["round_000.json", "round_001.json", "round_002.json"]
    capsys.readouterr()

    # the real state passes the resume checks (and a finished run resumes to the same table)
    rounds = (run / "rounds.csv").read_text()
    assert main(["run", str(job), "--run-dir", str(run), "--no-progress", "--resume"]) == 0
    assert (run / "rounds.csv").read_text() == rounds
    # without --resume: refused, nothing touched
    assert main(["run", str(job), "--run-dir", str(run), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # another job's settings on --resume: refused
    assert main(["run", str(job), "--run-dir", str(run), "--no-progress", "--resume",
                 "--set", "al.initial_labels=12"]) == 2
    assert "the job differs" in capsys.readouterr().err
    # a middle record lost: --resume would repeat round 1; refused naming it
    (cdir / "rounds" / "round_001.json").unlink()
    assert main(["run", str(job), "--run-dir", str(run), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "round_001.json missing" in err and "Traceback" not in err
    assert (run / "rounds.csv").read_text() == rounds
    assert _tree(tmp_path, run) == before
