"""Labels from people: query files, label-file checks, the waiting campaign, and the whole
loop (run -> label files -> import -> resume) ending in the same ledger as the simulated
oracle on the same pool with the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rayfal
from rayfal.cli import main
from rayfal.data.ledger import LabelLedger
from rayfal.labelling.batches import QueryBatch, write_batch
from rayfal.labelling.imports import LabelFileError, read_label_file

BATCH = np.array([11, 12, 13, 14])


def _csv(path: Path, rows: list[tuple], columns=("row_id", "label"), **const) -> Path:
    df = pd.DataFrame(rows, columns=list(columns))
    for k, v in const.items():
        df.insert(0, k, v)
    df.to_csv(path, index=False)
    return path


def test_label_file_accepts_a_partial_batch(tmp_path: Path) -> None:
    f = _csv(tmp_path / "a.csv", [(12, 1), (11, 0)], round=3, campaign="bald", seed=0)
    rows = read_label_file(f, batch_ids=BATCH, num_classes=2,
                           expected={"campaign": "bald", "seed": 0, "round": 3})
    assert rows.row_id.tolist() == [12, 11] and rows.label.tolist() == [1, 0]


@pytest.mark.parametrize("rows, fragment", [
    ([(11, "")], "empty label in rows 2 (row_id 11)"),
    ([(11, 1), (12, 5)], "label outside the known classes 0..1 in rows 3 (row_id 12): [5]"),
    ([(11, "cat")], "label is not an integer class id in rows 2 (row_id 11): ['cat']"),
    ([(11, 1), (11, 1)], "duplicate row_id [11] in rows 2, 3"),
    ([(11, 1), (99, 0)], "row_id not in the batch waiting for labels in rows 3 (row_id 99); "
                         "not in the pool at all: [99]"),
    ([("x", 1)], "row_id is not an integer in rows 2"),
])
def test_bad_label_files_name_rows_and_ids(tmp_path: Path, rows, fragment: str) -> None:
    f = _csv(tmp_path / "b.csv", rows)
    with pytest.raises(LabelFileError) as info:
        read_label_file(f, batch_ids=BATCH, num_classes=2,
                        in_pool=lambda ids: np.asarray(ids) < 50)
    msg = str(info.value)
    assert str(f) in msg and fragment in msg and msg.endswith("nothing imported"), msg


def test_label_file_for_another_round_or_without_columns(tmp_path: Path) -> None:
    f = _csv(tmp_path / "c.csv", [(11, 1)], round=2)
    with pytest.raises(LabelFileError, match="column 'round' is 2 but the campaign waits for "
                                             "round 3"):
        read_label_file(f, batch_ids=BATCH, num_classes=2, expected={"round": 3})
    g = tmp_path / "d.csv"
    pd.DataFrame({"id": [11], "y": [1]}).to_csv(g, index=False)
    with pytest.raises(LabelFileError, match=r"missing column\(s\) \['row_id', 'label'\]"):
        read_label_file(g, batch_ids=BATCH, num_classes=2)


def test_query_batch_files_and_contact_sheet(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    batch = QueryBatch("bald", 1, 4, np.array([7, 3, 9]), np.array([0, 1, 0]),
                       np.array([0.9, 0.5, 0.1]), {"uri": np.array(["a", "b", "c"])}, images)
    paths = write_batch(batch, tmp_path)
    assert sorted(paths) == ["csv", "parquet", "png"]
    table = pd.read_parquet(paths["parquet"])
    assert table[["row_id", "rank", "uri"]].values.tolist() == [[7, 1, "a"], [3, 2, "b"],
                                                                 [9, 3, "c"]]
    sheet = pd.read_csv(paths["csv"], keep_default_na=False)
    assert list(sheet.columns) == ["campaign", "seed", "round", "row_id", "group", "rank",
                                   "label"]
    assert (sheet["label"] == "").all() and paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_004.csv", "round_004.parquet",
                                                          "round_004.png"]


# ----------------------------------------------------------------------------- the whole loop


def _blobs(n: int, seed: int, start: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    group = (rng.random(n) < 0.4).astype(np.int64)
    x = rng.normal(size=(n, 4)) + 1.5 * y[:, None] + 0.4 * group[:, None]
    return {"row_id": np.arange(start, start + n), "group": group,
            "features": x.astype(np.float32), "label": y}


def _job(pool: Path, test: Path, oracle: str) -> dict:
    return {"name": "people", "seeds": [0],
            "dataset": {"name": "parquet", "pool": str(pool), "test": str(test)},
            "model": {"name": "mlp", "hidden": 16},
            "training": {"epochs": 2, "min_steps": 20, "batch_size": 16},
            "al": {"initial_labels": 12, "query_size": 8, "rounds": 2, "max_frac": None},
            "scoring": {"mc_samples": 4}, "evaluation": {"mc_samples": 4},
            "oracle": {"kind": oracle}, "campaigns": [{"strategy": "bald"}]}


def _fill(csv: Path, truth: dict[int, int], out: Path, keep=None) -> Path:
    sheet = pd.read_csv(csv, keep_default_na=False)
    if keep is not None:
        sheet = sheet.iloc[keep]
    sheet["label"] = [truth[int(r)] for r in sheet["row_id"]]
    sheet.to_csv(out, index=False)
    return out


def _ledger(run_dir: Path) -> list[tuple[int, int, int]]:
    df = LabelLedger(run_dir / "campaigns/bald/seed_0/ledger.sqlite").to_frame()
    return list(zip(df["row_id"], df["label"], df["round"], strict=True))


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_people_label_a_3_round_campaign_through_files(ray_session, tmp_path: Path,
                                                       capsys) -> None:
    data = _blobs(300, 0, 0)
    truth = dict(zip(data["row_id"].tolist(), data["label"].tolist(), strict=True))
    labelled = rayfal.write_pool(tmp_path / "pool_labelled", **data)
    hidden = rayfal.write_pool(tmp_path / "pool_unlabelled",
                               **{k: v for k, v in data.items() if k != "label"})
    test = rayfal.write_pool(tmp_path / "test", **_blobs(150, 1, 10_000))

    ref = tmp_path / "simulated"
    rayfal.run(rayfal.load_job(_job(labelled, test, "simulated")), ref, progress=False,
               report=False)

    run = tmp_path / "people"
    job = rayfal.load_job(_job(hidden, test, "files"))
    out = rayfal.run(job, run, progress=False, report=False)
    assert out.awaiting == [{"campaign": "bald", "seed": 0, "missing": 12, "requested": 12,
                             "file": str(run / "queries/bald/seed_0/initial.csv")}]
    queries = run / "queries/bald/seed_0"
    assert main(["labels", "status", str(run)]) == 0
    assert "waiting for labels" in capsys.readouterr().out

    # a bad file is rejected whole, naming rows and ids, and changes nothing
    bad = _fill(queries / "initial.csv", truth, tmp_path / "bad.csv")
    sheet = pd.read_csv(bad)
    sheet.loc[0, "label"] = 7
    sheet.to_csv(bad, index=False)
    ledger_file = run / "campaigns/bald/seed_0/ledger.sqlite"

    def state():
        led = LabelLedger(ledger_file)
        return led.to_frame().to_dict("list"), led.annotations_frame().to_dict("list")

    before = state()
    assert main(["labels", "import", str(run), str(bad), "--annotator", "ann"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label outside the known classes 0..1 in rows 2" in err[0]
    assert state() == before  # nothing imported

    good = _fill(queries / "initial.csv", truth, tmp_path / "initial.csv")
    assert main(["labels", "import", str(run), str(good), "--annotator", "ann"]) == 0
    assert main(["labels", "import", str(run), str(good), "--annotator", "ann"]) == 0  # no-op
    assert "0 new label(s)" in capsys.readouterr().out

    for r in range(2):
        out = rayfal.run(job, run, resume=True, progress=False, report=False)
        assert [w["file"] for w in out.awaiting] == [str(queries / f"round_{r:03d}.csv")]
        csv = queries / f"round_{r:03d}.csv"
        if r == 0:  # a partial batch first: the campaign keeps waiting, nothing retrained
            half = _fill(csv, truth, tmp_path / "half.csv", keep=slice(0, 5))
            assert main(["labels", "import", str(run), str(half), "--annotator", "bo"]) == 0
            assert "5 of 8 rows labelled, 3 remaining" in capsys.readouterr().out
            weights = run / "campaigns/bald/seed_0/round_000/model.safetensors"
            trained = weights.stat().st_mtime_ns
            out = rayfal.run(job, run, resume=True, progress=False, report=False)
            # still waiting; round 0 is recorded only once labelled, and not retrained
            assert out.awaiting[0]["missing"] == 3 and len(out.records) == 0
            assert weights.stat().st_mtime_ns == trained
        done = _fill(csv, truth, tmp_path / f"r{r}.csv")
        assert main(["labels", "import", str(run), str(done), "--annotator", "bo"]) == 0
    out = rayfal.run(job, run, resume=True, progress=False, report=False)
    assert out.awaiting == [] and len(out.records) == 3
    assert _ledger(run) == _ledger(ref)  # the same labels as the simulated oracle's
    df = LabelLedger(ledger_file).to_frame()
    assert set(df["source"]) == {"human"} and set(df["annotator"]) == {"ann", "bo"}
    rec = json.loads((run / "campaigns/bald/seed_0/rounds/round_001.json").read_text())
    assert rec["label_source"] == "human" and set(rec["selected_annotators"]) == {"bo"}
    assert main(["labels", "status", str(run)]) == 0
    assert "finished" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_crashes_in_a_human_round_lose_and_duplicate_nothing(ray_session, tmp_path: Path,
                                                            monkeypatch) -> None:
    from rayfal.campaign.oracle import PeopleOracle

    data = _blobs(200, 3, 0)
    truth = dict(zip(data["row_id"].tolist(), data["label"].tolist(), strict=True))
    labelled = rayfal.write_pool(tmp_path / "pool_labelled", **data)
    hidden = rayfal.write_pool(tmp_path / "pool_unlabelled",
                               **{k: v for k, v in data.items() if k != "label"})
    test = rayfal.write_pool(tmp_path / "test", **_blobs(100, 4, 10_000))

    def job(pool, oracle):
        raw = _job(pool, test, oracle)
        raw["al"]["rounds"] = 1
        return rayfal.load_job(raw)

    ref = tmp_path / "simulated"
    rayfal.run(job(labelled, "simulated"), ref, progress=False, report=False)
    run, people = tmp_path / "people", job(hidden, "files")
    queries = run / "queries/bald/seed_0"
    rayfal.run(people, run, progress=False, report=False)
    _fill(queries / "initial.csv", truth, tmp_path / "init.csv")
    assert main(["labels", "import", str(run), str(tmp_path / "init.csv")]) == 0

    # 1) killed between writing the pending query and handing the batch over
    real_request = PeopleOracle.request
    state = {"crashed": False}

    def crash_once(self, batch):
        if batch.round == 0 and not state["crashed"]:
            state["crashed"] = True
            raise RuntimeError("killed while writing the query files")
        return real_request(self, batch)

    monkeypatch.setattr(PeopleOracle, "request", crash_once)
    with pytest.raises(RuntimeError, match="killed while writing"):
        rayfal.run(people, run, resume=True, progress=False, report=False)
    assert not (queries / "round_000.csv").exists()
    out = rayfal.run(people, run, resume=True, progress=False, report=False)
    assert out.awaiting[0]["file"] == str(queries / "round_000.csv")
    _fill(queries / "round_000.csv", truth, tmp_path / "r0.csv")
    assert main(["labels", "import", str(run), str(tmp_path / "r0.csv")]) == 0

    # 2) killed between the round record and the ledger commit
    real_commit = LabelLedger.commit

    def commit_crash(self, *args, round, **kw):
        if round == 1 and not state.get("commit"):
            state["commit"] = True
            raise OSError("killed during the ledger commit")
        return real_commit(self, *args, round=round, **kw)

    monkeypatch.setattr(LabelLedger, "commit", commit_crash)
    with pytest.raises(OSError, match="ledger commit"):
        rayfal.run(people, run, resume=True, progress=False, report=False)
    out = rayfal.run(people, run, resume=True, progress=False, report=False)
    assert out.awaiting == [] and len(out.records) == 2
    assert _ledger(run) == _ledger(ref)
    assert not (run / "campaigns/bald/seed_0/pending.json").exists()
