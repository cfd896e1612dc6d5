"""Starting or joining Ray: the one place that calls ``ray.init`` for rayfal's commands."""

from __future__ import annotations

import logging
import os
from typing import Any


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None, include_dashboard: bool = False) -> None:
    """Connect to ``address`` (``auto``, ``ray://...``, ``host:port``) or, when it is ``None``,
    start an embedded local Ray (always a new one, even if a cluster runs on this host).
    Does nothing when Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                 include_dashboard=include_dashboard, **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = False
