"""Tests of the Parquet pool, the schema helpers and the driver's pure helpers (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfal.config import config_from_dict
from rayfal.data import schema as S
from rayfal.data.pool import Pool, PoolError

H, W, C = 4, 6, 3  # non-square, so an H/W mix-up shows


def _images(row_id: np.ndarray) -> np.ndarray:
    """Deterministic pixels: pixel (h, w, c) of row r is (r + 7h + 3w + 50c) mod 256."""
    r = np.asarray(row_id)[:, None, None, None]
    h = np.arange(H)[None, :, None, None]
    w = np.arange(W)[None, None, :, None]
    c = np.arange(C)[None, None, None, :]
    return ((r + 7 * h + 3 * w + 50 * c) % 256).astype(np.uint8)


def _write_image_shards(directory: Path, shards: list[np.ndarray], prefix: str = "part") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, ids in enumerate(shards):
        ids = np.asarray(ids, dtype=np.int64)
        table = S.image_table(ids, _images(ids), group=ids % 3, label=ids % 5)
        pq.write_table(table, directory / f"{prefix}-{i:03d}.parquet")


def _features(row_id: np.ndarray, d: int = 4) -> np.ndarray:
    return (np.asarray(row_id)[:, None] * 10.0 + np.arange(d)[None, :]).astype(np.float32)


def _write_feature_shard(path: Path, ids, features=None, group=None) -> None:
    ids = np.asarray(ids, dtype=np.int64)
    features = _features(ids) if features is None else features
    group = ids % 2 if group is None else group
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(S.feature_table(ids, features, group, label=ids % 3), path)


SHARDS = [np.array([1000, 7, 52, 3]), np.array([900, 11]), np.array([5, 2**40, 64])]
ALL_IDS = np.concatenate(SHARDS)


@pytest.fixture
def image_pool(tmp_path: Path) -> Pool:
    _write_image_shards(tmp_path / "pool", SHARDS)
    return Pool(str(tmp_path / "pool"))


# ---------------------------------------------------------------------------- opening


def test_open_directory_glob_and_list(tmp_path: Path) -> None:
    _write_image_shards(tmp_path / "pool", SHARDS)
    (tmp_path / "pool" / "notes.txt").write_text("not parquet")  # ignored in a directory
    by_dir = Pool(str(tmp_path / "pool"))
    by_glob = Pool(str(tmp_path / "pool" / "part-*.parquet"))
    by_list = Pool([str(p) for p in sorted((tmp_path / "pool").glob("*.parquet"))])
    for pool in (by_dir, by_glob, by_list):
        assert len(pool.files) == 3
        assert pool.num_rows == len(ALL_IDS)
        assert sorted(pool.row_ids().tolist()) == sorted(ALL_IDS.tolist())
        assert pool.input_shape == (C, H, W)
        assert pool.feature_column == S.IMAGE and pool.has_labels
        np.testing.assert_array_equal(pool.groups(), pool.row_ids() % 3)
    # one shard only
    assert Pool(str(tmp_path / "pool" / "part-001.parquet")).num_rows == 2


def test_take_returns_rows_in_requested_order(image_pool: Pool) -> None:
    want = np.array([64, 1000, 2**40, 3, 900], dtype=np.int64)  # across all three shards
    rows = image_pool.take(want)
    np.testing.assert_array_equal(rows[S.ROW_ID], want)
    np.testing.assert_array_equal(rows[S.GROUP], want % 3)
    np.testing.assert_array_equal(rows[S.LABEL], want % 5)
    assert rows[S.IMAGE].shape == (5, H * W * C)
    np.testing.assert_array_equal(rows[S.IMAGE].reshape(5, H, W, C), _images(want))
    rev = image_pool.take(want[::-1], [S.LABEL])
    assert set(rev) == {S.LABEL, S.ROW_ID}  # row_id always comes along
    np.testing.assert_array_equal(rev[S.LABEL], want[::-1] % 5)
    empty = image_pool.take(np.zeros(0, np.int64), [S.GROUP])
    assert len(empty[S.GROUP]) == 0


def test_take_unknown_row_ids_raises_naming_them(image_pool: Pool) -> None:
    with pytest.raises(PoolError, match=r"unknown row_id\(s\) \[8, 99999\]"):
        image_pool.take(np.array([7, 8, 52, 99999]))
    with pytest.raises(PoolError, match=r"\[-1\]"):
        image_pool.take(np.array([-1]))


def test_is_known_and_group_counts(image_pool: Pool) -> None:
    query = np.array([7, 8, 2**40, 2**41, -5, 0, 3, 1000, 1001])
    np.testing.assert_array_equal(
        image_pool.is_known(query), [True, False, True, False, False, False, True, True, False]
    )
    expected = {g: int(np.sum(ALL_IDS % 3 == g)) for g in range(3)}
    assert image_pool.group_counts() == expected
    exclude = np.array([1000, 7, 3, 12345])  # groups 1, 1, 0 (+ one unknown id)
    got = image_pool.group_counts(exclude=exclude)
    assert got == {0: expected[0] - 1, 1: expected[1] - 2, 2: expected[2]}
    # a group whose rows are all excluded disappears
    ids_g2 = ALL_IDS[ALL_IDS % 3 == 2]
    assert 2 not in image_pool.group_counts(exclude=ids_g2)


def test_index_is_memory_mapped_and_read_only(image_pool: Pool) -> None:
    """The per-row index lives in memory-mapped (unlinked) files, not in the driver's heap;
    the unsorted pool keeps a sorted copy and its permutation, in file order otherwise."""
    import mmap

    np.testing.assert_array_equal(image_pool.row_ids(), ALL_IDS)
    np.testing.assert_array_equal(image_pool.groups(), ALL_IDS % 3)
    idx = image_pool.index
    for a in (idx.row_id, idx.group, idx.sorted_ids, idx.order):
        assert isinstance(getattr(a.base, "obj", a.base), mmap.mmap)
        assert not a.flags.writeable and a.dtype == np.int64
    np.testing.assert_array_equal(idx.sorted_ids, np.sort(ALL_IDS))
    np.testing.assert_array_equal(idx.row_id[idx.order], idx.sorted_ids)
    with pytest.raises(ValueError, match="read-only"):
        image_pool.row_ids()[0] = 1
    np.testing.assert_array_equal(image_pool.groups_of(np.array([64, 7, 2**40])),
                                  [64 % 3, 7 % 3, 2**40 % 3])
    with pytest.raises(PoolError, match=r"unknown row_id\(s\) \[8\]"):
        image_pool.groups_of(np.array([7, 8]))


def test_increasing_pool_needs_no_sorted_copy(tmp_path: Path, monkeypatch) -> None:
    """Row ids increasing across the (sorted) files: the index is the file-order arrays alone;
    group counts are summed over scan steps (3 rows a step here) and equal numpy's."""
    import rayfal.data.pool as pool_mod

    monkeypatch.setattr(pool_mod, "_STEP", 3)
    ids = [np.array([2, 5, 9, 10]), np.array([11, 40]), np.array([41, 42, 50, 77, 78])]
    groups = [np.array([0, 3, 3, 1]), np.array([1, 1]), np.array([0, 3, 3, 3, 1])]
    for i, (a, g) in enumerate(zip(ids, groups, strict=True)):
        _write_feature_shard(tmp_path / "p" / f"part-{i}.parquet", a, group=g)
    pool = Pool(str(tmp_path / "p"))
    assert pool.index.order is None and pool.index.sorted_ids is pool.index.row_id
    assert pool.num_rows == 11
    assert pool.group_counts() == {0: 2, 1: 4, 3: 5}
    assert pool.group_counts(exclude=np.array([9, 9, 5, 2, 1234])) == {0: 1, 1: 4, 3: 3}
    np.testing.assert_array_equal(pool.is_known(np.array([1, 2, 40, 79, 78])),
                                  [False, True, True, False, True])
    np.testing.assert_array_equal(pool.groups_of(np.array([78, 2, 11])), [1, 0, 1])
    # the same pool with its rows shuffled across files: same answers through the sorted copy
    perm = np.random.default_rng(0).permutation(11)
    all_ids, all_g = np.concatenate(ids)[perm], np.concatenate(groups)[perm]
    for i, sl in enumerate((slice(0, 5), slice(5, 11))):
        _write_feature_shard(tmp_path / "q" / f"part-{i}.parquet", all_ids[sl], group=all_g[sl])
    shuffled = Pool(str(tmp_path / "q"))
    assert shuffled.index.order is not None
    np.testing.assert_array_equal(shuffled.row_ids(), all_ids)
    assert shuffled.group_counts(exclude=np.array([9, 5, 2])) == {0: 1, 1: 4, 3: 3}
    np.testing.assert_array_equal(shuffled.groups_of(np.array([78, 2, 11])), [1, 0, 1])


