"""The manifest check shared by the generated data sets (glyphs, Colored-MNIST)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "dataset.json"


def check_existing(out_dir: Path, params: dict[str, Any], kind: str) -> dict[str, Any]:
    """The manifest of the ``kind`` data set already in ``out_dir`` if it was generated with
    ``params``; an error naming every differing parameter otherwise (nothing is overwritten)."""
    path = out_dir / MANIFEST
    if not path.is_file():
        raise FileExistsError(f"{out_dir} exists but holds no {MANIFEST}; refusing to overwrite it")
    manifest = json.loads(path.read_text())
    diff = sorted(k for k in params if manifest.get(k) != params[k])
    if diff:
        detail = ", ".join(
            f"{k}: existing={manifest.get(k)!r} requested={params[k]!r}" for k in diff
        )
        raise ValueError(f"{out_dir} holds a different {kind} dataset ({detail})")
    return manifest
