"""Pools of image files (``uri`` column): indexing a tree, decoding where rows are scored and
trained on, unreadable files reported by row_id and path, torchvision backbones.

The end-to-end test writes ~200 small JPEGs in an ImageFolder layout, indexes them with
``rayfal data index-images``, runs a 2-round BALD campaign with a torchvision ResNet-18
(random init, 32 px) and checks the scores against an in-memory decoding of the same files
that shares no code with rayfal's reader (PIL directly, no Parquet, no Ray)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import rayfal
from rayfal.cli import main as cli_main
from rayfal.data import schema as S
from rayfal.data.images import ImageDecodeError, ImageRefs, decode_uris
from rayfal.data.index_images import IndexImagesError, index_images, row_id_for
from rayfal.data.pool import Pool
from rayfal.data.validate import validate_pool

SIZE = 32


def _write_tree(root: Path, prefix: str, n: int, seed: int) -> None:
    """``n`` JPEGs (36x44 px, two classes by brightness) in ``root/class{c}/``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % 2
        img = rng.integers(0, 90, (36, 44, 3), dtype=np.uint8) + np.uint8(40 + 110 * c)
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{prefix}_{i:04d}.jpg", quality=90)


def _groups_csv(root: Path, path: Path) -> dict[str, int]:
    rel = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    groups = {r: int(i % 3 == 0) for i, r in enumerate(rel)}
    path.write_text("file,group\n" + "".join(f"{r},{g}\n" for r, g in groups.items()))
    return groups


def in_memory_inputs(paths: list[str]) -> np.ndarray:
    """The reference decoding, written out here: PIL open, RGB, cover-resize + centre crop
    (bilinear), [0, 1] float CHW."""
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = ImageOps.fit(im.convert("RGB"), (SIZE, SIZE), method=Image.Resampling.BILINEAR)
            # x * (1/255): the scaling of decoded image pools (schema.to_model_input)
            out.append(np.asarray(im, np.float32).transpose(2, 0, 1) * np.float32(1 / 255))
    return np.stack(out)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("images")
    _write_tree(base / "pool", "p", 160, 0)
    _write_tree(base / "test", "t", 40, 1)
    groups = _groups_csv(base / "pool", base / "pool_groups.csv")
    _groups_csv(base / "test", base / "test_groups.csv")
    assert cli_main(["data", "index-images", str(base / "pool"), "--out", str(base / "idx_pool"),
                     "--csv", str(base / "pool_groups.csv"), "--image-size", str(SIZE)]) == 0
    assert cli_main(["data", "index-images", str(base / "test"), "--out", str(base / "idx_test"),
                     "--csv", str(base / "test_groups.csv"), "--image-size", str(SIZE)]) == 0
    return {"base": base, "groups": groups, "pool": str(base / "idx_pool" / "*.parquet"),
            "test": str(base / "idx_test" / "*.parquet")}


# ----------------------------------------------------------------------------- index, no Ray


def test_index_rows_labels_groups_and_stable_ids(trees) -> None:
    base = trees["base"]
    pool = Pool(trees["pool"])
    assert pool.feature_column == S.URI and pool.input_shape == (3, SIZE, SIZE)
    assert pool.num_rows == 160 and pool.has_labels
    validate_pool(pool)
    rows = pool.read_all([S.ROW_ID, S.GROUP, S.LABEL, S.URI])
    rel = [Path(u).relative_to(base / "pool").as_posix() for u in rows[S.URI].uris]
    # row_id = hash of the relative path; label = class folder; group = the CSV's
    assert rows[S.ROW_ID].tolist() == [row_id_for(r) for r in rel]
    assert rows[S.LABEL].tolist() == [int(r.split("/")[0][-1]) for r in rel]
    assert rows[S.GROUP].tolist() == [trees["groups"][r] for r in rel]
    # indexing again (elsewhere) gives the same ids
    again = index_images(str(base / "pool"), base / "idx_again", image_size=SIZE, progress=False)
    assert sorted(Pool(again.pattern).row_ids().tolist()) == sorted(pool.row_ids().tolist())


def test_index_errors_name_the_files(trees, tmp_path: Path) -> None:
    base = trees["base"]
    with pytest.raises(IndexImagesError, match=r"row_id collision.*class\d/p_\d+\.jpg and"):
        index_images(str(base / "pool"), tmp_path / "c", progress=False, _bits=3)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,group\nclass0/nope.jpg,1\n")
    with pytest.raises(IndexImagesError, match="nope.jpg"):
        index_images(str(base / "pool"), tmp_path / "d", csv=str(bad_csv), progress=False)
    mixed = tmp_path / "mixed"
    shutil.copytree(base / "test", mixed)
    shutil.copy(next((base / "test" / "class0").glob("*.jpg")), mixed / "loose.jpg")
    with pytest.raises(IndexImagesError, match="loose.jpg"):
        index_images(str(mixed), tmp_path / "e", progress=False)