def test_duplicate_within_one_shard_and_across_steps(tmp_path: Path, monkeypatch) -> None:
    import rayfal.data.pool as pool_mod

    monkeypatch.setattr(pool_mod, "_STEP", 2)  # duplicates on both sides of a step boundary
    _write_feature_shard(tmp_path / "p" / "part-0.parquet", [1, 2, 3, 3])
    _write_feature_shard(tmp_path / "p" / "part-1.parquet", [4, 5, 6, 5])
    with pytest.raises(PoolError, match=r"2 duplicated row_id\(s\), e.g. \[3, 5\]"):
        Pool(str(tmp_path / "p"))


def test_read_all_and_model_input_through_the_pool(image_pool: Pool) -> None:
    rows = image_pool.read_all([S.IMAGE, S.ROW_ID])
    x = S.to_model_input(rows[S.IMAGE], image_pool.input_shape)
    assert x.shape == (len(ALL_IDS), C, H, W) and x.dtype == np.float32
    i = int(np.flatnonzero(rows[S.ROW_ID] == 52)[0])
    # pixel (h=2, w=5, c=1) of row 52: (52 + 14 + 15 + 50) % 256 = 131
    assert x[i, 1, 2, 5] == pytest.approx(131 / 255)


# ---------------------------------------------------------------------------- bad data


