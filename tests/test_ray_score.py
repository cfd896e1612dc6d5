"""`rayfal score` on a real local Ray: exactly-once output under an actor kill, and resume."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch

from rayfal.cli import main
from rayfal.config import ScoringConfig
from rayfal.data.pool import Pool
from rayfal.models import build_model
from rayfal.models.checkpoint import model_spec, save_checkpoint
from rayfal.scoring.score_job import file_key, score_to_parquet

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def sharded_pool(tmp_path_factory):
    from rayfal.data.sources.glyphs import generate_glyphs

    out = tmp_path_factory.mktemp("score") / "glyphs"
    generate_glyphs(out, scenario="minority_group", n_pool=320, n_test=8, seed=1,
                    shard_rows=40, image_size=16, progress=False)
    return str(out / "pool" / "*.parquet")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = dict(width=8, hidden=16, dropout=0.5)
    model = build_model("cnn", (3, 16, 16), 2, **kwargs)
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(d, model.state_dict(), model_spec("cnn", (3, 16, 16), 2, **kwargs))
    return d


def _read_scores(out):
    tables = [pq.read_table(p) for p in sorted((out / "scores").glob("*.parquet"))]
    row_id = np.concatenate([t.column("row_id").to_numpy() for t in tables])
    score = np.concatenate([t.column("score").to_numpy() for t in tables])
    return row_id, score


def _kill_first_actor(state: dict, stop: threading.Event) -> None:
    """Kill -9 the first scoring actor process that has started working."""
    while not stop.is_set():
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "MapWorker(MapBatches(PoolScorer))" in cmd and "__init__" not in cmd:
                time.sleep(1.0)
                try:
                    proc.kill()
                    state["killed"] = proc.info["pid"]
                except psutil.NoSuchProcess:
                    continue
                return
        time.sleep(0.1)


def test_exactly_once_when_an_actor_dies(ray_session, sharded_pool, checkpoint, tmp_path):
    pool = Pool(sharded_pool)
    out = tmp_path / "scores"
    state: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_actor, args=(state, stop), daemon=True)
    killer.start()

    try:
        res = score_to_parquet(sharded_pool, checkpoint, out, mc_samples=30, top_k=12,
                               cfg=ScoringConfig(compute="actors", batch_size=8), progress=False)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert state.get("killed"), "the test did not manage to kill a scoring actor"
    row_id, score = _read_scores(out)
    assert len(row_id) == pool.num_rows == res.rows_scored
    assert sorted(row_id.tolist()) == sorted(pool.row_ids().tolist())  # each row exactly once
    assert np.isfinite(score).all() and (score >= 0).all()
    top = pq.read_table(out / "topk.parquet").to_pandas()
    assert len(top) == 12 and top["score"].is_monotonic_decreasing
    assert np.isclose(top["score"].iloc[0], score.max())


def test_resume_scores_only_missing_shards(ray_session, sharded_pool, checkpoint, tmp_path):
    out = tmp_path / "scores"
    args = ["score", "--pool", sharded_pool, "--checkpoint", str(checkpoint), "--out", str(out),
            "--mc", "5", "--compute", "tasks", "--no-progress"]
    assert main(args) == 0
    row_id, score = _read_scores(out)
    # simulate a crash that lost the last shard's commit
    last = Pool(sharded_pool).files[-1]
    (out / "done" / f"{file_key(last)}.json").unlink()
    (out / "scores" / f"{file_key(last)}.parquet").unlink()
    res = score_to_parquet(sharded_pool, checkpoint, out, mc_samples=5, progress=False,
                           cfg=ScoringConfig(compute="tasks"))
    assert res.files_scored == 1 and res.rows_scored == 40
    row_id2, score2 = _read_scores(out)
    order, order2 = np.argsort(row_id), np.argsort(row_id2)
    assert np.array_equal(row_id[order], row_id2[order2])
    assert np.allclose(score[order], score2[order2])  # same scores: row-keyed MC masks
    # a different model in the same output folder is refused
    with pytest.raises(ValueError, match="another run"):
        score_to_parquet(sharded_pool, checkpoint, out, mc_samples=7, progress=False)


def test_cli_resources_and_leftovers_of_a_killed_run(ray_session, sharded_pool, checkpoint,
                                                     tmp_path, capsys):
    """`rayfal score` passes --cpus-per-actor/--gpus-per-actor into ScoringConfig, removes the
    temp files a killed run left (dead pid) and holds no lock afterwards."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is gone
    out = tmp_path / "scores"
    (out / "scores").mkdir(parents=True)
    (out / "done").mkdir()
    stale = [out / "scores" / f".part-000-abc.parquet.tmp-{proc.pid}",
             out / "done" / f".part-000-abc.json.tmp-{proc.pid}"]
    for p in stale:
        p.write_bytes(b"half written")
    args = ["score", "--pool", sharded_pool, "--checkpoint", str(checkpoint), "--out", str(out),
            "--mc", "3", "--compute", "tasks", "--cpus-per-actor", "1", "--gpus-per-actor", "0",
            "--top-k", "5", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert not any(p.exists() for p in stale)
    assert not (out / "rayfal.lock").exists()
    assert len(list((out / "done").glob("*.json"))) == len(Pool(sharded_pool).files)
    assert len(list((out / "pool-checks").glob("*.json"))) == len(Pool(sharded_pool).files)
    assert main(args) == 0  # everything committed: nothing scored again
    assert "0 rows from 0/" in capsys.readouterr().out
