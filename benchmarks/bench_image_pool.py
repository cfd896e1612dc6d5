"""Scoring a pool of JPEG files at 224 px: rayfal (Ray Data) vs the loop a user writes by hand.

What is rendered (once, under ``--dir``, never in the repository): ``--n`` JPEGs of 224 x 224 px
(quality 90, ~10-20 kB each), each a capital letter A-J (the class, an ImageFolder tree
``DIR/images/<letter>/NNNNNN.jpg``) drawn with Pillow's default scalable font at a random size,
position and colour over a random two-colour gradient with pixel noise -- "glyphs at 224 px".

Both paths run the same model -- torchvision ResNet-18 (random init: nothing is downloaded) as a
frozen trunk under rayfal's MC-dropout head -- and the same BALD with T = ``--mc`` samples:

* **rayfal**: ``rayfal data index-images`` (a Parquet index with a ``uri`` column), then
  :func:`rayfal.scoring.per_row.score_pool`: Ray Data reads the index, the scoring actors read and
  decode the files batch by batch (Pillow: RGB, cover-resize to 224 + centre crop, [0, 1]),
  run the trunk once per row and the head T times (prefix caching).
* **by hand** (a careful user): ``torchvision.datasets.ImageFolder`` with ``Resize(224) +
  CenterCrop(224) + ToTensor()``, a ``DataLoader`` with ``--loader-workers`` worker processes,
  the trunk once per batch and the head T times on the cached features, BALD from the samples.
  The naive loop (T forward passes of the whole network) is timed on ``--naive-rows`` rows and
  reported as a rate.

It also times, single-threaded in this process, decoding (read + decode + resize) vs the model
(trunk + T heads) on one batch, and samples the resident memory (RSS) of this session's Ray
worker processes (scoring actors, read tasks) and of the DataLoader workers every 0.2 s.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_image_pool.py --n 2000 --dir /tmp/rayfal-bench-images

Prints a Markdown table and writes ``--json`` (default ``DIR/results.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from bench_fairal import cpu_model  # the script's directory is on sys.path

LETTERS = "ABCDEFGHIJ"


def render_pool(directory: Path, n: int, size: int, seed: int = 0) -> Path:
    """Write ``n`` glyph JPEGs at ``size`` px into ``directory/images/<letter>/`` (skipped when
    a manifest says they are there)."""
    from PIL import Image, ImageDraw, ImageFont

    images = directory / "images"
    manifest = directory / "manifest.json"
    want = {"n": n, "size": size, "seed": seed, "format": "jpeg-q90"}
    if manifest.is_file() and json.loads(manifest.read_text()) == want:
        return images
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    fonts = {s: ImageFont.load_default(size=s) for s in range(90, 181, 10)}
    for i in range(n):
        letter = LETTERS[i % len(LETTERS)]
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        grad = (c0 * (1 - yy) + c1 * yy) * np.ones((1, size, 1), np.float32)
        grad += rng.normal(0, 12, (size, size, 3))
        img = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        fsize = int(rng.choice(list(fonts)))
        xy = (int(rng.integers(0, size // 3)), int(rng.integers(0, size // 4)))
        draw.text(xy, letter, font=fonts[fsize], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        out = images / letter / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, quality=90)
    manifest.write_text(json.dumps(want))
    return images


class MemorySampler:
    """Peak RSS of this process's descendants, by role, sampled every ``interval`` s."""

    def __init__(self, ray_phase: bool, interval: float = 0.2) -> None:
        import psutil

        self.ray_phase = ray_phase  # Ray workers only; else the DataLoader's workers only
        self.me = psutil.Process()
        self.peaks: dict[str, float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def role(self, cmdline: str) -> str | None:
        if "ray::" not in cmdline:  # Ray is shut down when the DataLoader runs
            return None if self.ray_phase else "loader_worker"
        if not self.ray_phase:
            return None
        if "PoolScorer" in cmdline or "MapWorker" in cmdline or "MapBatches" in cmdline:
            return "scoring_actor"
        if "Read" in cmdline:
            return "read_task"
        if "IDLE" in cmdline:
            return None
        return "other_ray_worker"

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                kids = self.me.children(recursive=True)
            except psutil.Error:
                kids = []
            for p in kids:
                try:
                    role = self.role(" ".join(p.cmdline()))
                    if role:
                        rss = p.memory_info().rss / 2**20
                        self.peaks[role] = max(self.peaks.get(role, 0.0), rss)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build_model(size: int, seed: int):
    """ResNet-18 trunk (random init, frozen) + MC-dropout head, as a rayfal job builds it."""
    import torch

    from rayfal.config import load_job
    from rayfal.models.checkpoint import build_from_config

    torch.manual_seed(seed)
    cfg = load_job({"model": {"name": "torchvision", "arch": "resnet18", "freeze_trunk": True,
                              "hidden": 128, "dropout": 0.5}})[0]
    model, spec = build_from_config(cfg.model, (3, size, size), len(LETTERS))
    return model.eval(), spec


def time_decode_vs_model(uris: list[str], model, size: int, mc: int) -> dict[str, float]:
    """Single-thread seconds per row: read + decode + resize vs trunk + T heads."""
    import torch

    from rayfal.data.images import decode_uris
    from rayfal.models.predict import mc_probs

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x = decode_uris(uris, (3, size, size)).x
    t1 = time.perf_counter()
    mc_probs(model, torch.from_numpy(x), mc_samples=mc, generator_seed=0,
             row_keys=np.arange(len(uris)))
    t2 = time.perf_counter()
    return {"decode_s_per_row": (t1 - t0) / len(uris), "model_s_per_row": (t2 - t1) / len(uris)}


def by_hand(images: Path, model, size: int, mc: int, batch: int, workers: int,
            naive_rows: int) -> dict[str, float]:
    """ImageFolder + DataLoader + trunk once, head T times (BALD); plus the naive loop's rate."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from rayfal.acquisition import scores

    torch.set_num_threads(1)
    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                             transforms.ToTensor()])
    ds = datasets.ImageFolder(str(images), transform=tf)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            z = model.trunk(x)  # cached features: the trunk once
            logits = model.head(z.repeat(mc, 1)).reshape(mc, len(x), -1)
            probs = torch.softmax(logits, -1).permute(1, 2, 0).double().numpy()
            out.append(scores.bald(probs))
    seconds = time.perf_counter() - t0
    res = {"rows": len(ds), "seconds": seconds}
    if naive_rows:
        sub = torch.utils.data.Subset(ds, range(min(naive_rows, len(ds))))
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _ in DataLoader(sub, batch_size=batch, num_workers=0):
                xt = x.repeat(mc, 1, 1, 1)  # the whole network T times
                torch.softmax(model(xt), -1)
        res["naive_rows"] = len(sub)
        res["naive_seconds"] = time.perf_counter() - t0
    return res


def rayfal_scoring(index: str, model, spec: dict, mc: int, batch: int, on_error: str
                   ) -> dict[str, float]:
    from safetensors.torch import save

    from rayfal.config import ScoringConfig
    from rayfal.data.pool import Pool
    from rayfal.models.checkpoint import state_dict_cpu
    from rayfal.scoring.per_row import score_pool

    pool = Pool(index, on_error=on_error)
    weights = save(state_dict_cpu(model))
    cfg = ScoringConfig(compute="actors", mc_samples=mc, batch_size=batch)
    t0 = time.perf_counter()
    res = score_pool(pool, strategy="bald", strategy_params={}, seed=0, round=0, budget=100,
                     labelled=np.zeros(0, np.int64), model=(spec, weights), cfg=cfg,
                     progress=False)
    return {"rows": res.rows_scored, "seconds": time.perf_counter() - t0,
            "actors": res.workers, "scoring_seconds_reported": res.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/rayfal-bench-images", help="where the JPEGs go")
    ap.add_argument("--n", type=int, default=2000, help="images in the pool")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--mc", type=int, default=20, help="MC-dropout samples T")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--naive-rows", type=int, default=64, help="rows for the naive loop's rate")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import ray

    from rayfal.data.index_images import index_images

    directory = Path(args.dir)
    t0 = time.perf_counter()
    images = render_pool(directory, args.n, args.size)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx = index_images(str(images), directory / "index", image_size=args.size, progress=False)
    index_s = time.perf_counter() - t0
    model, spec = build_model(args.size, 0)
    uris = sorted(str(p) for p in images.rglob("*.jpg"))[:32]
    split = time_decode_vs_model(uris, model, args.size, args.mc)

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             object_store_memory=1_000_000_000, log_to_driver=False)
    try:
        with MemorySampler(ray_phase=True) as mem_ray:
            ours = rayfal_scoring(idx.pattern, model, spec, args.mc, args.batch_size, "fail")
    finally:
        ray.shutdown()
    with MemorySampler(ray_phase=False) as mem_hand:
        hand = by_hand(images, model, args.size, args.mc, args.batch_size, args.loader_workers,
                       args.naive_rows)

    load = os.getloadavg()
    per_row = split["decode_s_per_row"] + split["model_s_per_row"]
    result = {
        "n": args.n, "size": args.size, "mc": args.mc, "batch_size": args.batch_size,
        "num_cpus": args.num_cpus, "cpu": cpu_model(), "loadavg": load,
        "render_seconds": render_s, "index_seconds": index_s,
        "decode_share": split["decode_s_per_row"] / per_row, **split,
        "rayfal": ours, "by_hand": hand,
        "peak_rss_mib": {"rayfal": mem_ray.peaks, "by_hand": mem_hand.peaks},
    }
    out = Path(args.json) if args.json else directory / "results.json"
    out.write_text(json.dumps(result, indent=2))
    r_rate = ours["rows"] / ours["seconds"]
    h_rate = hand["rows"] / hand["seconds"]
    print(f"pool: {args.n} JPEGs at {args.size} px; BALD T={args.mc}, ResNet-18 frozen trunk; "
          f"{args.num_cpus} CPUs ({result['cpu']}); load {load[0]:.1f}")
    print("| path | rows | s | rows/s | rows/s per CPU | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| rayfal: Ray Data, {ours['actors']} scoring actor(s) | {ours['rows']} | "
          f"{ours['seconds']:.1f} | {r_rate:.1f} | {r_rate / args.num_cpus:.1f} | "
          f"{json.dumps({k: round(v) for k, v in mem_ray.peaks.items()})} |")
    print(f"| by hand: ImageFolder + DataLoader({args.loader_workers} worker), trunk once | "
          f"{hand['rows']} | {hand['seconds']:.1f} | {h_rate:.1f} | {h_rate / args.num_cpus:.1f} "
          f"| {json.dumps({k: round(v) for k, v in mem_hand.peaks.items()})} |")
    if hand.get("naive_rows"):
        n_rate = hand["naive_rows"] / hand["naive_seconds"]
        print(f"| by hand, naive: whole network T times ({hand['naive_rows']} rows) | "
              f"{hand['naive_rows']} | {hand['naive_seconds']:.1f} | {n_rate:.2f} | "
              f"{n_rate / args.num_cpus:.2f} | |")
    print(f"single thread per row: decode {1e3 * split['decode_s_per_row']:.1f} ms, model "
          f"{1e3 * split['model_s_per_row']:.1f} ms (decode share {result['decode_share']:.0%})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
