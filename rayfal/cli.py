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
    from rayfal.config import load_job
    from rayfal.driver import run_job
    from rayfal.report import format_table1, table1, write_report

    cfg, resolved = load_job(args.job, args.set)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    records = run_job(cfg, resolved, run_dir, resume=args.resume, address=args.address,
                      progress=not args.no_progress)
    paths = write_report([run_dir])
    print()
    print(format_table1(table1(records)))
    print(f"\n{len(records)} round records in {time.perf_counter() - t0:.0f} s -> {run_dir}")
    print("report:", ", ".join(str(p) for p in paths.values()))
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
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"rayfal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
