"""Dataset sources: each writes (or points at) a pool and a test set in the pool schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rayfal.config import DatasetConfig
from rayfal.data.pool import Pool
from rayfal.registry import Registry

#: name -> fn(cfg, default_dir) -> (pool glob, test glob)
SOURCES: Registry[Callable[[DatasetConfig, Path], tuple[str, str]]] = Registry("dataset")


@SOURCES.register("glyphs")
def _glyphs(cfg: DatasetConfig, default_dir: Path) -> tuple[str, str]:
    from rayfal.data.sources.glyphs import generate_glyphs

    out = Path(cfg.dir) if cfg.dir else default_dir / (
        f"glyphs-{cfg.scenario}-{cfg.n_pool}-{cfg.n_test}-s{cfg.seed}-{cfg.image_size}px"
    )
    generate_glyphs(
        out,
        scenario=cfg.scenario,
        n_pool=cfg.n_pool,
        n_test=cfg.n_test,
        seed=cfg.seed,
        image_size=cfg.image_size,
        minority_fraction=cfg.minority_fraction,
        correlation=cfg.correlation,
        shard_rows=cfg.shard_rows,
    )
    return str(out / "pool" / "*.parquet"), str(out / "test" / "*.parquet")


@SOURCES.register("colored_mnist")
def _colored_mnist(cfg: DatasetConfig, default_dir: Path) -> tuple[str, str]:
    """Colored-MNIST (GBA paper) from ``<src_dir>/mnist_5k.csv.gz``; ``skew`` = aligned share."""
    from rayfal.data.sources.colored_mnist import DEFAULT_MNIST_CSV, generate_colored_mnist

    out = Path(cfg.dir) if cfg.dir else default_dir / (
        f"colored_mnist-skew{cfg.skew:g}-{cfg.n_pool}-{cfg.n_test}-s{cfg.seed}-{cfg.image_size}px"
    )
    source = Path(cfg.src_dir) / DEFAULT_MNIST_CSV.name if cfg.src_dir else DEFAULT_MNIST_CSV
    generate_colored_mnist(
        out, source=source, n_pool=cfg.n_pool, n_test=cfg.n_test, skew=cfg.skew,
        seed=cfg.seed, image_size=cfg.image_size, shard_rows=cfg.shard_rows,
    )
    return str(out / "pool" / "*.parquet"), str(out / "test" / "*.parquet")


@SOURCES.register("adult")
def _adult(cfg: DatasetConfig, default_dir: Path) -> tuple[str, str]:
    """UCI Adult, PANDA's split (meta / pool (+ D0 rows flagged 'initial') / test)."""
    from rayfal.data.sources.adult import adult_dir, prepare_adult, source_dir

    out = adult_dir(cfg, default_dir)
    prepare_adult(out, source_dir(cfg), seed=cfg.seed, d0_size=cfg.d0_size,
                  standardize=cfg.standardize)
    return str(out / "pool" / "*.parquet"), str(out / "test" / "*.parquet")


@SOURCES.register("parquet")
def _parquet(cfg: DatasetConfig, default_dir: Path) -> tuple[str, str]:
    assert cfg.pool and cfg.test
    return cfg.pool, cfg.test


@SOURCES.register("image_files")
def _image_files(cfg: DatasetConfig, default_dir: Path) -> tuple[str, str]:
    """Indexes of image files (``uri`` column; rayfal/data/index_images.py)."""
    return cfg.pool, cfg.test


def open_dataset(cfg: DatasetConfig, default_dir: Path) -> tuple[Pool, Pool]:
    """Prepare the data set if needed and open ``(pool, test)``."""
    pool_glob, test_glob = SOURCES.get(cfg.name)(cfg, default_dir)
    opts = cfg.pool_options() if hasattr(cfg, "pool_options") else {}  # image files
    pool, test = Pool(pool_glob, name="pool", **opts), Pool(test_glob, name="test set", **opts)
    if not test.has_labels:
        raise ValueError(f"test set {test_glob} has no 'label' column")
    if pool.input_shape != test.input_shape:
        raise ValueError(f"pool and test inputs differ: {pool.input_shape} vs {test.input_shape}")
    overlap = pool.is_known(test.row_ids())
    if overlap.any():
        raise ValueError(
            f"row_ids appear in both the pool and the test set, e.g. "
            f"{test.row_ids()[overlap][:10].tolist()}"
        )
    return pool, test
