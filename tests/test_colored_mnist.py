"""Colored-MNIST source (GBA paper setting): determinism, schema, skew, unbiased test set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import require_data

from rayfal.config import DatasetConfig
from rayfal.data import schema as S
from rayfal.data.sources import open_dataset
from rayfal.data.sources.colored_mnist import (
    BIAS_ALIGNED,
    COLOURS,
    DEFAULT_MNIST_CSV,
    N_CLASSES,
    generate_colored_mnist,
    load_mnist_csv,
)
from rayfal.fairness.bias import aligned_for, read_bias_aligned

PER_CLASS = 30  # synthetic source rows per digit


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    """A small MNIST-format CSV: 60 random 'digits' per class (784 pixels then the label)."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    pixels = (rng.random((len(labels), 784)) < 0.2) * rng.integers(100, 256, (len(labels), 784))
    path = tmp_path_factory.mktemp("mnist") / "mnist_5k.csv.gz"
    np.savetxt(path, np.column_stack([pixels, labels]), fmt="%d", delimiter=",")
    return path


def _gen(out: Path, csv: Path, **kw) -> dict:
    args = dict(source=csv, n_pool=200, n_test=100, skew=0.95, seed=0, shard_rows=80)
    return generate_colored_mnist(out, **{**args, **kw})


def _read(out: Path, split: str):
    return pq.read_table(sorted((out / split).glob("*.parquet"))).to_pydict()


def test_real_source_format() -> None:
    csv = require_data("mnist5k/mnist_5k.csv.gz")
    if "RAYFAL_SHARED_DATA" not in os.environ:  # the library's default is that same file
        assert DEFAULT_MNIST_CSV.resolve() == csv.resolve()
    images, labels = load_mnist_csv(csv)
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.reshape(5000, -1).mean() > 10  # real strokes


def test_bad_source_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["0"] * 784 + ["3"]) + "\n" + ",".join(["0"] * 784 + ["12"]) + "\n")
    with pytest.raises(ValueError, match=r"labels outside 0-9 on line\(s\) \[2\]"):
        load_mnist_csv(bad)
    with pytest.raises(FileNotFoundError, match="dataset.src_dir|dataset.source"):
        generate_colored_mnist(tmp_path / "x", source=tmp_path / "missing.csv.gz")


def test_deterministic_and_cached(tmp_path: Path, csv: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ma = _gen(a, csv)
    _gen(b, csv)
    _gen(c, csv, seed=1)
    for split in ("pool", "test"):
        files = sorted(p.name for p in (a / split).glob("*.parquet"))
        assert files == sorted(p.name for p in (b / split).glob("*.parquet"))
        for f in files:
            assert pq.read_table(a / split / f).equals(pq.read_table(b / split / f))
        assert _read(a, split)[S.IMAGE] != _read(c, split)[S.IMAGE]
    assert _gen(a, csv) == ma  # cache hit returns the manifest
    with pytest.raises(ValueError, match="skew"):
        _gen(a, csv, skew=0.99)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_schema_rows_and_colours(tmp_path: Path, csv: Path) -> None:
    out = tmp_path / "d"
    manifest = _gen(out, csv)
    pool = _read(out, "pool")
    schema = pq.read_schema(sorted((out / "pool").glob("*.parquet"))[0])
    assert schema.names == [S.ROW_ID, S.IMAGE, S.GROUP, S.LABEL, BIAS_ALIGNED]
    assert S.input_shape(schema) == (3, 32, 32)
    assert pool[S.ROW_ID] == list(range(200)) and manifest["row_ids"]["test"] == [200, 300]
    label, group = np.array(pool[S.LABEL]), np.array(pool[S.GROUP])
    assert np.bincount(label).tolist() == [20] * 10
    np.testing.assert_array_equal(pool[BIAS_ALIGNED], (group == label).astype(int))
    # Known answer for the pixels: the 28x28 digit sits in the centre, the 2-pixel border is
    # black, and every inked pixel is (intensity x colour of the row's group) up to the jitter.
    img = S.column_to_numpy(pq.read_table(sorted((out / "pool").glob("*.parquet"))[0]).column(
        S.IMAGE)).reshape(-1, 32, 32, 3).astype(float)
    assert img[:, :2].max() == 0 and img[:, -2:].max() == 0 and img[:, :, :2].max() == 0
    bright = img.reshape(len(img), -1, 3)
    top = bright[np.arange(len(img)), bright.sum(2).argmax(1)] / 255.0
    g = group[: len(img)]
    scale = top.max(1, keepdims=True) / COLOURS[g].max(1, keepdims=True)
    assert np.abs(top / scale - COLOURS[g]).max() < 0.2


def test_skew_fraction_and_unbiased_test(tmp_path: Path, csv: Path) -> None:
    for skew in (0.95, 0.8):
        out = tmp_path / f"s{skew}"
        manifest = _gen(out, csv, skew=skew)
        pool = _read(out, "pool")
        label, group = np.array(pool[S.LABEL]), np.array(pool[S.GROUP])
        aligned = np.array(pool[BIAS_ALIGNED])
        for c in range(N_CLASSES):  # exact per class: round(skew * 20) aligned rows
            assert aligned[label == c].sum() == round(skew * 20)
        assert abs(aligned.mean() - skew) <= 0.5 / 20
        assert manifest["counts"]["pool"]["bias_aligned_fraction"] == pytest.approx(aligned.mean())
        # conflicting rows: colour != class, spread over the other colours
        conf = aligned == 0
        assert (group[conf] != label[conf]).all() and len(np.unique(group[conf])) > 5
    test = _read(tmp_path / "s0.95", "test")
    label, group = np.array(test[S.LABEL]), np.array(test[S.GROUP])
    cells = np.zeros((N_CLASSES, N_CLASSES), int)
    np.add.at(cells, (label, group), 1)
    assert (cells == 1).all()  # 10 rows per class, every colour exactly once: independent
    assert np.mean(test[BIAS_ALIGNED]) == pytest.approx(0.1)


def test_registered_source_and_bias_lookup(tmp_path: Path, csv: Path) -> None:
    cfg = DatasetConfig(name="colored_mnist", src_dir=str(csv.parent), n_pool=200, n_test=100,
                        skew=0.9, shard_rows=1000)
    pool, test = open_dataset(cfg, tmp_path)
    assert pool.num_rows == 200 and test.num_rows == 100 and pool.input_shape == (3, 32, 32)
    manifest = json.loads(next(tmp_path.glob("colored_mnist-skew0.9-*/dataset.json")).read_text())
    assert manifest["skew"] == 0.9 and manifest["counts"]["pool"]["bias_aligned"] == 180
    lookup = read_bias_aligned(test)
    rows = test.read_all([S.ROW_ID, S.LABEL, S.GROUP])
    ids = rows[S.ROW_ID][::-1]  # any order: looked up by id
    expect = (rows[S.GROUP] == rows[S.LABEL]).astype(int)[::-1]
    np.testing.assert_array_equal(aligned_for(lookup, ids), expect)
    with pytest.raises(KeyError, match="12345"):
        aligned_for(lookup, np.array([12345]))
    assert read_bias_aligned(pool) is not None
