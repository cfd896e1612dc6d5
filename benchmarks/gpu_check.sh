#!/usr/bin/env bash
# GPU check: runs rayfal's GPU paths once on one GPU and prints their throughput.
#
#   1. train   Ray Train training with training.use_gpu (1 GPU worker)   -> samples/s
#   2. score   BALD pool scoring on a GPU actor (scoring.gpus_per_actor)  -> rows/s
#              (+ the in-process MC-dropout kernel on the GPU)
#   3. jin     JIN's two-pass scoring on a GPU actor (PGD on M_R)         -> rows/s
#   4. pgd     evaluate_robust in-process: clean + PGD-10 predictions on the model's device
#
# Settings come from jobs/gpu_quickstart.yaml (model, training, scoring), with a 50,000-row
# pool so that scoring throughput is measurable; the whole check is sized to finish in about
# 2 minutes on one GPU (an estimate: not yet run on a GPU; the CPU dry run takes ~1 min on 2
# loaded cores) and is killed after GPU_CHECK_TIMEOUT_S (default 290 s).
#
# Usage: benchmarks/gpu_check.sh [--cpu-dry-run] [--out DIR]
#   --cpu-dry-run  the same code paths on the CPU with tiny sizes and use_gpu off: proves the
#                  script runs (the test suite uses it), measures nothing about GPUs
#   --out DIR      keep the data, checkpoint and gpu_check.json in DIR (default: a temp dir)
# Exit status: 0 ok; 2 no GPU (or bad usage), with a message saying so; 1 any other failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT_S:-290}" "$PY" - "$@" <<'PYEOF'
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh")
ap.add_argument("--cpu-dry-run", action="store_true",
                help="run the same paths on the CPU with tiny sizes (no GPU measured)")
ap.add_argument("--out", help="keep outputs in this folder")
args = ap.parse_args(sys.argv[1:])
DRY = args.cpu_dry_run
T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402


def fail(code: int, msg: str) -> None:
    print(f"gpu_check: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


if not DRY and not torch.cuda.is_available():
    fail(2, "no GPU: torch.cuda.is_available() is False (torch "
         f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
         f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). "
         "This check needs one NVIDIA GPU and a CUDA build of torch; "
         "--cpu-dry-run runs the same code paths on the CPU without measuring a GPU.")

import ray  # noqa: E402
from safetensors.torch import save as save_safetensors  # noqa: E402

from rayfal.attacks import AttackSpec  # noqa: E402
from rayfal.campaign.context import read_eval_set  # noqa: E402
from rayfal.config import load_job  # noqa: E402
from rayfal.data import schema as S  # noqa: E402
from rayfal.data.sources import open_dataset  # noqa: E402
from rayfal.evaluation import evaluate_robust  # noqa: E402
from rayfal.models.checkpoint import build_from_config, load_checkpoint  # noqa: E402
from rayfal.models.predict import mc_probs, model_device  # noqa: E402
from rayfal.ray_env import init_ray  # noqa: E402
from rayfal.scoring.per_row import score_pool  # noqa: E402
from rayfal.scoring.two_pass import score_pool_jin  # noqa: E402
from rayfal.training.distributed import fit_round  # noqa: E402

if DRY:
    sizes = dict(n_pool=400, n_test=100, n_train=100, pgd_steps=2, jin_steps=2, mc=2)
    overrides = ["training.use_gpu=false", "scoring.gpus_per_actor=0", "training.epochs=1",
                 "training.min_steps=4", "scoring.batch_size=100", "scoring.actors=1"]
else:
    sizes = dict(n_pool=50_000, n_test=2_000, n_train=2_000, pgd_steps=10, jin_steps=10, mc=20)
    overrides = ["training.epochs=10", "training.min_steps=0", "scoring.batch_size=1024"]
# the whole CNN from random weights (the quickstart's frozen pretrained trunk would leave
# only the head to train, which says little about a GPU)
overrides += ["model.pretrained=null", "model.freeze_trunk=false"]
overrides += [f"dataset.n_pool={sizes['n_pool']}", f"dataset.n_test={sizes['n_test']}",
              f"scoring.mc_samples={sizes['mc']}", "dataset.shard_rows=10000"]
cfg, _ = load_job("jobs/gpu_quickstart.yaml", overrides)
work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rayfal-gpu-check-"))
work.mkdir(parents=True, exist_ok=True)
rows_out: list[dict] = []


def report(path: str, what: str, n: float, seconds: float, note: str = "") -> None:
    rate = n / seconds if seconds > 0 else float("nan")
    rows_out.append({"path": path, "what": what, "n": n, "seconds": seconds, "per_s": rate,
                     "note": note})
    print(f"  {path:<6} {what:<44} {n:>9,.0f} in {seconds:7.2f} s = {rate:>11,.0f}/s  {note}",
          flush=True)


