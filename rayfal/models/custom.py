"""Users' own torch models, given by import path in the job file.

``model: {target: "my_pkg.nets:Net", kwargs: {...}}`` builds ``Net(input_shape, num_classes,
**kwargs)`` on the driver and on every Ray worker (the module must be importable there: an
installed package, or the job's working directory on a cluster).

* A :class:`~rayfal.models.mc_dropout.TwoStageModel` (``trunk`` + ``head``, every stochastic
  layer an :class:`~rayfal.models.mc_dropout.MCDropout` in the head, ``embedding_dim`` and
  ``num_classes`` set) is used as it is: MC-dropout sampling runs the trunk once per batch.
* Any other ``nn.Module`` that maps inputs to class logits is wrapped by :func:`wrap_model`:
  its ``nn.Dropout`` layers become MC-dropout (kept on at prediction time, same ``p``) and the
  whole network runs once per MC sample; the "embedding" used by coreset/BADGE/FairAL is then
  the flattened input.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rayfal.models.mc_dropout import MCDropout, TwoStageModel


def import_root(target: str) -> str | None:
    """The folder from which ``target``'s top-level package was imported here (``None`` when it
    cannot be imported or has no file). Recorded in the model spec, so that a Ray worker on the
    same machine or on a shared file system can import a module that is not installed."""
    module_name = str(target).partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    file = getattr(module, "__file__", None)
    if not file:
        return None
    root = Path(file).resolve().parent
    depth = module_name.count(".") + (1 if Path(file).name == "__init__.py" else 0)
    for _ in range(depth):
        root = root.parent
    return str(root)


def load_target(target: str, search_path: str | None = None) -> Callable[..., nn.Module]:
    """The callable named by ``"package.module:Attribute"`` (``ValueError`` naming what is
    wrong: the format, the module or the attribute). When the module is not importable and
    ``search_path`` (see :func:`import_root`) exists here, that folder is added to
    ``sys.path`` and the import retried."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError("model.target: expected 'package.module:Class'")
    if module_name == "__main__":
        raise ValueError("model.target: a class defined in __main__ (a script or notebook) "
                         "cannot be imported by Ray workers; put it in a module and name it "
                         "'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (any import failure is the user's to fix)
        if search_path and Path(search_path).is_dir() and search_path not in sys.path:
            sys.path.append(search_path)
            return load_target(target)
        raise ValueError(f"model.target: cannot import module '{module_name}': "
                         f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model.target: module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model.target: '{attr}' is not callable")
    return obj


class WrappedModel(TwoStageModel):
    """A plain classifier ``net`` as a :class:`TwoStageModel` (see :func:`wrap_model`)."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        _to_mc_dropout(net)
        self.trunk = nn.Flatten()
        self.head = nn.Sequential(nn.Unflatten(1, tuple(input_shape)), net)
        self.embedding_dim = int(torch.Size(input_shape).numel())
        self.num_classes = int(num_classes)


def _to_mc_dropout(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout) and not isinstance(child, MCDropout):
            setattr(module, name, MCDropout(child.p))
        else:
            _to_mc_dropout(child)


def wrap_model(net: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> TwoStageModel:
    """``net`` itself when it is a :class:`TwoStageModel`, else a :class:`WrappedModel`: its
    ``nn.Dropout`` layers become MC dropout and the whole net is the stochastic head."""
    if isinstance(net, TwoStageModel):
        return net
    if not isinstance(net, nn.Module):
        raise TypeError(f"model.target built a {type(net).__name__}, not a torch nn.Module")
    return WrappedModel(net, input_shape, num_classes)


def build_custom(target: str, input_shape: tuple[int, ...], num_classes: int, *,
                 search_path: str | None = None, **kwargs: Any) -> TwoStageModel:
    """``target(input_shape, num_classes, **kwargs)``, wrapped when needed (:func:`wrap_model`);
    ``search_path`` as for :func:`load_target`."""
    net = load_target(target, search_path)(tuple(input_shape), int(num_classes), **kwargs)
    return wrap_model(net, tuple(input_shape), num_classes)
