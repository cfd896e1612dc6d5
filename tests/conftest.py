"""Shared fixtures: one local Ray per test session (started lazily by the tests that need it),
and the real data sets of ``<repo>/../shared/data`` (:data:`SHARED_DATA`, :func:`require_data`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The real data sets (read by path, never copied into the repo): ``<repo>/../shared/data``, or
#: ``$RAYFAL_SHARED_DATA`` (a test-only override, e.g. to check the CI failure below).
SHARED_DATA = Path(os.environ.get("RAYFAL_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def in_ci() -> bool:
    """``CI=true`` (or 1/yes) in the environment: missing data fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_data(*relative: str) -> Path:
    """Each ``SHARED_DATA / relative`` path must exist; returns the first. Missing: the test
    skips locally, but *fails* under ``CI=true`` (the data is provisioned there, so a skip would
    hide a broken path) with a message naming the missing path(s)."""
    paths = [SHARED_DATA / r for r in relative]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        msg = (f"missing data: {', '.join(missing)} (the real data sets are read from "
               f"<repo>/../shared/data, or $RAYFAL_SHARED_DATA)")
        if in_ci():
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    return paths[0]


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "needs_data(*paths): the test reads these paths under the shared data root "
        "(skips when missing; fails under CI=true)")


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("needs_data"):
        require_data(*mark.args)

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
