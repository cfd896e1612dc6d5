"""Starting or joining Ray: the one place that calls ``ray.init`` for rayfal's commands."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

#: Ray's switch between single-machine mode (node address 127.0.0.1) and cluster mode
#: (the node's routable address); read by ``ray._private.services.get_node_ip_address``
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Make the Ray node started inside this block use 127.0.0.1 as its address.

    Ray 2.60's GCS, raylet, object manager, dashboard agent and workers bind to the node's
    address. On Linux that is the machine's routable IP (ports open to the network); the
    ``_node_ip_address`` argument does not help, because ``ray.init`` replaces a loopback
    value by the routable IP (``services.resolve_ip_for_localhost``). Ray's single-machine
    mode (its default on macOS and Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) uses
    127.0.0.1. The module constant is read at call time in this process; the environment
    variable reaches the processes ``ray.init`` spawns. Both are restored afterwards, so a later
    ``ray.init(address=...)`` in this process joins a cluster with its routable address.
    """
    from ray._private import ray_constants

    old_const = ray_constants.ENABLE_RAY_CLUSTER
    old_env = os.environ.get(SINGLE_MACHINE_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[SINGLE_MACHINE_ENV] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_const
        if old_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = old_env


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None, include_dashboard: bool = False,
             local_only: bool = True) -> None:
    """Connect to ``address`` (``auto``, ``ray://...``, ``host:port``) or, when it is ``None``,
    start an embedded local Ray (always a new one, even if a cluster runs on this host).
    Does nothing when Ray is already initialised in this process.

    The embedded Ray listens on 127.0.0.1 only (``local_only``, see :func:`_loopback_node`):
    its GCS, raylet, workers and dashboard are not reachable from other machines. A job that
    asks for a cluster (``address``, or ``ray.address`` in the job file) joins it as is."""
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
        scope = _loopback_node() if local_only else contextlib.nullcontext()
        with scope:
            ray.init(address="local", num_cpus=num_cpus,
                     object_store_memory=object_store_memory,
                     include_dashboard=include_dashboard,
                     dashboard_host=LOOPBACK if local_only else "localhost", **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = False
