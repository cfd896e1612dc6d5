"""Tests for the synthetic glyph (Synbols-like) dataset generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfal.data import schema
from rayfal.data.sources import glyphs
from rayfal.data.sources.glyphs import SCENARIOS, generate_glyphs, render_glyphs
from rayfal.data.sources.glyphs import write as glyphs_write

SMALL = dict(n_pool=600, n_test=200, shard_rows=256, progress=False)


def _read(root: Path, split: str) -> pa.Table:
    files = sorted((root / split).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _cells(table: pa.Table, n_classes: int = 2) -> np.ndarray:
    label = table[schema.LABEL].to_numpy()
    group = table[schema.GROUP].to_numpy()
    cells = np.zeros((n_classes, 2), dtype=np.int64)
    np.add.at(cells, (label, group), 1)
    return cells


@pytest.fixture(scope="module")
def minority_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("glyphs") / "minority"
    manifest = generate_glyphs(
        root,
        scenario="minority_group",
        n_pool=4000,
        n_test=400,
        seed=3,
        shard_rows=1500,
        progress=False,
    )
    return root, manifest


@pytest.fixture(scope="module")
def sensitive_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("glyphs") / "sensitive"
    manifest = generate_glyphs(
        root,
        scenario="sensitive_attribute",
        n_pool=4000,
        n_test=400,
        seed=3,
        shard_rows=1500,
        progress=False,
    )
    return root, manifest


def test_render_shapes_and_dtypes() -> None:
    images, label, group = render_glyphs(50, classes=2, scenario="minority_group", rng_seed=0)
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.uint8
    assert label.shape == group.shape == (50,)
    assert label.dtype == group.dtype == np.int64
    assert set(np.unique(label)) <= {0, 1} and set(np.unique(group)) <= {0, 1}
    images, label, _ = render_glyphs(
        30, classes=("x", "y", "z"), scenario="sensitive_attribute", rng_seed=1, image_size=24
    )
    assert images.shape == (30, 24, 24, 3) and set(np.unique(label)) == {0, 1, 2}
    assert images.std() > 10  # not blank


def test_render_is_seeded() -> None:
    a = render_glyphs(40, scenario="sensitive_attribute", rng_seed=[1, 2])
    b = render_glyphs(40, scenario="sensitive_attribute", rng_seed=[1, 2])
    c = render_glyphs(40, scenario="sensitive_attribute", rng_seed=[1, 3])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_layout_schema_and_row_ids(minority_ds: tuple[Path, dict]) -> None:
    root, manifest = minority_ds
    assert sorted(p.name for p in (root / "pool").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [pq.read_metadata(root / f).num_rows for f in manifest["files"]["pool"]] == [
        1500,
        1500,
        1000,
    ]
    pool, test = _read(root, "pool"), _read(root, "test")
    assert schema.input_shape(pool.schema) == (3, 32, 32)
    assert schema.input_shape(test.schema) == (3, 32, 32)
    assert schema.feature_column(pool.schema) == schema.IMAGE
    for name in (schema.ROW_ID, schema.GROUP, schema.LABEL):
        assert pool.schema.field(name).type == pa.int64()
    assert pool.schema.field(schema.IMAGE).type == pa.list_(pa.uint8(), 32 * 32 * 3)
    np.testing.assert_array_equal(pool[schema.ROW_ID].to_numpy(), np.arange(4000))
    np.testing.assert_array_equal(test[schema.ROW_ID].to_numpy(), np.arange(4000, 4400))
    x = schema.to_model_input(schema.column_to_numpy(test[schema.IMAGE]), (3, 32, 32))
    assert x.shape == (400, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0


def test_manifest(minority_ds: tuple[Path, dict]) -> None:
    root, manifest = minority_ds
    assert json.loads((root / "dataset.json").read_text()) == manifest
    assert manifest["name"] == "glyphs" and manifest["scenario"] == "minority_group"
    assert manifest["image_shape"] == [32, 32, 3]
    assert manifest["chars"] == ["a", "d"] and manifest["group_names"] == ["red", "blue"]
    assert manifest["n_pool"] == 4000 and manifest["n_test"] == 400
    assert manifest["seed"] == 3 and manifest["version"] == glyphs.GENERATOR_VERSION
    for split in ("pool", "test"):
        assert manifest["counts"][split] == _cells(_read(root, split)).tolist()


def test_minority_group_proportions(minority_ds: tuple[Path, dict]) -> None:
    cells = _cells(_read(minority_ds[0], "pool"))
    n = cells.sum()
    assert abs(cells[:, 1].sum() / n - 0.1) < 0.01  # P(group = 1) = minority_fraction
    assert abs(cells[1].sum() / n - 0.5) < 0.01  # balanced classes
    for g in (0, 1):  # group independent of class: same class proportions per group
        assert abs(cells[1, g] / cells[:, g].sum() - 0.5) < 0.02
    # The i.i.d. path of render_glyphs follows the same distribution.
    _, label, group = render_glyphs(
        4000, scenario="minority_group", rng_seed=5, minority_fraction=0.2
    )
    assert abs(group.mean() - 0.2) < 0.03 and abs(label.mean() - 0.5) < 0.03


def test_sensitive_attribute_correlation(sensitive_ds: tuple[Path, dict]) -> None:
    cells = _cells(_read(sensitive_ds[0], "pool"))
    for c in (0, 1):
        assert abs(cells[c, c] / cells[c].sum() - 0.9) < 0.02  # P(group = label | label)
    assert abs(cells[1].sum() / cells.sum() - 0.5) < 0.01


@pytest.mark.parametrize("ds", ["minority_ds", "sensitive_ds"])
def test_test_split_is_balanced(ds: str, request: pytest.FixtureRequest) -> None:
    root, manifest = request.getfixturevalue(ds)
    cells = _cells(_read(root, "test"))
    assert (cells == 100).all()
    assert manifest["counts"]["test"] == [[100, 100], [100, 100]]


def test_colour_encodes_group() -> None:
    rng = np.random.default_rng(0)
    label = np.tile([0, 1], 200)
    group = np.repeat([0, 1], 200)
    images, masks = glyphs.render_images(
        label, group, chars=("a", "d"), image_size=32, rng=rng, return_masks=True
    )
    ink = masks > 200
    assert ink.sum(axis=(1, 2)).min() > 5  # every glyph has visible ink
    px = images.astype(np.float64)
    red = np.array([px[i, ink[i], 0].mean() for i in range(len(px))])
    blue = np.array([px[i, ink[i], 2].mean() for i in range(len(px))])
    assert red[group == 0].mean() > red[group == 1].mean() + 100
    assert blue[group == 1].mean() > blue[group == 0].mean() + 100
    assert (red[group == 0] > blue[group == 0]).all() and (blue[group == 1] > red[group == 1]).all()


def test_deterministic_bytes_and_parallel(tmp_path: Path) -> None:
    m1 = generate_glyphs(tmp_path / "a", scenario="sensitive_attribute", seed=7, **SMALL)
    m2 = generate_glyphs(tmp_path / "b", scenario="sensitive_attribute", seed=7, **SMALL)
    m3 = generate_glyphs(
        tmp_path / "c", scenario="sensitive_attribute", seed=7, num_workers=2, **SMALL
    )
    assert m1 == m2 == m3
    for split in ("pool", "test"):
        t1 = _read(tmp_path / "a", split)
        assert t1.equals(_read(tmp_path / "b", split), check_metadata=True)
        assert t1.equals(_read(tmp_path / "c", split), check_metadata=True)
    for f in m1["files"]["pool"] + m1["files"]["test"]:
        data = (tmp_path / "a" / f).read_bytes()
        assert data == (tmp_path / "b" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()


def test_different_seeds_differ(tmp_path: Path) -> None:
    generate_glyphs(tmp_path / "a", scenario="minority_group", seed=0, **SMALL)
    generate_glyphs(tmp_path / "b", scenario="minority_group", seed=1, **SMALL)
    for split in ("pool", "test"):
        a, b = _read(tmp_path / "a", split), _read(tmp_path / "b", split)
        assert not a[schema.IMAGE].equals(b[schema.IMAGE])
    assert not _read(tmp_path / "a", "pool")[schema.LABEL].equals(
        _read(tmp_path / "b", "pool")[schema.LABEL]
    )


def test_cache_hit_and_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    first = generate_glyphs(out, scenario="minority_group", seed=0, **SMALL)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated despite a cache hit")

    monkeypatch.setattr(glyphs_write, "_generate_into", boom)
    assert generate_glyphs(out, scenario="minority_group", seed=0, **SMALL) == first
    # correlation is unused by minority_group, so it does not invalidate the cache
    assert (
        generate_glyphs(out, scenario="minority_group", seed=0, correlation=0.5, **SMALL) == first
    )
    with pytest.raises(ValueError, match="seed") as err:
        generate_glyphs(out, scenario="minority_group", seed=1, **SMALL)
    assert "n_pool" not in str(err.value)
    with pytest.raises(ValueError, match="minority_fraction.*n_pool|n_pool.*minority"):
        generate_glyphs(
            out,
            scenario="minority_group",
            seed=0,
            minority_fraction=0.3,
            **{**SMALL, "n_pool": 700},
        )
    with pytest.raises(ValueError, match="scenario"):
        generate_glyphs(out, scenario="sensitive_attribute", seed=0, **SMALL)


def test_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = glyphs_write._write_shard

    def flaky(*args: object) -> str:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(glyphs_write, "_write_shard", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_glyphs(tmp_path / "ds", scenario="minority_group", **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor the temp dir remain


def test_invalid_arguments(tmp_path: Path) -> None:
    assert SCENARIOS == ("minority_group", "sensitive_attribute")
    with pytest.raises(ValueError, match="scenario"):
        generate_glyphs(tmp_path / "x", scenario="nope", **SMALL)
    with pytest.raises(ValueError, match="scenario"):
        render_glyphs(5, scenario="nope", rng_seed=0)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("hi")
    with pytest.raises(FileExistsError):
        generate_glyphs(junk, scenario="minority_group", **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = generate_glyphs(empty, scenario="minority_group", **SMALL)
    assert (empty / "dataset.json").is_file() and manifest["n_pool"] == 600
