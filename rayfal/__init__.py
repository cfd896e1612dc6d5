"""rayfal: fair and robust active learning at cluster scale, on Ray.

Public API (imported lazily, so ``import rayfal`` stays cheap)::

    rayfal.load_job(path_or_dict, overrides=None) -> Job
    rayfal.run(job, run_dir=None, *, resume=False, address=None) -> RunResult
    rayfal.write_pool(directory, *, row_id, group, features=None, images=None, label=None)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Job", "RunResult", "load_job", "run", "write_pool"]

if TYPE_CHECKING:
    from rayfal.api import Job, RunResult, load_job, run
    from rayfal.data.write import write_pool


def __getattr__(name: str) -> Any:
    if name in ("Job", "RunResult", "load_job", "run"):
        from rayfal import api

        return getattr(api, name)
    if name == "write_pool":
        from rayfal.data.write import write_pool

        return write_pool
    raise AttributeError(f"module 'rayfal' has no attribute {name!r}")
