"""``rayfal run | report | data`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

from rayfal.config import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    import pandas as pd

    from rayfal.config import expand_variants, load_job
    from rayfal.driver import run_job
    from rayfal.report import format_table1, table1, write_report

    cfg, resolved = load_job(args.job, args.set)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    frames, dirs = [], []
    for name, sub_cfg, sub_resolved in expand_variants(cfg, resolved):
        sub_dir = run_dir / name if name else run_dir
        if name:
            print(f"== variant {name} -> {sub_dir}")
        frames.append(run_job(sub_cfg, sub_resolved, sub_dir, resume=args.resume,
                              address=args.address, progress=not args.no_progress))
        dirs.append(sub_dir)
    records = pd.concat(frames, ignore_index=True)
    paths = write_report(dirs, run_dir / "report")
    print()
    print(format_table1(table1(records)))
    print(f"\n{len(records)} round records in {time.perf_counter() - t0:.0f} s -> {run_dir}")
    print("report:", ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from rayfal.tune.runner import run_tune

    out = run_tune(args.job, args.run_dir, overrides=args.set, resume=args.resume,
                   address=args.address, verbose=0 if args.no_progress else 1)
    print(f"{out['ran']} trial(s) run ({out['finished_before']} finished before) -> {out['run_dir']}")
    for name, path in out["paths"].items():
        print(f"{name}: {path}")
    table = out["paths"].get("pareto") or out["paths"].get("best")
    if table:
        print(Path(table).read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rayfal.report import format_table1, load_rounds, table1, write_report

    paths = write_report(args.run_dirs, args.out, at_frac=args.at_frac)
    print(format_table1(table1(load_rounds(args.run_dirs), at_frac=args.at_frac)))
    print("\nwrote:", ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_data_glyphs(args: argparse.Namespace) -> int:
    from rayfal.data.sources.glyphs import generate_glyphs

    manifest = generate_glyphs(
        args.out, scenario=args.scenario, n_pool=args.n_pool, n_test=args.n_test,
        seed=args.seed, image_size=args.image_size, shard_rows=args.shard_rows,
    )
    print(f"{args.out}: {manifest.get('n_pool')} pool rows, {manifest.get('n_test')} test rows")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from rayfal.config import JobConfig, ScoringConfig
    from rayfal.driver import init_ray
    from rayfal.scoring.score_job import score_to_parquet

    init_ray(JobConfig(), address=args.address)
    cfg = ScoringConfig(compute=args.compute, batch_size=args.batch_size,
                        actors=args.actors if args.actors else "auto")
    res = score_to_parquet(args.pool, args.checkpoint, args.out, strategy=args.strategy,
                           mc_samples=args.mc, top_k=args.top_k, seed=args.seed, cfg=cfg,
                           progress=not args.no_progress)
    print(f"{res.rows_scored} rows from {res.files_scored}/{res.files_total} shards in "
          f"{res.seconds:.1f} s ({res.rows_per_second:,.0f} rows/s) -> {res.out_dir}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from rayfal import submit

    job_id = submit.submit(args.job, args.address, overrides=args.set, run_dir=args.run_dir,
                           resume=args.resume, submission_id=args.submission_id)
    print(f"submitted {args.job} as {job_id} to {args.address}")
    if args.follow:
        final = submit.follow(args.address, job_id)
        print(f"{job_id}: {final}")
        return 0 if final == "SUCCEEDED" else 1
    return 0


def _cmd_panda_train(args: argparse.Namespace) -> int:
    from rayfal.training.panda_train import run_cli

    return run_cli(args)


def _cmd_job(args: argparse.Namespace) -> int:
    from rayfal import submit

    if args.command == "status":
        print(submit.status(args.address, args.job_id))
    elif args.command == "logs":
        if args.follow:
            final = submit.follow(args.address, args.job_id)
            print(f"{args.job_id}: {final}")
        else:
            print(submit.logs(args.address, args.job_id))
    else:
        print("stopped" if submit.stop(args.address, args.job_id) else "not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayfal", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job file (all campaigns x seeds)")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a job key, e.g. --set training.epochs=5 (repeatable)")
    run.add_argument("--run-dir", help="run directory (default runs/<job name>)")
    run.add_argument("--resume", action="store_true", help="continue from the last committed round")
    run.add_argument("--address", help="Ray address: auto, ray://HOST:10001 (default: local Ray)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(fn=_cmd_run)

    rep = sub.add_parser("report", help="tables and plots from run directories")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="output folder (default <first run dir>/report)")
    rep.add_argument("--at-frac", type=float, help="labelled fraction of the table (default: last)")
    rep.set_defaults(fn=_cmd_report)

    sm = sub.add_parser("submit", help="submit a job file to a Ray cluster's Jobs API")
    sm.add_argument("job")
    sm.add_argument("--address", required=True, help="Jobs API, e.g. http://HEAD:8265")
    sm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sm.add_argument("--run-dir", help="run directory on the cluster (shared storage)")
    sm.add_argument("--resume", action="store_true")
    sm.add_argument("--submission-id")
    sm.add_argument("--follow", action="store_true", help="stream logs until the job ends")
    sm.set_defaults(fn=_cmd_submit)
    for name, text in (("status", "job status"), ("logs", "job logs"), ("stop", "stop a job")):
        jp = sub.add_parser(name, help=text)
        jp.add_argument("job_id")
        jp.add_argument("--address", required=True, help="Jobs API, e.g. http://HEAD:8265")
        if name == "logs":
            jp.add_argument("--follow", action="store_true")
        jp.set_defaults(fn=_cmd_job)

    tn = sub.add_parser("tune", help="hyperparameter search (Ray Tune + Optuna) over a job's "
                                     "'tune:' section")
    tn.add_argument("job", help="job file (YAML) with a 'tune:' section")
    tn.add_argument("--run-dir", required=True, help="tuning run directory (study, trials, results)")
    tn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a job key, e.g. --set tune.num_samples=4 (repeatable)")
    tn.add_argument("--resume", action="store_true",
                    help="continue the search (finished trials are not re-run)")
    tn.add_argument("--address", help="Ray address: auto, ray://HOST:10001 (default: local Ray)")
    tn.add_argument("--no-progress", action="store_true", help="quiet Tune output")
    tn.set_defaults(fn=_cmd_tune)

    sc = sub.add_parser("score", help="score a Parquet pool with a checkpoint (exactly once)")
    sc.add_argument("--pool", required=True, help="Parquet glob or directory")
    sc.add_argument("--checkpoint", required=True, help="a round directory (model.safetensors)")
    sc.add_argument("--strategy", default="bald")
    sc.add_argument("--mc", type=int, default=20, help="MC-dropout samples")
    sc.add_argument("--top-k", type=int, default=0, help="also write topk.parquet")
    sc.add_argument("--out", required=True)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--batch-size", type=int, default=512)
    sc.add_argument("--actors", type=int, default=0, help="actor count (default: auto)")
    sc.add_argument("--compute", default="actors", choices=["actors", "tasks"])
    sc.add_argument("--address", help="Ray address (default: local Ray)")
    sc.add_argument("--no-progress", action="store_true")
    sc.set_defaults(fn=_cmd_score)

    pt = sub.add_parser("panda-train", help="meta-train a PANDA policy (Ray Train, resumable)")
    pt.add_argument("--data", required=True, help="'adult' or an .npz with x, y, group")
    pt.add_argument("--out", required=True, help="policy directory (checkpoints inside)")
    pt.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a PandaSettings field, e.g. --set steps=200 (repeatable)")
    pt.add_argument("--src-dir", help="raw Adult files (default $RAYFAL_ADULT_DIR or "
                                      "../shared/data/adult)")
    pt.add_argument("--data-seed", type=int, default=0, help="Adult split seed (as dataset.seed)")
    pt.add_argument("--workers", type=int, default=0, help="Ray Train workers (0 = in-process)")
    pt.add_argument("--gpu", action="store_true")
    pt.add_argument("--address", help="Ray address when --workers > 0 (default: local Ray)")
    pt.add_argument("--no-resume", action="store_true", help="start over (drop checkpoints)")
    pt.add_argument("--no-progress", action="store_true")
    pt.set_defaults(fn=_cmd_panda_train)

    data = sub.add_parser("data", help="generate data sets")
    dsub = data.add_subparsers(dest="dataset", required=True)
    gl = dsub.add_parser("glyphs", help="synthetic Synbols-like glyphs as Parquet shards")
    gl.add_argument("--out", required=True)
    gl.add_argument("--scenario", default="sensitive_attribute",
                    choices=["sensitive_attribute", "minority_group"])
    gl.add_argument("--n-pool", type=int, default=10_000)
    gl.add_argument("--n-test", type=int, default=2_000)
    gl.add_argument("--seed", type=int, default=0)
    gl.add_argument("--image-size", type=int, default=32)
    gl.add_argument("--shard-rows", type=int, default=50_000)
    gl.set_defaults(fn=_cmd_data_glyphs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"rayfal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