def test_duplicate_row_ids_across_shards(tmp_path: Path) -> None:
    _write_image_shards(tmp_path / "p", [np.array([1, 2, 3]), np.array([4, 3, 9, 1])])
    with pytest.raises(PoolError, match=r"2 duplicated row_id\(s\), e.g. \[1, 3\]"):
        Pool(str(tmp_path / "p"))


def test_duplicates_name_the_files_holding_them(tmp_path: Path) -> None:
    _write_image_shards(tmp_path / "p", [np.array([1, 2]), np.array([5, 6]), np.array([2, 8])])
    with pytest.raises(PoolError, match=r"\[2\] \(in .*part-000\.parquet, .*part-002\.parquet\)"):
        Pool(str(tmp_path / "p"))


@pytest.mark.parametrize(("meta", "fragment"), [
    (b"[4, 6, 1]", r"= \[4, 6, 1\] gives 24 values per image, but the 'image' column has 72"),
    (b"[4, 6]", r"must be JSON \[H, W, C\]"),
    (b"{not json", r"must be JSON \[H, W, C\]"),
    (b"[4, -6, 3]", r"positive integers"),
])
def test_image_shape_metadata_must_match_the_column(tmp_path: Path, meta: bytes,
                                                    fragment: str) -> None:
    ids = np.array([1, 2])
    table = S.image_table(ids, _images(ids), ids % 2)
    pq.write_table(table.replace_schema_metadata({S.IMAGE_SHAPE_KEY: meta}), tmp_path / "i.parquet")
    with pytest.raises(PoolError, match=rf"i\.parquet: schema metadata 'rayfal\.image_shape'.*{fragment}"):
        Pool(str(tmp_path / "i.parquet"))


def test_missing_group_column_names_file_and_column(tmp_path: Path) -> None:
    _write_image_shards(tmp_path / "p", [np.array([1, 2])])
    bad = tmp_path / "p" / "part-001.parquet"
    table = S.image_table(np.array([5, 6]), _images(np.array([5, 6])), np.array([0, 1]))
    pq.write_table(table.drop_columns([S.GROUP]), bad)
    with pytest.raises(PoolError, match=rf"{bad}.*'group'"):
        Pool(str(tmp_path / "p"))


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    _write_image_shards(tmp_path / "p", [np.array([1, 2])])
    bad = tmp_path / "p" / "part-009.parquet"
    bad.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(PoolError, match=rf"{bad}.*not a readable Parquet"):
        Pool(str(tmp_path / "p"))


