"""Model checkpoints as safetensors (weights) + JSON (architecture and metadata); never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rayfal.models import TwoStageModel, build_model

WEIGHTS = "model.safetensors"
META = "model.json"


def model_spec(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> dict:
    """The JSON-able description from which :func:`load_model` rebuilds the architecture."""
    return {
        "name": name,
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
        "kwargs": kwargs,
    }


def build_from_config(mcfg: Any, input_shape: tuple[int, ...], num_classes: int, *,
                      num_groups: int | None = None) -> tuple[TwoStageModel, dict]:
    """The initial model of a job's ``model`` section and its :func:`model_spec`.

    Built-in models get ``dropout``/``hidden`` (and ``width`` for the CNN); a model given by
    ``target`` (import path) gets its own ``kwargs``. ``num_groups`` adds a group head
    (GRAD/GBA training modes)."""
    if getattr(mcfg, "target", None):
        from rayfal.models.custom import import_root

        name = "custom"
        kwargs = {"target": mcfg.target, "search_path": import_root(mcfg.target),
                  **dict(mcfg.kwargs or {})}
    else:
        name = mcfg.name if mcfg.name != "auto" else ("cnn" if len(input_shape) == 3 else "mlp")
        kwargs = {"dropout": mcfg.dropout, "hidden": mcfg.hidden}
        if name == "cnn":
            kwargs["width"] = mcfg.width
    if num_groups is not None:
        kwargs["num_groups"] = int(num_groups)
    spec = model_spec(name, input_shape, num_classes, **kwargs)
    return model_from_spec(spec), spec


def model_from_spec(spec: dict) -> TwoStageModel:
    return build_model(
        spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("kwargs", {})
    )


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of a model's tensors (unwrapping DDP's ``module.`` prefix)."""
    inner = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous().clone() for k, v in inner.state_dict().items()}


def write_weights_and_meta(
    directory: str | Path,
    state: dict[str, torch.Tensor],
    meta: dict,
    *,
    weights_name: str = WEIGHTS,
    meta_name: str = META,
) -> Path:
    """Write safetensors weights + a JSON file into ``directory`` (temp dir, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        save_file(state, os.path.join(tmp, weights_name))
        Path(tmp, meta_name).write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(os.path.join(tmp, weights_name), directory / weights_name)
        os.replace(os.path.join(tmp, meta_name), directory / meta_name)
    return directory


def save_checkpoint(
    directory: str | Path,
    state: dict[str, torch.Tensor],
    spec: dict,
    extra: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` atomically (temp dir, then rename files)."""
    return write_weights_and_meta(directory, state, {"spec": spec, **(extra or {})})


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[TwoStageModel, dict]:
    """Rebuild the model from a checkpoint directory; returns ``(model in eval mode, meta)``."""
    directory = Path(directory)
    for name in (WEIGHTS, META):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} has no {name}")
    meta = json.loads((directory / META).read_text())
    model = model_from_spec(meta["spec"])
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=str(device)))
    return model.to(device).eval(), meta
