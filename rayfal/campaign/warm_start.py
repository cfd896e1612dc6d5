"""Which weights a round's training starts from: ``training.warm_start``.

* ``warm_start: false`` (the default; the BALD-fairness paper's protocol, "we reset the weights
  to their initial value" after each labelling step): every round starts from the campaign's
  initial weights.
* ``warm_start: true`` (FRAL, Wu et al. 2023, Algorithm 1 line 12 and Sec. "Label
  acquisition": "we fine-tune the model on the new annotated data by adversarial training"):
  round 0 starts from the initial weights, round ``r > 0`` from round ``r - 1``'s trained
  weights, read from the campaign's ``round_{r-1:03d}/model.safetensors``.

Only the weights carry over: the optimiser (Adam moments, SGD momentum, the learning-rate
schedule, a λ ramp) starts afresh every round (:mod:`rayfal.training.loop`).

``--resume`` reproduces an uninterrupted run exactly: round ``r`` runs only after round
``r - 1``'s record is written, and that record is written after round ``r - 1``'s checkpoint
was copied into its round directory, so the checkpoint a resumed round reads is the one the
uninterrupted run read (and an uninterrupted run reads it from disk too, not from memory). A
missing or foreign checkpoint is an error naming the file, never a silent fall-back to the
initial weights (that would change the run).
"""

from __future__ import annotations

import json
from pathlib import Path

from rayfal.models.checkpoint import WEIGHTS, read_checkpoint


def round_dir(campaign_dir: str | Path, r: int) -> Path:
    """A round's directory inside a campaign (``<campaign>/seed_<s>/round_NNN``)."""
    return Path(campaign_dir) / f"round_{r:03d}"


def round_init_state(campaign_dir: str | Path, r: int, init_state: bytes, *,
                     warm_start: bool, spec: dict, checkpoint: str = "") -> bytes:
    """The safetensors bytes round ``r``'s training starts from (module docstring).

    ``init_state`` is the campaign's initial state; ``spec`` the campaign's model spec, which
    the previous checkpoint must match. ``checkpoint`` names a sub-directory of the round
    directory holding another model of the round (e.g. ``"m_std"``: JIN's standard model), so
    that a second model can be warm-started the same way.
    """
    if not warm_start or r <= 0:
        return init_state
    prev = round_dir(campaign_dir, r - 1)
    if checkpoint:
        prev = prev / checkpoint
    try:
        meta, weights = read_checkpoint(prev)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"training.warm_start: round {r} starts from round {r - 1}'s trained weights, but "
            f"{exc}; restore {prev / WEIGHTS} or run the campaign again from scratch "
            "(warm_start: false retrains every round from the initial weights)") from None
    if _canonical(meta.get("spec")) != _canonical(spec):
        raise ValueError(
            f"training.warm_start: {prev} holds a model with spec {meta.get('spec')!r}, not "
            f"this campaign's {spec!r}; the run directory holds another job's state")
    return weights


def _canonical(spec) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


__all__ = ["round_dir", "round_init_state"]