def test_nan_features_name_the_rows(tmp_path: Path) -> None:
    ids = np.array([10, 20, 30, 40, 50])
    feats = _features(ids)
    feats[1, 2] = np.nan
    feats[3, 0] = np.inf
    _write_feature_shard(tmp_path / "f" / "a.parquet", ids, feats)
    pool = Pool(str(tmp_path / "f" / "*.parquet"))  # opening only reads row_id/group
    assert pool.input_shape == (4,) and pool.feature_column == S.FEATURES
    ok = pool.take(np.array([50, 10]))
    np.testing.assert_array_equal(ok[S.FEATURES], _features(np.array([50, 10])))
    with pytest.raises(PoolError, match=r"row_id\(s\) \[40, 20\]"):  # in the order asked
        pool.take(np.array([40, 10, 20]))
    with pytest.raises(PoolError, match=r"row_id\(s\) \[20, 40\]"):
        pool.read_all()
    pool.take(np.array([20, 40]), [S.GROUP])  # fine when the features are not read


def test_empty_glob_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="no Parquet files match"):
        Pool(str(tmp_path / "*.parquet"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(PoolError, match="no Parquet files match"):
        Pool(str(tmp_path / "empty_dir"))
    missing = tmp_path / "missing.parquet"
    with pytest.raises(PoolError, match="missing.parquet"):
        Pool(str(missing))


def test_other_schema_errors_name_the_file(tmp_path: Path) -> None:
    _write_feature_shard(tmp_path / "a" / "x.parquet", [1, 2])
    _write_feature_shard(tmp_path / "a" / "y.parquet", [3, 4],
                         features=np.zeros((2, 5), np.float32))  # D=5 vs D=4
    with pytest.raises(PoolError, match=r"y\.parquet has a different schema"):
        Pool(str(tmp_path / "a"))
    no_meta = S.image_table(np.array([1]), _images(np.array([1])), np.array([0]))
    pq.write_table(no_meta.replace_schema_metadata({}), tmp_path / "m.parquet")
    with pytest.raises(PoolError, match=r"m\.parquet.*rayfal\.image_shape"):
        Pool(str(tmp_path / "m.parquet"))
    nulls = pa.table({S.ROW_ID: pa.array([1, 2], pa.int64()), S.GROUP: pa.array([0, None]),
                      S.FEATURES: S.feature_table(np.array([1, 2]), np.zeros((2, 3)),
                                                  np.array([0, 0])).column(S.FEATURES)})
    pq.write_table(nulls, tmp_path / "n.parquet")
    with pytest.raises(PoolError, match=r"n\.parquet.*'group' has null"):
        Pool(str(tmp_path / "n.parquet"))


# ---------------------------------------------------------------------------- schema helpers


def test_to_model_input_hwc_uint8_to_chw_float() -> None:
    imgs = np.zeros((2, H, W, C), np.uint8)
    imgs[1, 3, 4, 2] = 255
    imgs[1, 0, 1, 0] = 51
    imgs[0, 2, 0, 1] = 102
    x = S.to_model_input(imgs.reshape(2, -1), (C, H, W))
    assert x.shape == (2, C, H, W) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[1, 2, 3, 4] == 1.0
    assert x[1, 0, 0, 1] == pytest.approx(0.2)
    assert x[0, 1, 2, 0] == pytest.approx(0.4)
    assert np.count_nonzero(x) == 3 and x.min() >= 0.0 and x.max() <= 1.0
    # an object array of per-row arrays gives the same result
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = imgs[0].reshape(-1), imgs[1].reshape(-1)
    np.testing.assert_array_equal(S.to_model_input(obj, (C, H, W)), x)
    assert S.to_model_input(np.empty(0, dtype=object), (C, H, W)).shape[0] == 0


def test_to_model_input_features_and_input_shape() -> None:
    feats = np.arange(12, dtype=np.float64).reshape(3, 4)
    x = S.to_model_input(feats, (4,))
    assert x.dtype == np.float32 and x.shape == (3, 4)
    np.testing.assert_array_equal(x, feats.astype(np.float32))
    ft = S.feature_table(np.array([1, 2, 3]), feats, np.array([0, 1, 0]))
    assert S.input_shape(ft.schema) == (4,) and S.feature_column(ft.schema) == S.FEATURES
    it = S.image_table(np.array([1]), np.zeros((1, 8, 16, 3), np.uint8), np.array([0]))
    assert S.input_shape(it.schema) == (3, 8, 16) and S.feature_column(it.schema) == S.IMAGE
    with pytest.raises(ValueError, match="no 'image' or 'features'"):
        S.input_shape(pa.schema([(S.ROW_ID, pa.int64())]))
    with pytest.raises(ValueError, match="column lengths differ"):
        S.feature_table(np.array([1, 2]), feats, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        S.image_table(np.array([1]), np.zeros((1, 8, 8), np.uint8), np.array([0]))


# ---------------------------------------------------------------------------- driver helpers


def _cfg(**al):
    return config_from_dict({"al": al})


@pytest.mark.parametrize(
    ("al", "pool_size", "expected"),
    [
        ({"rounds": 4, "max_frac": None}, 1000, 4),
        ({"rounds": 0}, 1000, 0),
        ({"rounds": 3, "max_frac": 0.9}, 1000, 3),  # rounds wins over max_frac
        ({"rounds": None, "max_frac": 0.1, "initial_labels": 20, "query_size": 25}, 1000, 3),
        ({"rounds": None, "max_frac": 0.1, "initial_labels": 20, "query_size": 25}, 1500, 5),
        ({"rounds": None, "max_frac": 0.29, "initial_labels": 9, "query_size": 10}, 100, 2),
        ({"rounds": None, "max_frac": 0.1, "initial_labels": 50, "query_size": 10}, 100, 0),
        ({"rounds": None, "max_frac": 1.0, "initial_labels": 1, "query_size": 1}, 10, 9),
    ],
)
def test_schedule(al: dict, pool_size: int, expected: int) -> None:
    from rayfal.campaign.schedule import schedule

    assert schedule(_cfg(**al), pool_size) == expected


def test_initial_selection(tmp_path: Path) -> None:
    from rayfal.campaign.schedule import initial_selection

    ids = np.arange(200, dtype=np.int64) * 13 + 7
    _write_feature_shard(tmp_path / "one" / "a.parquet", ids)
    perm = np.random.default_rng(0).permutation(ids)  # other file layout and row order
    for i, part in enumerate(np.array_split(perm, 4)):
        _write_feature_shard(tmp_path / "four" / f"{i}.parquet", part)
    one, four = Pool(str(tmp_path / "one")), Pool(str(tmp_path / "four"))

    a = initial_selection(one.row_ids(), 20, seed=3)
    assert len(a) == 20 and len(np.unique(a)) == 20 and np.isin(a, ids).all()
    np.testing.assert_array_equal(a, initial_selection(one.row_ids(), 20, seed=3))
    # a function of (seed, row_ids) only: not of shard layout / order (nor of any strategy)
    assert set(initial_selection(four.row_ids(), 20, seed=3).tolist()) == set(a.tolist())
    assert set(initial_selection(one.row_ids(), 20, seed=4).tolist()) != set(a.tolist())
    # nested: a larger initial set extends the smaller one
    assert set(a.tolist()) <= set(initial_selection(one.row_ids(), 50, seed=3).tolist())
    # capped by the pool
    everything = initial_selection(one.row_ids(), 500, seed=3)
    assert sorted(everything.tolist()) == ids.tolist()


def test_atomic_write_text(tmp_path: Path) -> None:
    from rayfal.atomic import atomic_write_text

    path = tmp_path / "a" / "b" / "rounds.json"
    atomic_write_text(path, "first")
    assert path.read_text() == "first"
    atomic_write_text(path, "second ✓\n")
    assert path.read_text(encoding="utf-8") == "second ✓\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rounds.json"]  # no temp left
