"""PANDA meta-training checkpoints: safetensors + JSON, never pickle; atomic; resumable.

Layout of a meta-training directory ``out_dir``::

    out_dir/policy.safetensors, policy.json      final policy (load_policy(out_dir))
    out_dir/metrics.jsonl                        one record per meta-step
    out_dir/checkpoints/step_00000050/           every ``checkpoint_every`` steps
        policy.safetensors, policy.json          load_policy-able
        optimizer.safetensors                    Adam state + torch RNG state
        train_state.json                         step, settings, optimiser groups, data hash

A checkpoint directory is written under a temporary name and renamed, so a crash leaves the
previous checkpoints intact (:func:`remove_partial` drops the leftovers). A checkpoint only
resumes a run with the same core settings (:meth:`PandaSettings.core`) and the same D0
(:func:`~rayfal.acquisition.panda.meta.data_fingerprint`): :func:`check_resumable`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rayfal.acquisition.panda.policy import POLICY_META, POLICY_WEIGHTS, PandaPolicy, save_policy
from rayfal.acquisition.panda.settings import PandaSettings

__all__ = [
    "CHECKPOINTS",
    "METRICS",
    "OPTIMIZER",
    "TRAIN_STATE",
    "check_resumable",
    "export_policy",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_partial",
    "step_dir",
    "write_checkpoint",
]

CHECKPOINTS = "checkpoints"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"
METRICS = "metrics.jsonl"


def step_dir(out_dir: str | Path, step: int) -> Path:
    """The directory of checkpoint ``step`` under ``out_dir``."""
    return Path(out_dir) / CHECKPOINTS / f"step_{step:08d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``out_dir/checkpoints`` (or None)."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / TRAIN_STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def remove_partial(out_dir: str | Path) -> None:
    """Delete checkpoint directories a crash left half-written."""
    for stale in (Path(out_dir) / CHECKPOINTS).glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_checkpoint(out_dir: str | Path, step: int, policy: PandaPolicy,
                     opt: torch.optim.Optimizer, settings: PandaSettings, fingerprint: str,
                     record: dict | None) -> Path:
    """Atomically write checkpoint ``step`` (temp dir + rename) and prune old ones (keeping
    ``settings.keep_checkpoints``; 0 = all). Returns its directory."""
    final = step_dir(out_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_step_{step:08d}_", dir=final.parent))
    meta = {"kind": "panda-policy", "step": step, "settings": settings.to_dict(),
            "record": record}
    save_policy(tmp, policy, extra=meta)
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    from safetensors.torch import save_file

    save_file(tensors, str(tmp / OPTIMIZER))
    train_state = {
        "step": step,
        "settings": settings.to_dict(),
        "data_fingerprint": fingerprint,
        "optimizer": {"type": type(opt).__name__, "param_groups": state["param_groups"],
                      "scalars": scalars},
        "rng": {"scheme": "meta-step k, task j: step_generator(seed, k * tasks_per_step + j)",
                "seed": settings.seed},
        "record": record,
    }
    (tmp / TRAIN_STATE).write_text(json.dumps(train_state, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if settings.keep_checkpoints > 0:
        done = sorted((p for p in final.parent.glob("step_*") if (p / TRAIN_STATE).is_file()),
                      key=lambda p: int(p.name.split("_")[1]))
        for old in done[: -settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, policy: PandaPolicy, opt: torch.optim.Optimizer) -> int:
    """Restore policy weights, optimiser state and torch RNG state from checkpoint ``path``;
    returns its step."""
    from safetensors.torch import load_file

    path = Path(path)
    train_state = json.loads((path / TRAIN_STATE).read_text())
    policy.load_state_dict(load_file(str(path / POLICY_WEIGHTS)))
    tensors = load_file(str(path / OPTIMIZER))
    device = next(policy.parameters()).device
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    for idx, extra in train_state["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    groups = train_state["optimizer"]["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    return int(train_state["step"])


def check_resumable(path: str | Path, settings: PandaSettings, fingerprint: str) -> int:
    """The step of checkpoint ``path`` after checking it can continue a run with ``settings``
    on the D0 of ``fingerprint`` (``ValueError`` naming what differs)."""
    path = Path(path)
    train_state = json.loads((path / TRAIN_STATE).read_text())
    saved = PandaSettings.from_dict(train_state["settings"]).core()
    diff = {k: (saved[k], v) for k, v in settings.core().items() if saved.get(k) != v}
    if diff:
        raise ValueError(f"cannot resume from {path}: settings differ (saved, now): {diff}; "
                         "use another out_dir or resume=False")
    if train_state["data_fingerprint"] != fingerprint:
        raise ValueError(f"cannot resume from {path}: D0 differs from the checkpoint's "
                         "(data fingerprint); use another out_dir or resume=False")
    step = int(train_state["step"])
    if step > settings.steps:
        raise ValueError(f"checkpoint {path} is at step {step} > steps={settings.steps}")
    return step


def export_policy(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Copy the checkpoint's policy files to ``out_dir`` (atomic per file); returns it."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    for name in (POLICY_WEIGHTS, POLICY_META):
        tmp = out_dir / f".{name}.tmp"
        shutil.copyfile(checkpoint / name, tmp)
        os.replace(tmp, out_dir / name)
    return out_dir
