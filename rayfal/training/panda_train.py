"""PANDA meta-training (Sharaf et al. 2022, Algorithm 1) as a Ray Train job, resumable.

Entry point: :func:`train_policy` (stable signature; the ``panda`` acquisition strategy calls
it). The maths lives in :mod:`rayfal.acquisition.panda_meta` (no Ray); this module is the
edge: a ``TorchTrainer`` whose ``train_loop_per_worker`` builds the policy, pretrains its
Transformer on D0 (§3.3), then runs the meta-steps of :func:`~rayfal.acquisition.panda_meta.
meta_train` (forward step on the validation loss, approximate proximal step on the smoothed
constraint indicator), reporting metrics and writing checkpoints.

Layout of ``out_dir``::

    out_dir/policy.safetensors, policy.json      final policy (load_policy(out_dir))
    out_dir/metrics.jsonl                        one record per meta-step
    out_dir/checkpoints/step_00000050/           every ``checkpoint_every`` steps
        policy.safetensors, policy.json          load_policy-able
        optimizer.safetensors                    Adam state + torch RNG state
        train_state.json                         step, settings, optimiser groups, data hash

No pickle anywhere. Step 0 is the checkpoint right after pretraining.

Determinism and resume: the policy initialisation and pretraining are seeded by
``settings.seed``; the randomness of meta-step ``k`` (task split, Gumbel noise) is a pure
function of ``(seed, k)`` (:func:`~rayfal.acquisition.panda_meta.task_generator`); the
checkpoint holds the exact Adam state. Re-running :func:`train_policy` with the same data and
settings (``steps`` may grow) continues from the latest checkpoint and ends with the same
policy as an uninterrupted run (tested). Steps after the last checkpoint are recomputed.

Workers: ``num_workers=0`` runs the loop in the calling process (Ray Train local mode, tqdm
progress bar). ``num_workers=N`` runs a worker group (gloo on CPU, nccl with ``use_gpu``):
data parallel over the ``tasks_per_step`` meta-tasks of a step (worker ``r`` simulates tasks
``r, r + N, ...``), gradients all-reduced, every worker applies the same update, so the result
does not depend on ``N`` (up to float summation order); rank 0 writes checkpoints into
``out_dir`` (which must then be storage every worker's node can reach) and logs a line every
``report_every`` steps. ``tasks_per_step >= num_workers``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rayfal.acquisition.panda import (
    DISPARITIES,
    POLICY_META,
    POLICY_WEIGHTS,
    InnerConfig,
    PandaPolicy,
    save_policy,
)
from rayfal.acquisition.panda_meta import MetaData, meta_train, pretrain_encoder

__all__ = [
    "PandaSettings",
    "as_metadata",
    "latest_checkpoint",
    "train_loop_per_worker",
    "train_policy",
]

CHECKPOINTS = "checkpoints"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"
METRICS = "metrics.jsonl"

_DISPARITY_ALIASES = {
    "demographic_parity": "dp",
    "error_rate_balance": "eb",
    "equalized_odds": "eo",
}


@dataclass(frozen=True)
class PandaSettings:
    """Meta-hyperparameters of PANDA (the tunable ones first) and run bookkeeping.

    Policy (§3.3, §4.2): ``n_layers``, ``d_model``, ``n_heads``, ``dim_feedforward``,
    ``init_temperature`` (the Gumbel temperature's initial value; it is then learned).
    Pretraining on D0 (§3.3): ``pretrain_steps`` sets of ``pretrain_set_size`` items, Adam
    ``pretrain_lr``. Algorithm 1: ``steps`` meta-iterations, Adam ``lr`` (line 4),
    ``tasks_per_step`` tasks per iteration, each a reshuffle of D into a pool of ``pool_size``
    and a validation set of ``val_size`` (line 3), ``budget`` B picks per task; the
    constraint ``disparity < rho`` with ``disparity`` in ``dp`` (demographic parity), ``eb``
    (error-rate balance) or ``eo`` (equalised odds), Table 1; the proximal step (line 5):
    ``prox_steps`` gradient steps of size ``prox_lr`` with weight ``prox_weight`` on the
    smoothed indicator (``None`` = the meta step size ``lr``, literally line 5); the simulated
    learner A (lines 8-15): ``inner_steps`` gradient steps of size ``inner_lr`` (L2
    ``inner_l2``) of a linear classifier, on all B picks at once (``inner_mode="batch"``) or
    per pick as in lines 10-12 (``"sequential"``, B times longer), see ``InnerConfig``. ``train_encoder``: meta-train every parameter instead
    of the final layer + temperature (§3.3).

    Bookkeeping (may change between a run and its resume): ``steps``, ``checkpoint_every``,
    ``report_every``, ``keep_checkpoints`` (0 = keep all), ``threads`` (torch threads per
    worker; 0 = the process default in local mode, 1 per worker otherwise).
    """

    n_layers: int = 1
    d_model: int = 32
    n_heads: int = 4
    dim_feedforward: int = 64
    init_temperature: float = 1.0
    pretrain_steps: int = 200
    pretrain_set_size: int = 256
    pretrain_lr: float = 1e-3
    steps: int = 500
    lr: float = 1e-3
    tasks_per_step: int = 1
    pool_size: int = 1000
    val_size: int = 1000
    budget: int = 400
    rho: float = 0.04
    disparity: str = "dp"
    prox_steps: int = 10
    prox_lr: float = 0.5
    prox_weight: float | None = 1.0
    inner_steps: int = 5
    inner_lr: float = 1.0
    inner_l2: float = 0.0
    inner_mode: str = "batch"
    train_encoder: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    report_every: int = 10
    keep_checkpoints: int = 2
    threads: int = 0

    #: fields that may differ between a run and the run that resumes it
    BOOKKEEPING = ("steps", "checkpoint_every", "report_every", "keep_checkpoints", "threads")

    def __post_init__(self) -> None:
        object.__setattr__(self, "disparity",
                           _DISPARITY_ALIASES.get(self.disparity, self.disparity))
        if self.disparity not in DISPARITIES:
            raise ValueError(f"PandaSettings.disparity: unknown '{self.disparity}'; known: "
                             f"{', '.join([*DISPARITIES, *_DISPARITY_ALIASES])}")
        if not 1 <= self.budget <= self.pool_size:
            raise ValueError(f"PandaSettings: budget ({self.budget}) must be in 1..pool_size "
                             f"({self.pool_size})")
        InnerConfig(mode=self.inner_mode)  # validates the mode
        if self.d_model % self.n_heads:
            raise ValueError(f"PandaSettings: d_model ({self.d_model}) must be a multiple of "
                             f"n_heads ({self.n_heads})")
        for name in ("steps", "pretrain_steps", "prox_steps", "inner_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"PandaSettings.{name} must be >= 0")
        for name in ("checkpoint_every", "report_every", "tasks_per_step", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"PandaSettings.{name} must be >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PandaSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PANDA setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def core(self) -> dict[str, Any]:
        """The settings that determine the result (everything but :attr:`BOOKKEEPING`)."""
        return {k: v for k, v in asdict(self).items() if k not in self.BOOKKEEPING}

    def inner(self) -> InnerConfig:
        return InnerConfig(n_classes=2, steps=self.inner_steps, lr=self.inner_lr,
                           l2=self.inner_l2, mode=self.inner_mode)


def as_metadata(data: Any) -> MetaData:
    """D0 as :class:`MetaData`: a ``MetaData``, a ``(x, y, group)`` tuple, a mapping with keys
    ``x``, ``y``, ``group``, or the path of an ``.npz`` file holding those arrays."""
    if isinstance(data, MetaData):
        return data
    if isinstance(data, str | Path):
        path = Path(data)
        if path.suffix != ".npz" or not path.is_file():
            raise FileNotFoundError(f"PANDA D0: expected an .npz file with x, y, group: {path}")
        with np.load(path, allow_pickle=False) as z:
            missing = {"x", "y", "group"} - set(z.files)
            if missing:
                raise KeyError(f"{path} lacks array(s) {sorted(missing)}")
            return MetaData.from_arrays(z["x"], z["y"], z["group"])
    if isinstance(data, dict):
        missing = {"x", "y", "group"} - set(data)
        if missing:
            raise KeyError(f"PANDA D0 mapping lacks key(s) {sorted(missing)}")
        return MetaData.from_arrays(data["x"], data["y"], data["group"])
    if isinstance(data, tuple | list) and len(data) == 3:
        return MetaData.from_arrays(*data)
    raise TypeError(f"PANDA D0: cannot use {type(data).__name__} (MetaData, (x, y, group), "
                    "mapping or .npz path)")


def _fingerprint(data: MetaData) -> str:
    h = hashlib.sha256()
    for t in (data.x, data.y, data.group):
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints


def _step_dir(root: Path, step: int) -> Path:
    return root / CHECKPOINTS / f"step_{step:08d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``out_dir/checkpoints`` (or None)."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / TRAIN_STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def _write_checkpoint(out_dir: Path, step: int, policy: PandaPolicy,
                      opt: torch.optim.Optimizer, settings: PandaSettings, fingerprint: str,
                      record: dict | None) -> Path:
    """Atomically write checkpoint ``step`` (temp dir + rename) and prune old ones."""
    final = _step_dir(out_dir, step)
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


def _load_checkpoint(path: Path, policy: PandaPolicy, opt: torch.optim.Optimizer) -> int:
    """Restore policy weights, optimiser state and torch RNG state; returns the step."""
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


def _check_resumable(path: Path, settings: PandaSettings, fingerprint: str) -> int:
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


# --------------------------------------------------------------------------- worker loop


def _build(settings: PandaSettings, in_dim: int, device: torch.device
           ) -> tuple[PandaPolicy, list[torch.nn.Parameter], torch.optim.Optimizer]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        policy = PandaPolicy(in_dim, d_model=settings.d_model, n_heads=settings.n_heads,
                             n_layers=settings.n_layers,
                             dim_feedforward=settings.dim_feedforward,
                             init_temperature=settings.init_temperature)
    policy.to(device)
    params = [*policy.parameters()] if settings.train_encoder else policy.head_parameters()
    return policy, params, torch.optim.Adam(params, lr=settings.lr)


def _torch_allreduce(t: torch.Tensor, op: str) -> torch.Tensor:
    import torch.distributed as dist

    t = t.detach().contiguous().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (every worker, or the driver in local mode): build, pretrain or
    restore, meta-train, checkpoint. See the module docstring."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config["threads"]:
        torch.set_num_threads(int(config["threads"]))
    device = ray.train.torch.get_device()
    settings = PandaSettings.from_dict(config["settings"])
    out_dir = Path(config["out_dir"])
    arrays = config["data"] if config["local_mode"] else ray.get(config["data"])
    data = MetaData(*(torch.as_tensor(arrays[k]).to(device) for k in ("x", "y", "group")))
    fingerprint = config["fingerprint"]
    policy, params, opt = _build(settings, data.x.shape[1], device)

    # where to start: the driver's latest checkpoint, or Ray Train's (restart after a failure)
    start_path = Path(config["resume_from"]) if config["resume_from"] else None
    step = -1
    if start_path is not None:
        step = _check_resumable(start_path, settings, fingerprint)
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        with ray_ckpt.as_directory() as d:
            if _check_resumable(Path(d), settings, fingerprint) > step:
                step = _load_checkpoint(Path(d), policy, opt)
                start_path = None
    if start_path is not None:
        step = _load_checkpoint(start_path, policy, opt)

    def checkpoint(k: int, pol: PandaPolicy, optimizer: torch.optim.Optimizer,
                   record: dict | None) -> None:
        ckpt = None
        if rank == 0:
            path = _write_checkpoint(out_dir, k, pol, optimizer, settings, fingerprint, record)
            ckpt = ray.train.Checkpoint.from_directory(str(path))
        ray.train.report({"step": k, **(record or {})}, checkpoint=ckpt)  # a barrier

    if step < 0:  # fresh run: pretrain the Transformer on D0 (§3.3), checkpoint as step 0
        t0 = time.perf_counter()
        losses = pretrain_encoder(policy, data, steps=settings.pretrain_steps,
                                  set_size=settings.pretrain_set_size, lr=settings.pretrain_lr,
                                  seed=settings.seed) if settings.pretrain_steps else []
        if world > 1:
            import torch.distributed as dist

            with torch.no_grad():
                for p in policy.parameters():
                    dist.broadcast(p, src=0)
        step = 0
        checkpoint(0, policy, opt, {
            "pretrain_loss_first": losses[0] if losses else math.nan,
            "pretrain_loss_last": losses[-1] if losses else math.nan,
            "pretrain_seconds": time.perf_counter() - t0,
        })

    metrics_path = out_dir / METRICS
    if rank == 0:  # drop records of steps after the checkpoint we restart from
        kept = []
        if metrics_path.is_file():
            kept = [ln for ln in metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= step]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))
    t_start = time.perf_counter()

    def on_step(record: dict) -> None:
        k = int(record["step"])
        record["seconds"] = time.perf_counter() - t_start
        if rank == 0:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        is_ckpt = k % settings.checkpoint_every == 0 or k == settings.steps
        if k % settings.report_every == 0 and not is_ckpt:
            ray.train.report(dict(record))  # a barrier: every worker, same steps
        if rank == 0 and not config["progress_bar"] and k % settings.report_every == 0:
            print(f"[panda-train] step {k}/{settings.steps} loss {record['loss']:.4f} "
                  f"disparity {record['disparity']:.4f} "
                  f"temperature {record['temperature']:.3g}", flush=True)

    if step < settings.steps:
        meta_train(
            policy, data, budget=settings.budget, steps=settings.steps,
            pool_size=settings.pool_size, val_size=settings.val_size, rho=settings.rho,
            disparity=settings.disparity, inner=settings.inner(), lr=settings.lr,
            train_encoder=settings.train_encoder, prox_weight=settings.prox_weight,
            prox_steps=settings.prox_steps, prox_lr=settings.prox_lr, seed=settings.seed,
            tasks_per_step=settings.tasks_per_step, rank=rank, world_size=world,
            allreduce=_torch_allreduce if world > 1 else None, optimizer=opt,
            progress=config["progress_bar"] and rank == 0, checkpoint_fn=checkpoint,
            checkpoint_every=settings.checkpoint_every, on_step=on_step, start_step=step,
        )


# --------------------------------------------------------------------------- driver


def train_policy(
    data: Any,
    settings: PandaSettings | dict[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = True,
    num_workers: int = 0,
    use_gpu: bool = False,
    progress: bool = True,
) -> Path:
    """Meta-train a PANDA policy on D0 = ``data`` as a Ray Train job; returns ``out_dir``,
    a policy checkpoint directory for :func:`rayfal.acquisition.panda.load_policy`.

    ``data``: :class:`MetaData`, ``(x, y, group)`` arrays, a mapping with those keys or an
    ``.npz`` path (:func:`as_metadata`); features standardised by the caller (§4.2), binary
    labels, any group codes. ``settings``: :class:`PandaSettings` or a dict of its fields
    (``None`` = defaults). ``resume=True`` continues from the latest checkpoint in
    ``out_dir/checkpoints`` (same core settings and data required; ``steps`` may grow) and
    returns at once if it is already at ``settings.steps``; ``resume=False`` deletes earlier
    checkpoints and starts over. ``num_workers=0``: in-process (Ray Train local mode);
    ``>= 1``: a Ray Train worker group, data parallel over ``settings.tasks_per_step`` tasks
    (Ray must be running; ``out_dir`` reachable from the workers). ``progress``: tqdm bar in
    local mode, a log line every ``report_every`` steps from rank 0 otherwise.

    The final ``policy.json`` holds ``settings``, ``step`` and the last step's ``record``;
    ``out_dir/metrics.jsonl`` has every step's record.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if settings is None:
        settings = PandaSettings()
    elif isinstance(settings, dict):
        settings = PandaSettings.from_dict(settings)
    meta = as_metadata(data)
    if int(meta.y.min()) < 0 or int(meta.y.max()) > 1:
        raise ValueError("PANDA D0 labels must be binary 0/1 (the disparities of Table 1 use "
                         "the positive class 1)")
    if settings.pool_size + settings.val_size > len(meta):
        raise ValueError(f"D0 has {len(meta)} rows < pool_size + val_size "
                         f"({settings.pool_size} + {settings.val_size})")
    if num_workers > settings.tasks_per_step:
        raise ValueError(f"num_workers ({num_workers}) > tasks_per_step "
                         f"({settings.tasks_per_step}): a worker would have no task")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / CHECKPOINTS).glob(".tmp_step_*"):  # a checkpoint cut by a crash
        shutil.rmtree(stale, ignore_errors=True)
    fingerprint = _fingerprint(meta)

    resume_from = None
    if resume:
        resume_from = latest_checkpoint(out_dir)
        if resume_from is not None and \
                _check_resumable(resume_from, settings, fingerprint) == settings.steps:
            return _export(resume_from, out_dir)
    else:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        (out_dir / METRICS).unlink(missing_ok=True)

    local = num_workers == 0
    arrays = {"x": meta.x.numpy(), "y": meta.y.numpy(), "group": meta.group.numpy()}
    if not local:
        import ray

        arrays = ray.put(arrays)
    config = {
        "settings": settings.to_dict(),
        "out_dir": str(out_dir.resolve()),
        "data": arrays,
        "fingerprint": fingerprint,
        "resume_from": str(resume_from) if resume_from else None,
        "local_mode": local,
        "progress_bar": bool(progress and local),
        "threads": settings.threads or (0 if local else 1),
    }
    run_name = f"panda-train-{uuid.uuid4().hex[:8]}"
    storage = out_dir / "ray"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker=None if local else {"CPU": 1},
        ),
        run_config=RunConfig(
            name=run_name, storage_path=str(storage.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=0 if local else 2),
        ),
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"PANDA meta-training failed: {result.error}") from result.error
    shutil.rmtree(storage, ignore_errors=True)
    last = latest_checkpoint(out_dir)
    if last is None or _check_resumable(last, settings, fingerprint) != settings.steps:
        raise RuntimeError(f"PANDA meta-training ended without a checkpoint at step "
                           f"{settings.steps} in {out_dir / CHECKPOINTS}")
    return _export(last, out_dir)


