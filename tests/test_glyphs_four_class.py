"""The additive ``four_class`` glyph scenario: 4 classes, two noise-domain groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rayfal.data import schema as S
from rayfal.data.sources import glyphs


def _rows(out: Path, split: str) -> dict:
    return pq.read_table(sorted((out / split).glob("*.parquet"))).to_pydict()


def test_four_class_deterministic_counts_and_noisier_group(tmp_path: Path) -> None:
    kw = dict(scenario="four_class", n_pool=200, n_test=80, minority_fraction=0.2,
              shard_rows=128, image_size=16, progress=False)
    manifest = glyphs.generate_glyphs(tmp_path / "a", seed=3, **kw)
    glyphs.generate_glyphs(tmp_path / "b", seed=3, **kw)
    for split in ("pool", "test"):
        for f in sorted((tmp_path / "a" / split).glob("*.parquet")):
            assert pq.read_table(f).equals(pq.read_table(tmp_path / "b" / split / f.name))
    assert manifest["chars"] == ["a", "d", "e", "k"]
    assert manifest["group_names"] == ["clean", "noisy"]
    # pool: classes balanced within each group, 20% noisy; test: 10 rows in each of 8 cells
    assert manifest["counts"]["pool"] == [[40, 10]] * 4
    assert manifest["counts"]["test"] == [[10, 10]] * 4
    pool = _rows(tmp_path / "a", "pool")
    assert np.bincount(pool[S.LABEL]).tolist() == [50] * 4
    assert np.bincount(pool[S.GROUP]).tolist() == [160, 40]
    # the noisy group has rougher pixels (noise std x NOISY_SIGMA_SCALE)
    img = S.column_to_numpy(pq.read_table(sorted((tmp_path / "a" / "pool").glob("*.parquet"))[0])
                            .column(S.IMAGE)).reshape(-1, 16, 16, 3).astype(float)
    grp = np.array(pool[S.GROUP][: len(img)])
    rough = np.abs(np.diff(img, axis=2)).mean(axis=(1, 2, 3))
    assert rough[grp == 1].mean() > 1.5 * rough[grp == 0].mean()


def test_render_overrides_default_to_group_colours() -> None:
    """``colours=groups`` and ``noise_scale=1`` reproduce the default render exactly (the
    paper's scenarios are untouched by the four_class arguments)."""
    rng_args = dict(chars=("a", "d"), image_size=16)
    labels, groups = np.array([0, 1, 1, 0, 1]), np.array([0, 0, 1, 1, 1])
    plain = glyphs.render_images(labels, groups, rng=np.random.default_rng(5), **rng_args)
    same = glyphs.render_images(labels, groups, rng=np.random.default_rng(5), colours=groups,
                                noise_scale=np.ones(5), **rng_args)
    other = glyphs.render_images(labels, groups, rng=np.random.default_rng(5),
                                 colours=1 - groups, **rng_args)
    np.testing.assert_array_equal(plain, same)
    assert not np.array_equal(plain, other)
