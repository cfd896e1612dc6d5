"""Pretraining the ``glyph-trunk`` for a campaign (``model.pretrained: glyph-trunk``).

The campaign layer runs it (data generation and a Ray Train job) before building a campaign's
initial model; :mod:`rayfal.models.pretrain` holds the model-side pieces (settings hash,
loading and freezing the trunk). See that module for the design.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayfal.models.pretrain import (
    _TRUNK_PREFIX,
    KIND,
    PRETRAINED_DIR,
    TRUNK_META,
    TRUNK_WEIGHTS,
    pretrain_settings,
    settings_hash,
)

log = logging.getLogger("rayfal")


def _is_complete(directory: Path, digest: str) -> bool:
    try:
        meta = json.loads((directory / TRUNK_META).read_text())
    except (OSError, ValueError):
        return False
    return (directory / TRUNK_WEIGHTS).is_file() and meta.get("hash") == digest


def ensure_pretrained_trunk(mcfg: Any, input_shape: tuple[int, ...],
                            run_dir: str | os.PathLike[str], *, num_workers: int | None = None
                            ) -> Path:
    """The directory of the pretrained trunk for ``mcfg`` (its ``width``/``hidden``/``dropout``
    and ``pretrain`` settings) and ``input_shape`` ``(C, H, W)``, pretraining it first unless a
    finished one with the same settings hash is in ``run_dir`` (a cache hit: no training).

    Built in a temporary sibling directory and renamed into place, so a crash leaves no
    half-written trunk and two concurrent builders agree (the same settings give the same
    bytes). Needs Ray (Ray Train) only on a cache miss. The caller's torch RNG state is kept."""
    settings = pretrain_settings(mcfg, input_shape)
    digest = settings_hash(settings)
    final = Path(run_dir) / PRETRAINED_DIR / f"{KIND}-{digest}"
    if _is_complete(final, digest):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            _pretrain_into(tmp, mcfg, settings, digest,
                           mcfg.pretrain.num_workers if num_workers is None else num_workers)
        if final.exists():  # an incomplete leftover or a concurrent identical build
            if _is_complete(final, digest):
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            shutil.rmtree(final)
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _pretrain_into(out: Path, mcfg: Any, settings: dict[str, Any], digest: str,
                   num_workers: int) -> None:
    """Write the data, train the classifier with Ray Train, evaluate it, save the trunk."""
    import ray
    from safetensors.torch import save as save_safetensors

    from rayfal.config import TrainingConfig
    from rayfal.data.schema import to_model_input
    from rayfal.data.sources.glyphs.pretrain import read_pretrain_split, write_pretrain_set
    from rayfal.models.checkpoint import (
        load_checkpoint,
        model_from_spec,
        model_spec,
        write_weights_and_meta,
    )
    from rayfal.models.predict import deterministic_probs
    from rayfal.training.distributed import fit_round

    p, arch, data_p = mcfg.pretrain, settings["architecture"], settings["data"]
    manifest = write_pretrain_set(out / "data", n_train=p.n_rows, n_test=p.n_test,
                                  image_size=arch["input_shape"][1], seed=p.seed)
    train = read_pretrain_split(out / "data", "train")
    test = read_pretrain_split(out / "data", "test")
    num_classes = len(data_p["chars"])
    spec = model_spec("cnn", tuple(arch["input_shape"]), num_classes, dropout=arch["dropout"],
                      hidden=arch["hidden"], width=arch["width"])
    torch.manual_seed(int(p.seed))
    init = model_from_spec(spec)
    init_state = save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()})
    training = TrainingConfig(epochs=1, min_steps=int(p.steps), batch_size=int(p.batch_size),
                              lr=float(p.lr), num_workers=int(num_workers))
    if not ray.is_initialized():
        from rayfal.ray_env import init_ray

        init_ray()
    log.info("pretraining the glyph trunk %s (%d rows, %d steps)", digest, p.n_rows, p.steps)
    logs = fit_round(data=train, spec=spec, init_state=init_state, training=training,
                     seed=int(p.seed), out_dir=out / "classifier",
                     storage_path=out / ".ray_train", run_name=f"pretrain-{digest}")
    shutil.rmtree(out / ".ray_train", ignore_errors=True)
    model, _ = load_checkpoint(out / "classifier")
    x = torch.from_numpy(to_model_input(test["x"], tuple(arch["input_shape"])))
    pred = np.asarray(deterministic_probs(model, x)).argmax(1)
    acc = float(np.mean(pred == test["y"]))
    per_class = {c: float(np.mean(pred[test["y"] == i] == i))
                 for i, c in enumerate(data_p["chars"]) if np.any(test["y"] == i)}
    trunk = {k[len(_TRUNK_PREFIX):]: v.detach().cpu().contiguous().clone()
             for k, v in model.state_dict().items() if k.startswith(_TRUNK_PREFIX)}
    meta = {
        "hash": digest,
        "settings": settings,
        "classifier_spec": spec,
        "test_accuracy": acc,
        "test_accuracy_per_class": per_class,
        "chance_accuracy": 1.0 / num_classes,
        "n_test": int(len(test["y"])),
        "train_logs": {k: v for k, v in logs.items() if isinstance(v, (int, float, str))},
        "data": {k: manifest[k] for k in ("chars", "fonts", "hues", "fonts_disjoint",
                                          "campaign_chars", "campaign_fonts", "campaign_hues",
                                          "hue_jitter")},
    }
    write_weights_and_meta(out, trunk, meta, weights_name=TRUNK_WEIGHTS, meta_name=TRUNK_META)
    log.info("glyph trunk %s: held-out accuracy %.3f (chance %.3f)", digest, acc,
             1.0 / num_classes)