try:
    init_ray(num_cpus=2 if DRY else min(os.cpu_count() or 2, 8))
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if DRY:
        device, gpu_name = torch.device("cpu"), "none (CPU only, no GPU measured)"
    else:
        if gpus < 1:
            fail(2, f"no GPU: torch sees {torch.cuda.device_count()} but Ray detected "
                    f"{gpus:g} GPUs (check CUDA_VISIBLE_DEVICES)")
        device, gpu_name = torch.device("cuda"), torch.cuda.get_device_name(0)
    print(f"gpu_check{' (DRY RUN on CPU)' if DRY else ''}: GPU: {gpu_name}; torch "
          f"{torch.__version__} (CUDA {torch.version.cuda or 'none'}), Ray {ray.__version__}; "
          f"Ray sees {gpus:g} GPU(s); work dir {work}", flush=True)

    pool, test_split = open_dataset(cfg.dataset, work / "data")
    test = read_eval_set(test_split)
    num_classes = int(test.y.max()) + 1
    ids = np.sort(pool.row_ids())[: sizes["n_train"]]
    rows = pool.take(ids, [pool.feature_column, S.LABEL, S.GROUP])
    data = {"x": rows[pool.feature_column], "y": rows[S.LABEL].astype(np.int64),
            "group": rows[S.GROUP].astype(np.int64)}
    torch.manual_seed(0)
    init, spec = build_from_config(cfg.model, pool.input_shape, num_classes)
    init_state = save_safetensors({k: v.contiguous() for k, v in init.state_dict().items()})

    # 1. training on a Ray Train worker with use_gpu
    t = time.perf_counter()
    logs = fit_round(data=data, spec=spec, init_state=init_state, training=cfg.training,
                     seed=0, out_dir=work / "round", storage_path=work / "_ray_train",
                     run_name="gpu-check")
    wall = time.perf_counter() - t
    samples = float(logs["train_steps"]) * cfg.training.batch_size
    report("train", f"Ray Train, use_gpu={cfg.training.use_gpu}, {int(logs['world_size'])} "
                    "worker", samples, float(logs["train_compute_seconds"]),
           f"(samples; {wall:.1f} s with worker start-up)")
    weights = (work / "round" / "model.safetensors").read_bytes()

    # 2. BALD scoring on a GPU actor, then the same kernel in-process on the device
    res = score_pool(pool, strategy="bald", strategy_params={}, seed=0, round=0,
                     budget=cfg.al.query_size, labelled=ids, model=(spec, weights),
                     cfg=cfg.scoring, use_gpu=cfg.training.use_gpu, progress=False)
    report("score", f"BALD, Ray Data actor, gpus_per_actor={cfg.scoring.gpus_per_actor:g}",
           res.rows_scored, res.seconds, "(rows, incl. actor start-up)")
    model, _ = load_checkpoint(work / "round")
    model = model.to(device).eval()
    x_pool = torch.from_numpy(S.to_model_input(
        pool.take(np.sort(pool.row_ids())[: min(pool.num_rows, 20_000)],
                  [pool.feature_column])[pool.feature_column], pool.input_shape))
    mc_probs(model, x_pool[:256], mc_samples=sizes["mc"])  # warm-up (cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    mc_probs(model, x_pool, mc_samples=sizes["mc"], batch_size=cfg.scoring.batch_size)
    report("score", f"MC-dropout kernel in-process on {model_device(model).type}, "
                    f"T={sizes['mc']}", len(x_pool), time.perf_counter() - t, "(rows)")

    # 3. JIN's two-pass scoring: PGD on the robust model inside the GPU actor
    jin_params = {"eps": 8 / 255, "alpha": 2 / 255, "steps": sizes["jin_steps"],
                  "attack_loss": "kl"}
    res = score_pool_jin(pool, strategy="jin", strategy_params=jin_params, seed=0, round=0,
                         budget=cfg.al.query_size, labelled=ids, model_std=(spec, weights),
                         model_rob=(spec, weights), cfg=cfg.scoring,
                         use_gpu=cfg.training.use_gpu, progress=False)
    report("jin", f"JIN, PGD-{sizes['jin_steps']} in a Ray Data actor", res.rows_scored,
           res.seconds, "(rows, incl. actor start-up)")

    # 4. evaluation + PGD in-process on the model's device (test set kept on the CPU)
    attack = AttackSpec(eps=8 / 255, alpha=2 / 255, steps=sizes["pgd_steps"], loss="ce",
                        clamp=(0.0, 1.0))
    t = time.perf_counter()
    metrics = evaluate_robust(model, test.x, test.y, test.group, attack=attack,
                              row_keys=test.row_id, seed=0)
    report("pgd", f"evaluate_robust on {model_device(model).type}, PGD-{sizes['pgd_steps']}",
           len(test.y), time.perf_counter() - t,
           f"(rows; robust acc {metrics.get('robust_accuracy', float('nan')):.3f})")
    total = time.perf_counter() - T0
    print(f"gpu_check: OK in {total:.0f} s{' (DRY RUN on CPU, no GPU measured)' if DRY else ''}",
          flush=True)
    (work / "gpu_check.json").write_text(json.dumps(
        {"dry_run": DRY, "gpu": gpu_name, "torch": torch.__version__, "ray": ray.__version__,
         "total_seconds": total, "paths": rows_out}, indent=2))
except SystemExit:
    raise
except BaseException as exc:  # noqa: BLE001 - one clear line, then the traceback
    import traceback

    traceback.print_exc()
    fail(1, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
finally:
    ray.shutdown()
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
PYEOF
