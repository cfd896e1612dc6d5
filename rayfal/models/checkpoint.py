"""Model checkpoints as safetensors (weights) + JSON (architecture and metadata); never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

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
                      num_groups: int | None = None,
                      run_dir: str | os.PathLike[str] | None = None,
                      trunk_dir: str | os.PathLike[str] | None = None,
                      ) -> tuple[TwoStageModel, dict]:
    """The initial model of a job's ``model`` section and its :func:`model_spec`.

    Built-in models get ``dropout``/``hidden`` (and ``width`` for the CNN); a model given by
    ``target`` (import path) gets its own ``kwargs``. ``num_groups`` adds a group head
    (GRAD/GBA training modes).

    ``model.pretrained: glyph-trunk`` loads the pretrained trunk in ``trunk_dir`` (inside
    ``run_dir``; the campaign layer pretrains it, :mod:`rayfal.campaign.pretrain`) over the
    freshly built one; the spec then records it (``pretrained``: kind, hash, directory) and,
    with ``model.freeze_trunk``, ``freeze_trunk: true`` (training calls
    :func:`rayfal.models.pretrain.freeze_trunk`). Without ``pretrained`` nothing changes."""
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
        if name == "torchvision":
            kwargs["arch"] = mcfg.arch
    if num_groups is not None:
        kwargs["num_groups"] = int(num_groups)
    spec = model_spec(name, input_shape, num_classes, **kwargs)
    model = model_from_spec(spec)
    if name == "torchvision":  # weights from the user's file (driver only), frozen trunk
        from rayfal.models.pretrain import freeze_trunk
        from rayfal.models.torchvision_backbone import load_backbone_weights

        if mcfg.weights:
            load_backbone_weights(model, mcfg.weights, mcfg.arch)
            spec["backbone_weights"] = str(mcfg.weights)
        if mcfg.freeze_trunk:
            spec["freeze_trunk"] = True
            freeze_trunk(model)
    if getattr(mcfg, "pretrained", None) is None:
        return model, spec
    from rayfal.models.pretrain import freeze_trunk, load_trunk

    if run_dir is None or trunk_dir is None:
        raise ValueError(f"model.pretrained: {mcfg.pretrained} needs the run directory and the "
                         "pretrained trunk's directory (rayfal.campaign.pretrain."
                         "ensure_pretrained_trunk)")
    directory = Path(trunk_dir)
    meta = load_trunk(model, directory)
    spec["pretrained"] = {"kind": mcfg.pretrained, "hash": meta["hash"],
                          "dir": Path(directory).relative_to(run_dir).as_posix(),
                          "test_accuracy": meta["test_accuracy"]}
    if mcfg.freeze_trunk:
        spec["freeze_trunk"] = True
        freeze_trunk(model)
    return model, spec


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


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


#: leading bytes of formats a ``model.safetensors`` must not be (never unpickled)
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container (a pickle inside)


def _check_safetensors_bytes(data: bytes, path: Path) -> None:
    """``data`` is a safetensors file: an 8-byte little-endian header length, then a JSON
    header; a pickle or ``torch.save`` file is named as such and never loaded."""
    if data.startswith(_ZIP_MAGIC) or data[:2] in _PICKLE_MAGIC:
        raise CheckpointError(f"{path}: is a pickle (torch.save) file, not safetensors; rayfal "
                              "never loads pickles: save the weights with safetensors")
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n == 0 or 8 + n > len(data):
        raise CheckpointError(f"{path}: not a safetensors file (header length {n} for a file of "
                              f"{len(data)} bytes; truncated or another format)")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON; "
                              "corrupt or another format)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON "
                              "object)")


def read_checkpoint(directory: str | Path) -> tuple[dict, bytes]:
    """``(meta, weights bytes)`` of a checkpoint directory, checked without building the model:
    both files exist, ``model.json`` is a JSON object whose ``spec`` names a model
    (``name``, ``input_shape``, ``num_classes``), ``model.safetensors`` is safetensors (not a
    pickle). Raises ``FileNotFoundError`` / :class:`CheckpointError` naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint {directory} is not a directory" if
                                directory.exists() else f"checkpoint {directory} does not exist")
    for name in (WEIGHTS, META):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} has no {name}")
    meta_path = directory / META
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON (line {exc.lineno}, column "
                              f"{exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: cannot read: {exc}") from None
    spec = meta.get("spec") if isinstance(meta, dict) else None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{meta_path}: no 'spec' object (the model's architecture)")
    shape = spec.get("input_shape")
    if (not isinstance(spec.get("name"), str) or not isinstance(shape, list) or not shape
            or not all(isinstance(v, int) and v > 0 for v in shape)
            or not isinstance(spec.get("num_classes"), int) or spec["num_classes"] < 1
            or not isinstance(spec.get("kwargs", {}), dict)):
        raise CheckpointError(f"{meta_path}: 'spec' must have name (str), input_shape (positive "
                              f"ints), num_classes (int >= 1) and kwargs (mapping); found "
                              f"{json.dumps(spec)[:120]}")
    weights_path = directory / WEIGHTS
    try:
        weights = weights_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{weights_path}: cannot read: {exc}") from None
    _check_safetensors_bytes(weights, weights_path)
    return meta, weights


def model_from_checkpoint(meta: dict, weights: bytes, directory: str | Path,
                          device: str | torch.device = "cpu") -> TwoStageModel:
    """Build the model of ``meta['spec']`` and load ``weights`` into it (strict); a spec that
    builds no model or weights that do not fit it are a :class:`CheckpointError`."""
    from safetensors.torch import load as load_bytes

    directory = Path(directory)
    try:
        state = load_bytes(weights)
    except Exception as exc:  # noqa: BLE001  (safetensors' own error type)
        raise CheckpointError(f"{directory / WEIGHTS}: not a readable safetensors file "
                              f"({exc})") from None
    try:
        model = model_from_spec(meta["spec"])
    except Exception as exc:  # noqa: BLE001  (any builder error: a bad spec)
        raise CheckpointError(f"{directory / META}: its spec builds no model: "
                              f"{type(exc).__name__}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{directory / WEIGHTS}: the weights do not fit the model in "
                              f"{META}: {detail[:400]}") from None
    return model.to(device).eval()


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[TwoStageModel, dict]:
    """Rebuild the model from a checkpoint directory; returns ``(model in eval mode, meta)``.
    A missing file is a ``FileNotFoundError``, anything unreadable a :class:`CheckpointError`
    (both name the file); a pickle is never loaded."""
    meta, weights = read_checkpoint(directory)
    return model_from_checkpoint(meta, weights, directory, device), meta
