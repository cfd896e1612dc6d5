"""Ray Train glue: one labelling round's training as a ``TorchTrainer`` run.

``num_workers: 0`` runs the loop in the driver process (Ray Train's local mode, no worker
start-up cost); ``num_workers: N`` runs a DDP worker group (gloo on CPU, nccl on GPU, chosen by
Ray Train from ``use_gpu``). A round starts from the weights it is given (``init_state``): the
campaign passes the initial weights every round (the BALD-fairness paper resets the weights after
each labelling step) or, with ``training.warm_start``, the previous round's trained weights
(FRAL's fine-tuning; :mod:`rayfal.campaign.warm_start`). The optimiser (``training.optimizer``,
``schedule``, ``grad_clip``: :mod:`rayfal.training.loop`) starts afresh every round. The trained
weights come back as a Ray Train checkpoint holding ``model.safetensors`` + ``model.json``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from rayfal.config import TrainingConfig
from rayfal.data.schema import to_model_input
from rayfal.models.checkpoint import model_from_spec, save_checkpoint, state_dict_cpu
from rayfal.training.loop import LoopSettings, train_model
from rayfal.training.modes import make_loss


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; runs on every worker (or in the driver in local mode)."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["threads"])))
    device = ray.train.torch.get_device()

    data = ray.get(config["data_ref"])
    tensors = {
        "x": torch.from_numpy(to_model_input(data["x"], tuple(config["spec"]["input_shape"]))),
        "y": torch.from_numpy(np.array(data["y"], dtype=np.int64)),
        "group": torch.from_numpy(np.array(data["group"], dtype=np.int64)),
    }
    model = model_from_spec(config["spec"])
    model.load_state_dict(load_safetensors(ray.get(config["init_ref"])))
    if config["spec"].get("freeze_trunk"):  # model.freeze_trunk: before DDP wraps the model
        from rayfal.models.pretrain import freeze_trunk

        freeze_trunk(model)
    model = ray.train.torch.prepare_model(model) if world > 1 else model.to(device)
    loss_fn = make_loss(config["mode"], **config.get("mode_params", {}))
    t0 = time.perf_counter()
    logs = train_model(
        model, tensors, loss_fn, LoopSettings(**config["loop"]),
        rank=rank, world_size=world, device=device,
    )
    logs["train_compute_seconds"] = time.perf_counter() - t0
    logs["world_size"] = float(world)
    node = ray.get_runtime_context().get_node_id()
    nodes = [node] * world
    if world > 1:
        import torch.distributed as dist

        dist.all_gather_object(nodes, node)
    logs["train_nodes"] = ",".join(sorted(set(nodes)))
    if rank == 0:
        # In local mode (num_workers=0) Ray Train keeps the checkpoint where it is, so the
        # driver copies and removes it; a worker group persists it to storage_path itself.
        tmp = tempfile.mkdtemp(prefix="rayfal-ckpt-")
        save_checkpoint(tmp, state_dict_cpu(model), config["spec"], {"train_logs": logs})
        ray.train.report(logs, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if not config["local_mode"]:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        ray.train.report(logs, checkpoint=None)


def fit_round(
    *,
    data: dict[str, np.ndarray],
    spec: dict,
    init_state: bytes,
    training: TrainingConfig,
    seed: int,
    out_dir: Path,
    storage_path: Path,
    run_name: str,
) -> dict[str, float]:
    """Train one round on Ray Train and copy its checkpoint to ``out_dir``; returns the logs."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop = LoopSettings(
        epochs=training.epochs,
        min_steps=training.min_steps,
        batch_size=training.batch_size,
        lr=training.lr,
        weight_decay=training.weight_decay,
        seed=seed,
        optimizer=training.optimizer,
        momentum=training.momentum,
        schedule=training.schedule,
        warmup_frac=training.warmup_frac,
        grad_clip=training.grad_clip,
    )
    workers = training.num_workers
    config = {
        "data_ref": ray.put(data),
        "init_ref": ray.put(init_state),
        "spec": spec,
        "mode": training.mode,
        "mode_params": dict(training.mode_params),
        "loop": loop.__dict__,
        "local_mode": workers == 0,
        "threads": training.cpus_per_worker if workers else torch.get_num_threads(),
    }
    scaling = ScalingConfig(
        num_workers=workers,
        use_gpu=training.use_gpu,
        resources_per_worker=None if workers == 0 else {"CPU": training.cpus_per_worker},
        placement_strategy=training.placement_strategy,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage_path.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name} returned no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as ckpt_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "model.json"):
            shutil.copyfile(Path(ckpt_dir) / name, out_dir / name)
        local_copy = workers == 0 and Path(ckpt_dir).name.startswith("rayfal-ckpt-")
    if local_copy:
        shutil.rmtree(result.checkpoint.path, ignore_errors=True)
    shutil.rmtree(storage_path / run_name, ignore_errors=True)
    return dict(result.metrics or {})
