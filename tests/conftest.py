"""Shared fixtures: one local Ray per test session (started lazily by the tests that need it)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray, no dashboard, bounded object store; shut down at the end."""
    import logging

    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    if not ray.is_initialized():
        ray.init(
            address="local",  # never attach to another Ray running on this host
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=500_000_000,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def glyph_data(tmp_path_factory):
    """A small sensitive-attribute glyph data set (pool 300 rows, test 120 rows)."""
    from rayfal.data.sources.glyphs import generate_glyphs

    out = tmp_path_factory.mktemp("glyphs") / "sens"
    generate_glyphs(out, scenario="sensitive_attribute", n_pool=300, n_test=120, seed=0,
                    shard_rows=100, progress=False)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: torch's intra-op threads only add overhead (restored afterwards). Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
