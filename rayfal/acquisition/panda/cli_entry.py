"""``rayfal panda-train``: meta-train a PANDA policy from the command line (argparse lives in
:mod:`rayfal.cli`; this is the command's body)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rayfal.acquisition.panda.meta import as_metadata
from rayfal.acquisition.panda.policy import POLICY_META
from rayfal.acquisition.panda.settings import PandaSettings
from rayfal.acquisition.panda.train import train_policy

__all__ = ["parse_set", "run_cli"]

#: object store of the embedded local Ray ``--workers N`` starts (as a job's ``ray`` default)
OBJECT_STORE_BYTES = 1_000_000_000


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as a dict (values parsed as YAML scalars)."""
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got '{item}'")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def run_cli(args: Any) -> int:
    """``rayfal panda-train``: ``--data adult`` (``--src-dir``, ``--data-seed``) or an ``.npz``
    with ``x``, ``y``, ``group``; ``--set FIELD=VALUE`` for :class:`PandaSettings` fields;
    ``--workers N`` (a Ray Train worker group; ``--address`` or an embedded local Ray)."""
    settings = PandaSettings.from_dict(parse_set(args.set))
    if args.data == "adult":
        from rayfal.data.sources.adult import meta_split_arrays

        src = args.src_dir or os.environ.get("RAYFAL_ADULT_DIR", "../shared/data/adult")
        data: Any = meta_split_arrays(src, args.data_seed)
    else:
        data = as_metadata(args.data)
    if args.workers > 0:
        from rayfal.ray_env import init_ray

        init_ray(args.address, object_store_memory=OBJECT_STORE_BYTES)
    t0 = time.perf_counter()
    out = train_policy(data, settings, args.out, resume=not args.no_resume,
                       num_workers=args.workers, use_gpu=args.gpu,
                       progress=not args.no_progress)
    meta = json.loads((out / POLICY_META).read_text())
    print(f"PANDA policy at step {meta['step']} ({time.perf_counter() - t0:.0f} s) -> {out}")
    print(json.dumps(meta.get("record"), sort_keys=True))
    return 0
