"""The ``glyph-trunk``: a CNN trunk pretrained on a glyph set disjoint from every campaign.

Branchaud-Charron et al. (2021) fine-tune an ImageNet VGG-16; no weights can be downloaded
here, so the honest equivalent is pretrained once, in the run directory: the job's
:class:`~rayfal.models.cnn.SmallCNN` (its ``width``/``hidden``/``dropout``) is trained as a
10-way classifier on :mod:`rayfal.data.sources.glyphs.pretrain` (other characters, fonts and
colours than any campaign scenario), with Ray Train (:func:`rayfal.training.distributed.fit_round`,
seeded, ``standard`` mode), and evaluated on a held-out split of that set. Its trunk is
written to ``RUN_DIR/pretrained/glyph-trunk-<hash>/`` as ``trunk.safetensors`` + ``trunk.json``
(settings, held-out accuracy, training logs; never pickle), beside the pretraining data
(``data/``) and the whole classifier's checkpoint (``classifier/``). ``<hash>`` is the sha256 of
:func:`pretrain_settings` (architecture, data settings, seed, steps): a second job with the same
settings reuses the directory without training.

``model.freeze_trunk`` marks the spec (``spec["freeze_trunk"] = True``); whoever trains a model
built from such a spec calls :func:`freeze_trunk` on it: the trunk's parameters stop requiring
gradients (the optimisers skip parameters without a gradient, so their weights and weight decay
stay untouched) and the trunk stays in eval mode (its batch-norm running statistics are not
updated either).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

PRETRAINED_DIR = "pretrained"
TRUNK_WEIGHTS = "trunk.safetensors"
TRUNK_META = "trunk.json"
KIND = "glyph-trunk"
_TRUNK_PREFIX = "trunk."

log = logging.getLogger("rayfal")


def pretrain_settings(mcfg: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Everything that determines the pretrained trunk's bytes (hashed into its directory)."""
    from rayfal.data.sources.glyphs.pretrain import pretrain_data_params

    p = mcfg.pretrain
    c, h, w = (int(v) for v in input_shape)
    if c != 3 or h != w:
        raise ValueError(f"model.pretrained: glyph-trunk needs square RGB images (the glyph "
                         f"generator's); the data's input shape is {tuple(input_shape)}")
    return {
        "kind": KIND,
        "architecture": {"name": "cnn", "input_shape": [c, h, w], "width": int(mcfg.width),
                         "hidden": int(mcfg.hidden), "dropout": float(mcfg.dropout)},
        "data": pretrain_data_params(p.n_rows, p.n_test, h, p.seed),
        "training": {"mode": "standard", "steps": int(p.steps), "batch_size": int(p.batch_size),
                     "lr": float(p.lr), "seed": int(p.seed), "optimizer": "adam"},
        "torch": torch.__version__.split("+")[0],
    }


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def trunk_dir(mcfg: Any, input_shape: tuple[int, ...], run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/pretrained/glyph-trunk-<hash>`` for these settings (may not exist yet)."""
    digest = settings_hash(pretrain_settings(mcfg, input_shape))
    return Path(run_dir) / PRETRAINED_DIR / f"{KIND}-{digest}"


def read_trunk(directory: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """``(trunk state dict, trunk.json)`` of a pretrained-trunk directory."""
    directory = Path(directory)
    try:  # safetensors never unpickles: a pickle or a truncated file is an error here
        weights = load_file(str(directory / TRUNK_WEIGHTS))
        meta = json.loads((directory / TRUNK_META).read_text())
    except Exception as exc:  # noqa: BLE001  (name the file, whatever is wrong with it)
        raise ValueError(f"{directory}: not a readable pretrained trunk "
                         f"({TRUNK_WEIGHTS} + {TRUNK_META}): {exc}") from None
    return weights, meta


def load_trunk(model: torch.nn.Module, directory: str | os.PathLike[str]) -> dict:
    """Load the pretrained trunk into ``model.trunk`` (strict: same architecture); returns
    the trunk's metadata (``trunk.json``)."""
    state, meta = read_trunk(directory)
    trunk = getattr(getattr(model, "module", model), "trunk", None)
    if trunk is None:
        raise ValueError(f"{type(model).__name__} has no trunk to load {directory} into")
    try:
        trunk.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{directory / TRUNK_WEIGHTS} does not fit the model's trunk: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    return meta


def _trunk_eval_hook(module: torch.nn.Module, args: Any) -> None:
    if module.training:
        module.eval()


def freeze_trunk(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze ``model.trunk`` in place: no gradients for its parameters (optimisers skip them)
    and eval mode at every forward (batch-norm statistics stay as loaded). Returns ``model``."""
    trunk = getattr(model, "module", model).trunk
    for param in trunk.parameters():
        param.requires_grad_(False)
    if not getattr(trunk, "_rayfal_frozen", False):
        trunk.register_forward_pre_hook(_trunk_eval_hook)
        trunk._rayfal_frozen = True
    trunk.eval()
    return model
