"""PANDA meta-training (Sharaf et al. 2022, Algorithm 1) as a Ray Train job, resumable.

Entry point: :func:`train_policy` (the campaign layer calls it before round 0 when a ``panda``
campaign has no ``policy`` checkpoint; ``rayfal panda-train`` calls it from the command line).
The maths lives in :mod:`rayfal.acquisition.panda.meta` (no Ray) and the checkpoint format in
:mod:`rayfal.acquisition.panda.checkpoint`; this module is the edge: a ``TorchTrainer`` whose
``train_loop_per_worker`` builds the policy, pretrains its Transformer on D0 (§3.3), then runs
the meta-steps of :func:`~rayfal.acquisition.panda.meta.meta_train` (forward step on the
validation loss, approximate proximal step on the smoothed constraint indicator), reporting
metrics and writing checkpoints. Ray is imported inside the functions only.

Step 0 is the checkpoint right after pretraining.

Determinism and resume: the policy initialisation and pretraining are seeded by
``settings.seed``; the randomness of meta-step ``k`` (task split, Gumbel noise) is a pure
function of ``(seed, k)`` (:func:`~rayfal.acquisition.panda.meta.task_generator`); the
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

import json
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from rayfal.acquisition.panda.checkpoint import (
    CHECKPOINTS,
    METRICS,
    check_resumable,
    export_policy,
    latest_checkpoint,
    load_checkpoint,
    remove_partial,
    write_checkpoint,
)
from rayfal.acquisition.panda.meta import (
    MetaData,
    as_metadata,
    data_fingerprint,
    meta_train,
    pretrain_encoder,
)
from rayfal.acquisition.panda.policy import PandaPolicy
from rayfal.acquisition.panda.settings import PandaSettings

__all__ = ["METRICS_CSV", "build_policy", "train_loop_per_worker", "train_policy",
           "write_metrics_csv"]


#: the meta-training log as a table (one row per meta-step), written next to ``metrics.jsonl``
METRICS_CSV = "meta_training.csv"


def write_metrics_csv(out_dir: str | Path) -> Path | None:
    """``out_dir/metrics.jsonl`` as ``out_dir/meta_training.csv`` (columns: the union of the
    records' keys, first-seen order); ``None`` when there is no log."""
    import csv

    src = Path(out_dir) / METRICS
    if not src.is_file():
        return None
    records = [json.loads(ln) for ln in src.read_text().splitlines() if ln.strip()]
    cols = list(dict.fromkeys(k for r in records for k in r))
    dst = Path(out_dir) / METRICS_CSV
    with dst.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(records)
    return dst


def build_policy(settings: PandaSettings, in_dim: int, device: torch.device | str = "cpu"
                 ) -> tuple[PandaPolicy, list[torch.nn.Parameter], torch.optim.Optimizer]:
    """The seeded initial policy of ``settings``, the parameters meta-training updates and
    their Adam optimiser (learning rate ``settings.lr``)."""
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
    import ray
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
    policy, _, opt = build_policy(settings, data.x.shape[1], device)

    # where to start: the driver's latest checkpoint, or Ray Train's (restart after a failure)
    start_path = Path(config["resume_from"]) if config["resume_from"] else None
    step = -1
    if start_path is not None:
        step = check_resumable(start_path, settings, fingerprint)
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        with ray_ckpt.as_directory() as d:
            if check_resumable(Path(d), settings, fingerprint) > step:
                step = load_checkpoint(Path(d), policy, opt)
                start_path = None
    if start_path is not None:
        step = load_checkpoint(start_path, policy, opt)

    def checkpoint(k: int, pol: PandaPolicy, optimizer: torch.optim.Optimizer,
                   record: dict | None) -> None:
        ckpt = None
        if rank == 0:
            path = write_checkpoint(out_dir, k, pol, optimizer, settings, fingerprint, record)
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
            d0_size=settings.d0_size, temperature_final=settings.temperature_final,
            sharpness=settings.sharpness,
        )


def train_policy(
    meta_xyg: Any,
    settings: PandaSettings | dict[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = True,
    num_workers: int = 0,
    progress: bool = False,
    use_gpu: bool = False,
) -> Path:
    """Meta-train a PANDA policy on D0 = ``meta_xyg`` as a Ray Train job; returns ``out_dir``,
    a policy checkpoint directory for :func:`~rayfal.acquisition.panda.policy.load_policy`.

    ``meta_xyg``: ``(x, y, group)`` arrays, a :class:`~rayfal.acquisition.panda.meta.MetaData`,
    a mapping with those keys or an ``.npz`` path (:func:`~rayfal.acquisition.panda.meta.
    as_metadata`); features standardised by the caller (§4.2), binary labels, any group codes.
    ``settings``: :class:`PandaSettings` or a dict of its fields (``None`` = defaults).
    ``resume=True`` continues from the latest checkpoint in ``out_dir/checkpoints`` (same core
    settings and data required; ``steps`` may grow) and returns at once if it is already at
    ``settings.steps``; ``resume=False`` deletes earlier checkpoints and starts over.
    ``num_workers=0``: in-process (Ray Train local mode); ``>= 1``: a Ray Train worker group,
    data parallel over ``settings.tasks_per_step`` tasks (starts a local Ray unless one is
    running; ``out_dir`` reachable from the workers). ``progress``: tqdm bar in local mode, a
    log line every ``report_every`` steps from rank 0 otherwise.

    The final ``policy.json`` holds ``settings``, ``step`` and the last step's ``record``;
    ``out_dir/metrics.jsonl`` has every step's record.
    """
    if settings is None:
        settings = PandaSettings()
    elif not isinstance(settings, PandaSettings):
        settings = PandaSettings.from_dict(settings)
    meta = as_metadata(meta_xyg)
    if int(meta.y.min()) < 0 or int(meta.y.max()) > 1:
        raise ValueError("PANDA D0 labels must be binary 0/1 (the disparities of Table 1 use "
                         "the positive class 1)")
    if settings.pool_size + settings.val_size > len(meta):
        raise ValueError(f"D0 has {len(meta)} rows < pool_size + val_size "
                         f"({settings.pool_size} + {settings.val_size})")
    if num_workers < 0 or num_workers > settings.tasks_per_step:
        raise ValueError(f"num_workers ({num_workers}) must be in 0..tasks_per_step "
                         f"({settings.tasks_per_step}): a worker would have no task")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial(out_dir)  # a checkpoint cut by a crash
    fingerprint = data_fingerprint(meta)

    resume_from = None
    if resume:
        resume_from = latest_checkpoint(out_dir)
        if resume_from is not None and \
                check_resumable(resume_from, settings, fingerprint) == settings.steps:
            return export_policy(resume_from, out_dir)
    else:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        (out_dir / METRICS).unlink(missing_ok=True)

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    local = num_workers == 0
    arrays: Any = {"x": meta.x.numpy(), "y": meta.y.numpy(), "group": meta.group.numpy()}
    if not local:
        import ray

        from rayfal.ray_env import init_ray

        init_ray()  # no-op when Ray is already running (a cluster, a campaign's Ray)
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
    write_metrics_csv(out_dir)
    last = latest_checkpoint(out_dir)
    if last is None or check_resumable(last, settings, fingerprint) != settings.steps:
        raise RuntimeError(f"PANDA meta-training ended without a checkpoint at step "
                           f"{settings.steps} in {out_dir / CHECKPOINTS}")
    return export_policy(last, out_dir)