def test_truncated_jpeg_is_reported_by_row_id_and_path(trees, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(trees["base"] / "test", tree)
    victim = sorted((tree / "class1").glob("*.jpg"))[2]
    victim.write_bytes(victim.read_bytes()[: 200])
    res = index_images(str(tree), tmp_path / "idx", image_size=SIZE, progress=False)
    pool = Pool(res.pattern)
    rid = row_id_for(victim.relative_to(tree).as_posix())
    # training / evaluation path: pool rows -> ImageRefs -> to_model_input
    rows = pool.take(pool.row_ids(), [S.URI])
    assert isinstance(rows[S.URI], ImageRefs)
    with pytest.raises(ImageDecodeError, match=rf"row_id {rid}: {victim}"):
        S.to_model_input(rows[S.URI], pool.input_shape)
    # scoring path with on_error=skip: the row is left out and reported
    dec = decode_uris(rows[S.URI], pool.input_shape, on_error="skip")
    assert (~dec.ok).sum() == 1 and rows[S.ROW_ID][~dec.ok].tolist() == [rid]
    assert dec.errors[0][:2] == (rid, str(victim)) and len(dec.x) == pool.num_rows - 1
    # the other rows decode as the reference does
    ok_paths = [str(u) for u in rows[S.URI].uris[dec.ok]]
    np.testing.assert_array_equal(dec.x, in_memory_inputs(ok_paths))
    threaded = decode_uris(rows[S.URI], pool.input_shape, on_error="skip", threads=3)
    np.testing.assert_array_equal(threaded.x, dec.x)
    assert threaded.errors == dec.errors
    with pytest.raises(ImageDecodeError, match="index-images|unreadable"):
        index_images(str(tree), tmp_path / "idx2", image_size=SIZE, verify=True, progress=False)


def test_job_config_for_image_files_and_torchvision(trees, tmp_path: Path) -> None:
    from rayfal.config import ConfigError

    base = {"dataset": {"name": "image_files", "pool": trees["pool"], "test": trees["test"],
                        "image_size": SIZE},
            "model": {"name": "torchvision", "arch": "resnet18"}}
    job = rayfal.load_job(base).config
    assert job.dataset.on_error == "fail" and job.model.arch == "resnet18"
    for bad, key in [({"model": {"name": "torchvision"}}, "model.arch"),
                     ({"model": {"name": "cnn", "arch": "resnet18"}}, "model.arch"),
                     ({"model": {"name": "torchvision", "arch": "resnet18",
                                 "weights": "w.pt"}}, "model.weights"),
                     ({"model": {"name": "torchvision", "arch": "resnet18",
                                 "weights": str(tmp_path / "none.safetensors")}},
                      "model.weights"),
                     ({"dataset": {**base["dataset"], "on_error": "ignore"}},
                      "dataset.on_error"),
                     ({"dataset": {**base["dataset"], "resize": 3}}, "dataset")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            rayfal.load_job({**base, **bad})


def test_torchvision_backbones_weights_and_freeze(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from rayfal.models import build_model
    from rayfal.models.torchvision_backbone import ARCHS, load_backbone_weights

    torch.manual_seed(0)
    m = build_model("torchvision", (3, 32, 32), 4, arch="resnet18", hidden=16, dropout=0.5)
    assert m.embed(torch.rand(2, 3, 32, 32)).shape == (2, ARCHS["resnet18"][1])
    # user weights: a torchvision state_dict (classifier keys ignored)
    import torchvision

    ref = torchvision.models.resnet18(weights=None, num_classes=7)
    save_file(ref.state_dict(), tmp_path / "r18.safetensors")
    info = load_backbone_weights(m, tmp_path / "r18.safetensors", "resnet18")
    assert info == {"loaded": len(ref.state_dict()) - 2, "ignored": 2}
    assert torch.equal(m.trunk[1].conv1.weight, ref.conv1.weight)
    save_file({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not fit torchvision resnet18"):
        load_backbone_weights(m, tmp_path / "bad.safetensors", "resnet18")
    # frozen trunk through the job's model section: only the head trains
    from rayfal.models.checkpoint import build_from_config

    job = rayfal.load_job({"model": {"name": "torchvision", "arch": "mobilenet_v3_small",
                              "freeze_trunk": True,
                              "weights": None}}).config
    model, spec = build_from_config(job.model, (1, 32, 32), 3)
    assert spec["freeze_trunk"] and spec["kwargs"]["arch"] == "mobilenet_v3_small"
    assert not any(p.requires_grad for p in model.trunk.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


# ----------------------------------------------------------------------------- with Ray


def _bald_in_memory(ckpt: Path, paths: list[str], row_ids: np.ndarray, *, seed: int,
                    rnd: int, mc: int) -> np.ndarray:
    from rayfal.acquisition import scores
    from rayfal.models.checkpoint import load_checkpoint
    from rayfal.models.predict import mc_probs

    model = load_checkpoint(ckpt)[0]
    x = torch.from_numpy(in_memory_inputs(paths))
    probs = mc_probs(model, x, mc_samples=mc, generator_seed=seed * 100_003 + rnd,
                     row_keys=row_ids)
    return scores.bald(probs)


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_campaign_on_image_files_scores_equal_in_memory(ray_session, trees, tmp_path: Path
                                                        ) -> None:
    from rayfal.config import ScoringConfig
    from rayfal.models.checkpoint import read_checkpoint
    from rayfal.scoring.per_row import score_pool

    mc = 6
    job = rayfal.load_job({
        "name": "image_files", "seeds": [0],
        "dataset": {"name": "image_files", "pool": trees["pool"], "test": trees["test"],
                    "image_size": SIZE},
        "model": {"name": "torchvision", "arch": "resnet18", "hidden": 16,
                  "freeze_trunk": True},
        "training": {"epochs": 1, "min_steps": 5, "batch_size": 32},
        "al": {"initial_labels": 20, "query_size": 10, "rounds": 2, "max_frac": None},
        "scoring": {"mc_samples": mc}, "evaluation": {"mc_samples": mc},
        "campaigns": [{"strategy": "bald"}],
    })
    result = rayfal.run(job, tmp_path / "run", progress=False, report=False)
    df = result.records
    assert df["n_labelled"].tolist() == [20, 30, 40]
    seed_dir = tmp_path / "run" / "campaigns" / "bald" / "seed_0"

    pool = Pool(trees["pool"])
    rows = pool.read_all([S.ROW_ID, S.URI])
    ids, paths = rows[S.ROW_ID], [str(u) for u in rows[S.URI].uris]
    from rayfal.data.ledger import LabelLedger

    ledger = LabelLedger(seed_dir / "ledger.sqlite").to_frame()
    assert len(ledger) == 40
    labelled_r1 = ledger.loc[ledger["round"] <= 1, "row_id"].to_numpy(np.int64)
    selected_r1 = ledger.loc[ledger["round"] == 2, "row_id"].to_numpy(np.int64)
    # 1) round 1's campaign choice = the top 10 of the in-memory BALD scores
    unl = ~np.isin(ids, labelled_r1)
    ref = _bald_in_memory(seed_dir / "round_001", [p for p, u in zip(paths, unl, strict=True) if u],
                          ids[unl], seed=0, rnd=1, mc=mc)
    top = ids[unl][np.argsort(-ref, kind="stable")[:10]]
    assert sorted(selected_r1.tolist()) == sorted(top.tolist())
    # 2) every unlabelled row's score through Ray Data = the in-memory score of that row
    meta, weights = read_checkpoint(seed_dir / "round_001")
    res = score_pool(pool, strategy="bald", strategy_params={}, seed=0, round=1,
                     budget=pool.num_rows, labelled=labelled_r1, model=(meta["spec"], weights),
                     cfg=ScoringConfig(mc_samples=mc), progress=False)
    got = dict(zip(res.candidates.row_id.tolist(), res.candidates.score.tolist(),
                   strict=True))
    assert res.rows_scored == int(unl.sum()) == len(got)
    np.testing.assert_allclose([got[i] for i in ids[unl].tolist()], ref, rtol=1e-5, atol=1e-9)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_scoring_truncated_jpeg_fail_or_skip(ray_session, trees, tmp_path: Path, caplog) -> None:
    import logging

    from rayfal.config import ScoringConfig
    from rayfal.models import build_model
    from rayfal.models.checkpoint import model_spec
    from rayfal.scoring.per_row import score_pool

    tree = tmp_path / "tree"
    shutil.copytree(trees["base"] / "test", tree)
    victim = sorted((tree / "class0").glob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[: 300])
    res = index_images(str(tree), tmp_path / "idx", image_size=SIZE, progress=False)
    rid = row_id_for(victim.relative_to(tree).as_posix())
    spec = model_spec("cnn", (3, SIZE, SIZE), 2, width=4, hidden=8, dropout=0.5)
    torch.manual_seed(0)
    from safetensors.torch import save

    weights = save(build_model("cnn", (3, SIZE, SIZE), 2, width=4, hidden=8,
                               dropout=0.5).state_dict())
    kwargs = dict(strategy="bald", strategy_params={}, seed=0, round=0, budget=100,
                  labelled=np.zeros(0, np.int64), model=(spec, weights),
                  cfg=ScoringConfig(mc_samples=4), progress=False)
    with pytest.raises(Exception, match=rf"row_id {rid}: {victim}"):
        score_pool(Pool(res.pattern, on_error="fail"), **kwargs)
    with caplog.at_level(logging.WARNING, logger="rayfal"):
        out = score_pool(Pool(res.pattern, on_error="skip"), **kwargs)
    assert out.rows_scored == 39 and rid not in out.candidates.row_id.tolist()
    assert "1 unlabelled row(s) not scored" in caplog.text