def _export(checkpoint: Path, out_dir: Path) -> Path:
    """Copy the checkpoint's policy files to ``out_dir`` (atomic per file)."""
    for name in (POLICY_WEIGHTS, POLICY_META):
        tmp = out_dir / f".{name}.tmp"
        shutil.copyfile(checkpoint / name, tmp)
        os.replace(tmp, out_dir / name)
    return out_dir


# --------------------------------------------------------------------------- command line


def adult_meta_split(src_dir: str | Path, seed: int = 0) -> tuple[np.ndarray, ...]:
    """PANDA's D on UCI Adult: the meta-train half of :mod:`rayfal.data.sources.adult`'s split
    with ``seed`` (same rows, order and standardisation as the campaign's ``meta`` split)."""
    from rayfal.data.sources import adult

    src = Path(src_dir)
    rows, _ = adult.load_raw(src)
    x, y, g, names = adult.encode(rows, adult.read_categories(src / "adult.names"))
    data = adult.AdultData(x, y, g, names, seed)
    idx = np.sort(data.idx["meta"])
    return data.x[idx], data.y[idx], data.g[idx]


def run_cli(args: Any) -> int:
    """``rayfal panda-train``: ``--data adult`` (``--src-dir``, ``--data-seed``) or an ``.npz``
    with ``x``, ``y``, ``group``; ``--set FIELD=VALUE`` for :class:`PandaSettings` fields."""
    import yaml

    values: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got '{item}'")
        values[key.strip()] = yaml.safe_load(raw)
    settings = PandaSettings.from_dict(values)
    if args.data == "adult":
        src = args.src_dir or os.environ.get("RAYFAL_ADULT_DIR", "../shared/data/adult")
        data: Any = adult_meta_split(src, args.data_seed)
    else:
        data = as_metadata(args.data)
    if args.workers > 0:
        from rayfal.config import JobConfig
        from rayfal.driver import init_ray

        init_ray(JobConfig(), address=args.address)
    t0 = time.perf_counter()
    out = train_policy(data, settings, args.out, resume=not args.no_resume,
                       num_workers=args.workers, use_gpu=args.gpu,
                       progress=not args.no_progress)
    meta = json.loads((out / POLICY_META).read_text())
    print(f"PANDA policy at step {meta['step']} ({time.perf_counter() - t0:.0f} s) -> {out}")
    print(json.dumps(meta.get("record"), sort_keys=True))
    return 0
