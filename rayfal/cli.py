"""rayfal command line: run, validate and tune job files; report; score; cluster jobs; data.

Every command that takes a job file checks it first ('rayfal validate' does only that): a bad
name, key, type or range ends the command with one 'rayfal: error: ...' line naming the dotted
key, and exit code 2, before any data is generated or Ray is started."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

from rayfal.config import ConfigError


def run_summary(records, baseline: str) -> str:
    """What ``rayfal run`` prints at the end: the Table-1-style table and, with several
    campaigns, the per-seed paired differences against ``baseline`` with 95% bootstrap CIs."""
    from rayfal.report import format_table1, table1
    from rayfal.report.paired import format_paired, paired_differences

    text = format_table1(table1(records))
    if records["campaign"].nunique() > 1:
        text += "\n" + format_paired(paired_differences(records, baseline=baseline),
                                     baseline=baseline)
    return text


def _cmd_run(args: argparse.Namespace) -> int:
    from rayfal.api import load_job, run
    job_path, run_dir = Path(args.job), args.run_dir
    if job_path.is_dir():  # rayfal run RUN_DIR --resume: the job saved in the run directory
        if not (job_path / "job.yaml").is_file():
            raise ConfigError(f"{job_path}: a directory without job.yaml; give a job file or a "
                              "run directory written by 'rayfal run'")
        if run_dir and Path(run_dir).resolve() != job_path.resolve():
            raise ConfigError(f"--run-dir {run_dir}: differs from the run directory {job_path}")
        run_dir, job_path = job_path, job_path / "job.yaml"
    job = load_job(job_path, args.set)
    t0 = time.perf_counter()
    result = run(job, run_dir, resume=args.resume, address=args.address,
                 progress=not args.no_progress, baseline=args.baseline,
                 accept_partial=args.accept_partial)
    if len(result.records):
        print()
        print(run_summary(result.records, args.baseline))
    print(f"\n{len(result.records)} round records in {time.perf_counter() - t0:.0f} s -> "
          f"{result.run_dir}")
    if result.report_dir is not None:
        print(f"report: {result.report_dir}")
    if result.awaiting:
        print(f"\n{len(result.awaiting)} campaign(s) wait for labels:")
        for w in result.awaiting:
            print(f"  {w['campaign']} seed {w['seed']}: {w['missing']} of {w['requested']} rows "
                  f"to label in {w['file'] or '(the labelling tool)'}")
        print("Fill in the 'label' column of each file, then:\n"
              f"  rayfal labels import {result.run_dir} FILE [--annotator NAME]\n"
              f"  rayfal run {result.run_dir} --resume\n"
              f"('rayfal labels status {result.run_dir}' shows what is left.)")
    return 0


def _print_import(res, run_dir) -> None:
    where = "the initial labelled set" if res.round < 0 else f"round {res.round}"
    print(f"{res.file}: {res.added} new label(s) for campaign {res.campaign} seed {res.seed}, "
          f"{where}; {res.labelled} of {res.labelled + res.remaining} rows labelled, "
          f"{res.remaining} remaining")
    if res.remaining == 0:
        print(f"the batch is complete: rayfal run {run_dir} --resume")


def _cmd_labels_import(args: argparse.Namespace) -> int:
    from rayfal.campaign.labels import import_label_studio, import_labels

    fn = import_label_studio if args.format == "label-studio" else import_labels
    _print_import(fn(args.run_dir, args.file, campaign=args.campaign, seed=args.seed,
                     annotator=args.annotator), args.run_dir)
    return 0


def _cmd_labels_sync(args: argparse.Namespace) -> int:
    from rayfal.campaign.labels import sync_labels

    results = sync_labels(args.run_dir, campaign=args.campaign, seed=args.seed)
    if not results:
        print(f"{args.run_dir}: no campaign waits for labels")
    for res in results:
        _print_import(res, args.run_dir)
    return 0


def _cmd_labels_export(args: argparse.Namespace) -> int:
    from rayfal.campaign.labels import export_label_studio

    out = export_label_studio(args.run_dir, args.out, campaign=args.campaign, seed=args.seed)
    print(f"wrote {out} (Label Studio tasks; import them in the project's Data Manager)")
    return 0


def _cmd_labels_status(args: argparse.Namespace) -> int:
    from rayfal.campaign.labels import labels_status

    table = labels_status(args.run_dir)
    if table.empty:
        print(f"{args.run_dir}: no campaign has started yet")
        return 0
    print(table.to_string(index=False, na_rep="-"))
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


def _cmd_validate(args: argparse.Namespace) -> int:
    from rayfal.campaign.schedule import check_schedule, known_pool_rows
    from rayfal.config import expand_variants, load_job

    cfg, resolved = load_job(args.job, args.set)
    subs = expand_variants(cfg, resolved, source=str(args.job))
    for _, sub, _ in subs:  # the schedule against the pool size known from the job file
        check_schedule(sub, known_pool_rows(sub.dataset), source=str(args.job))
    if cfg.tune:
        from rayfal.tune.space import validate_spec

        spec = validate_spec(cfg, resolved, source=str(args.job))
        tune_note = f", tune: {len(spec.space)} key(s) x {spec.num_samples} trial(s)"
    else:
        tune_note = ""
    variants = f" x {len(subs)} variants" if cfg.variants else ""
    t = cfg.training
    stop = f"{cfg.al.rounds} rounds" if cfg.al.rounds is not None else \
        f"up to {cfg.al.max_frac:g} of the pool"
    print(f"ok: {len(cfg.campaigns)} campaigns x {len(cfg.seeds)} seeds{variants}, "
          f"dataset {cfg.dataset.name}, training {t.mode}, {cfg.al.initial_labels} initial + "
          f"{cfg.al.query_size} per round, {stop}{tune_note}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from rayfal.config import job_schema

    print(json.dumps(job_schema(), indent=args.indent))
    return 0


def _type_name(annotation: object) -> str:
    """``int | None``, ``'dp' | 'eo'``, ``float | AlphaSchedule``: a parameter's type, short."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _params_lines(model: type, indent: str = "      ") -> list[str]:
    from pydantic_core import PydanticUndefined

    out = []
    for key, field in model.model_fields.items():
        default = "required" if field.default is PydanticUndefined and \
            field.default_factory is None else \
            f"default {field.get_default(call_default_factory=True)!r}"
        desc = f" — {field.description}" if field.description else ""
        out.append(f"{indent}{key}: {_type_name(field.annotation)} ({default}){desc}")
    return out or [f"{indent}(no parameters)"]


def _cmd_strategies(args: argparse.Namespace) -> int:
    import rayfal.acquisition  # noqa: F401  (registers every strategy)
    from rayfal.acquisition.base import STRATEGIES
    from rayfal.training import MODES, supported_compositions

    lines = ["strategies (campaigns[].strategy, parameters in campaigns[].params):"]
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        req = ", ".join(sorted(cls.requires)) or "-"
        lines.append(f"  {name}  [{cls.kind}; requires {req}]  {cls.summary}")
        lines += _params_lines(cls.Params)
    lines += ["", "training modes (training.mode, parameters in training.mode_params):"]
    for name in MODES.names():
        f = MODES.get(name)
        lines.append(f"  {name}  [{getattr(f, 'role', 'base')}]  {getattr(f, 'summary', '')}")
        params = getattr(f, "Params", None)
        if params is not None:
            lines += _params_lines(params)
    lines.append("  compositions (robust+fair, parameters of both parts): "
                 + ", ".join(supported_compositions()))
    print("\n".join(lines))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rayfal.report import format_table1, load_rounds, table1, write_report

    paths = write_report(args.run_dirs, args.out, at_frac=args.at_frac, baseline=args.baseline)
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


def _cmd_data_index_images(args: argparse.Namespace) -> int:
    from rayfal.data.index_images import index_images

    res = index_images(args.root, args.out, csv=args.csv, image_size=args.image_size,
                       channels=args.channels, namespace=args.namespace,
                       shard_rows=args.shard_rows, verify=args.verify)
    labels = (f"{len(res.classes)} classes from folders ({', '.join(res.classes[:8])}"
              f"{', ...' if len(res.classes) > 8 else ''})" if res.classes
              else "labels from the CSV" if res.labelled else "no labels")
    print(f"{args.out}: {res.rows} image files indexed, {labels}; dataset: "
          f"{{name: image_files, pool: '{res.pattern}', image_size: {args.image_size}}}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rayfal.campaign.rundir import run_dir_lock
    from rayfal.config import ScoringConfig
    from rayfal.config.errors import first_problem
    from rayfal.ray_env import init_ray
    from rayfal.scoring.score_job import check_score_args, score_to_parquet

    # every flag, the output folder, the pool and the checkpoint are checked before Ray starts
    check_score_args(args.out, strategy=args.strategy, mc_samples=args.mc, top_k=args.top_k)
    flags = {"batch_size": "--batch-size", "actors": "--actors",
             "cpus_per_actor": "--cpus-per-actor", "gpus_per_actor": "--gpus-per-actor"}
    if args.actors < 0:
        raise ValueError(f"--actors {args.actors}: must be >= 1, or 0 for auto")
    cpus: object = args.cpus_per_actor
    if cpus != "auto":
        try:
            cpus = float(cpus)
        except ValueError:
            raise ValueError(f"--cpus-per-actor {cpus!r}: must be a number > 0 or 'auto'") from None
    try:
        cfg = ScoringConfig(compute=args.compute, batch_size=args.batch_size,
                            actors=args.actors if args.actors else "auto",
                            cpus_per_actor=cpus, gpus_per_actor=args.gpus_per_actor,
                            mc_samples=args.mc)
    except ValidationError as exc:
        problem = first_problem(exc, ScoringConfig)
        key = str(problem.loc[0]) if problem.loc else ""
        value = {"batch_size": args.batch_size, "actors": args.actors,
                 "cpus_per_actor": args.cpus_per_actor,
                 "gpus_per_actor": args.gpus_per_actor}.get(key, "")
        raise ValueError(f"{flags.get(key, key)} {value}: {problem.why}") from None
    with run_dir_lock(args.out, "score", what="output folder", flag="--out"):  # one at a time
        res = score_to_parquet(args.pool, args.checkpoint, args.out, strategy=args.strategy,
                               mc_samples=args.mc, top_k=args.top_k, seed=args.seed, cfg=cfg,
                               progress=not args.no_progress,
                               ray_init=lambda: init_ray(args.address))
    print(f"{res.rows_scored} rows from {res.files_scored}/{res.files_total} shards in "
          f"{res.seconds:.1f} s ({res.rows_per_second:,.0f} rows/s) -> {res.out_dir}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from rayfal import submit

    job_id = submit.submit(args.job, args.address, overrides=args.set, run_dir=args.run_dir,
                           resume=args.resume, submission_id=args.submission_id,
                           token_for=args.token_for)
    print(f"submitted {args.job} as {job_id} to {args.address}")
    if args.follow:
        final = submit.follow(args.address, job_id, token_for=args.token_for)
        print(f"\n{job_id}: {final}")
        return 0 if final == "SUCCEEDED" else 1
    return 0


def _cmd_panda_train(args: argparse.Namespace) -> int:
    from rayfal.acquisition.panda.cli_entry import run_cli

    return run_cli(args)


def _cmd_job(args: argparse.Namespace) -> int:
    from rayfal import submit

    if args.command == "status":
        print(submit.status(args.address, args.job_id, token_for=args.token_for))
    elif args.command == "logs":
        if args.follow:
            final = submit.follow(args.address, args.job_id, token_for=args.token_for)
            print(f"\n{args.job_id}: {final}")
        else:
            print(submit.logs(args.address, args.job_id, token_for=args.token_for))
    else:
        stopped = submit.stop(args.address, args.job_id, token_for=args.token_for)
        print("stopped" if stopped else "not running")
    return 0


_SET_HELP = ("override a job key with a dotted path, the value parsed as YAML, e.g. "
             "--set training.epochs=5 --set campaigns.0.params.eps=0.03 (repeatable)")
_ADDRESS_HELP = "Ray address: auto, ray://HOST:10001 (default: an embedded local Ray)"
_JOBS_API_HELP = ("Ray Jobs API address, e.g. http://127.0.0.1:8265 (the head's dashboard "
                  "port through 'ray dashboard CLUSTER.yaml' or 'kubectl port-forward')")
_TOKEN_FOR_HELP = ("send the cluster token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                   "~/.ray/auth_token) to HOST[:PORT], which must be --address's host. Without "
                   "it the token goes only to loopback addresses, or to the addresses listed in "
                   "$RAYFAL_SUBMIT_CONFIG (default ~/.config/rayfal/clusters.yaml) when that "
                   "file exists; never to another host, and it is never printed")
_RUN_DIR_HELP = ("required: the run directory on storage every node mounts at the same path "
                 "(NFS, EFS, Filestore, Lustre), as an absolute path or a file:// URI; the "
                 "job's working dir is temporary and results written there are lost. Only "
                 "mounted shared filesystems are supported: object-store URIs (s3://, gs://) "
                 "are refused, because rayfal writes run directories with local file APIs "
                 "(SQLite label ledgers, checkpoints)")
_SUBMIT_DESCRIPTION = (
    "Submit a job file to a Ray cluster's Jobs API. The current directory is uploaded as the "
    "job's working_dir (without .venv, runs, data, Parquet files) and the cluster runs "
    "'python -m rayfal.cli run JOB --address auto --run-dir RUN_DIR'. RUN_DIR must be on "
    "shared storage mounted at the same path on every node (NFS, EFS, Filestore, Lustre); "
    "object-store URIs (s3://, gs://) are not supported, only mounted filesystems. The "
    "cluster token is sent only to loopback addresses, to --token-for HOST, or to the "
    "addresses listed in the config file (see --token-for); plain http:// to another host "
    "gets a warning.")


_BASELINE_HELP = ("campaign the report's paired differences are taken against (default uniform; "
                  "the first campaign when absent)")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    """``rayfal pretrain JOB``: pretrain (or find cached) the glyph-trunk of a job's ``model``
    section in its run directory, and print where it is and its held-out accuracy."""
    import json

    from rayfal.api import load_job
    from rayfal.campaign.pretrain import _is_complete, ensure_pretrained_trunk
    from rayfal.models.pretrain import (
        KIND,
        PRETRAINED_DIR,
        TRUNK_META,
        pretrain_settings,
        settings_hash,
    )
    from rayfal.ray_env import init_ray

    job = load_job(args.job, args.set)
    cfg = job.config
    mcfg = cfg.model
    if mcfg.pretrained is None:
        mcfg = mcfg.model_copy(update={"pretrained": KIND})
    size = args.image_size or getattr(cfg.dataset, "image_size", None)
    if size is None:
        raise ValueError(f"dataset {cfg.dataset.name!r} has no image_size: give --image-size")
    shape = (3, int(size), int(size))
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name
    settings = pretrain_settings(mcfg, shape)
    digest = settings_hash(settings)
    hit = _is_complete(run_dir / PRETRAINED_DIR / f"{KIND}-{digest}", digest)
    if not hit:
        init_ray(args.address)
    directory = ensure_pretrained_trunk(mcfg, shape, run_dir, num_workers=args.workers)
    meta = json.loads((directory / TRUNK_META).read_text())
    data = meta["data"]
    print(f"{directory}: {'cached' if hit else 'pretrained'} glyph trunk {digest}")
    print(f"  chars {' '.join(data['chars'])}; fonts {', '.join(data['fonts'])}; "
          f"hues {', '.join(str(h) for h in data['hues'])}")
    print(f"  held-out accuracy {meta['test_accuracy']:.3f} on {meta['n_test']} rows "
          f"(chance {meta['chance_accuracy']:.3f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayfal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a job file (all campaigns x seeds)",
                         description="Run every campaign (strategy x seed) of a job file and "
                                     "write the round records, checkpoints and a report.")
    run.add_argument("job", help="job file (YAML), or a run directory to --resume")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    run.add_argument("--run-dir", help="run directory (default runs/<job name>)")
    run.add_argument("--resume", action="store_true", help="continue from the last committed round")
    run.add_argument("--address", help=_ADDRESS_HELP)
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--baseline", default="uniform", help=_BASELINE_HELP)
    run.add_argument("--accept-partial", action="store_true",
                     help="with --resume: go on with the rows of a query batch labelled so far")
    run.set_defaults(fn=_cmd_run)

    va = sub.add_parser("validate", help="check a job file (names, keys, types, ranges, data "
                                         "files) without running it",
                        description="Check a job file as 'rayfal run' and 'rayfal tune' do, "
                                    "without generating data or starting Ray: prints 'ok: ...' "
                                    "or one 'rayfal: error: ...' line (exit code 2).")
    va.add_argument("job", help="job file (YAML)")
    va.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    va.set_defaults(fn=_cmd_validate)

    sch = sub.add_parser("schema", help="print the JSON Schema of job files",
                         description="Print the JSON Schema of job files (for editors: "
                                     "rayfal schema > job.schema.json).")
    sch.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    sch.set_defaults(fn=_cmd_schema)

    st = sub.add_parser("strategies", help="list the strategies and training modes with their "
                                           "parameters",
                        description="List every registered strategy (kind, requirements, "
                                    "parameters) and training mode (parameters, compositions).")
    st.set_defaults(fn=_cmd_strategies)

    lab = sub.add_parser("labels", help="labels given by people: import a labelled batch, "
                                        "show what waits for labels",
                         description="For jobs whose oracle is people (oracle.kind: files): "
                                     "each query batch is written to RUN_DIR/queries/; fill in "
                                     "its 'label' column, import it, then 'rayfal run RUN_DIR "
                                     "--resume'.")
    lab_sub = lab.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    li = lab_sub.add_parser("import", help="check a label file (CSV or Parquet with row_id, "
                                           "label) and add it to the campaign's ledger")
    li.add_argument("run_dir", metavar="RUN_DIR", help="run directory of the waiting campaign")
    li.add_argument("file", metavar="FILE", help="CSV or Parquet with columns row_id, label")
    li.add_argument("--campaign", help="campaign name (needed when several wait)")
    li.add_argument("--seed", type=int, help="campaign seed (needed when several wait)")
    li.add_argument("--annotator", help="who labelled (default: the user name; for a Label "
                                        "Studio export: its annotators)")
    li.add_argument("--format", choices=["table", "label-studio"], default="table",
                    help="table: CSV/Parquet with row_id, label (default); label-studio: a "
                         "Label Studio JSON export")
    li.set_defaults(fn=_cmd_labels_import)
    lsync = lab_sub.add_parser("sync", help="pull finished annotations from Label Studio "
                                            "(oracle.kind: label_studio) into the ledgers")
    lsync.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    lsync.add_argument("--campaign", help="only this campaign")
    lsync.add_argument("--seed", type=int, help="only this seed")
    lsync.set_defaults(fn=_cmd_labels_sync)
    lex = lab_sub.add_parser("export", help="the waiting batch as a file for another tool")
    lex.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    lex.add_argument("--format", choices=["label-studio"], default="label-studio",
                     help="label-studio: tasks JSON (the only format so far)")
    lex.add_argument("--out", required=True, help="output file (.json)")
    lex.add_argument("--campaign", help="campaign name (needed when several wait)")
    lex.add_argument("--seed", type=int, help="campaign seed (needed when several wait)")
    lex.set_defaults(fn=_cmd_labels_export)
    ls = lab_sub.add_parser("status", help="each campaign: rounds done, labels, what it waits for")
    ls.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    ls.set_defaults(fn=_cmd_labels_status)

    rep = sub.add_parser("report", help="tables and plots from run directories")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                     help="run directories written by 'rayfal run'")
    rep.add_argument("--out", help="output folder (default <first run dir>/report)")
    rep.add_argument("--at-frac", type=float, help="labelled fraction of the table (default: last)")
    rep.add_argument("--baseline", default="uniform", help=_BASELINE_HELP)
    rep.set_defaults(fn=_cmd_report)

    sm = sub.add_parser("submit", help="submit a job file to a Ray cluster's Jobs API",
                        description=_SUBMIT_DESCRIPTION)
    sm.add_argument("job", help="job file (YAML), relative to the current directory (uploaded "
                                "as the job's working dir)")
    sm.add_argument("--address", required=True, help=_JOBS_API_HELP)
    sm.add_argument("--run-dir", required=True, metavar="RUN_DIR", help=_RUN_DIR_HELP)
    sm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    sm.add_argument("--resume", action="store_true",
                    help="continue the run directory's last committed round")
    sm.add_argument("--submission-id", help="the Ray job's submission id (default: generated)")
    sm.add_argument("--follow", action="store_true",
                    help="stream the job's log (Jobs API websocket) until the job ends")
    sm.add_argument("--token-for", metavar="HOST[:PORT]", help=_TOKEN_FOR_HELP)
    sm.set_defaults(fn=_cmd_submit)
    for name, text in (("status", "job status"), ("logs", "job logs"), ("stop", "stop a job")):
        jp = sub.add_parser(name, help=f"{text} (Ray Jobs API)")
        jp.add_argument("job_id", help="the submission id printed by 'rayfal submit'")
        jp.add_argument("--address", required=True, help=_JOBS_API_HELP)
        jp.add_argument("--token-for", metavar="HOST[:PORT]", help=_TOKEN_FOR_HELP)
        if name == "logs":
            jp.add_argument("--follow", action="store_true",
                            help="stream the log (Jobs API websocket) until the job ends")
        jp.set_defaults(fn=_cmd_job)

    tn = sub.add_parser("tune", help="hyperparameter search (Ray Tune + Optuna) over a job's "
                                     "'tune:' section")
    tn.add_argument("job", help="job file (YAML) with a 'tune:' section")
    tn.add_argument("--run-dir", required=True, help="tuning run directory (study, trials, results)")
    tn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    tn.add_argument("--resume", action="store_true",
                    help="continue the search (finished trials are not re-run)")
    tn.add_argument("--address", help=_ADDRESS_HELP)
    tn.add_argument("--no-progress", action="store_true", help="quiet Tune output")
    tn.set_defaults(fn=_cmd_tune)

    sc = sub.add_parser("score", help="score a Parquet pool with a checkpoint (exactly once)")
    sc.add_argument("--pool", required=True, help="Parquet glob or directory")
    sc.add_argument("--checkpoint", required=True, help="a round directory (model.safetensors)")
    sc.add_argument("--strategy", default="bald", help="per-row strategy (default bald)")
    sc.add_argument("--mc", type=int, default=20, help="MC-dropout samples")
    sc.add_argument("--top-k", type=int, default=0, help="also write topk.parquet")
    sc.add_argument("--out", required=True, help="output folder (scores Parquet, resumable)")
    sc.add_argument("--seed", type=int, default=0, help="seed of the MC masks and tie-breaks")
    sc.add_argument("--batch-size", type=int, default=512, help="rows per scoring batch")
    sc.add_argument("--actors", type=int, default=0, help="actor count (default: auto)")
    sc.add_argument("--cpus-per-actor", default="auto", metavar="N|auto",
                    help="CPUs per scoring actor/task (default auto: sized from the cluster)")
    sc.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="N",
                    help="GPUs per scoring actor/task, e.g. 1 or 0.25 (default 0: CPU)")
    sc.add_argument("--compute", default="actors", choices=["actors", "tasks"],
                    help="Ray Data actor pool or task pool (default actors)")
    sc.add_argument("--address", help=_ADDRESS_HELP)
    sc.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    pt.add_argument("--gpu", action="store_true", help="train on a GPU")
    pt.add_argument("--address", help="Ray address when --workers > 0 (default: local Ray)")
    pt.add_argument("--no-resume", action="store_true", help="start over (drop checkpoints)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bars")
    pt.set_defaults(fn=_cmd_panda_train)

    pre = sub.add_parser("pretrain", help="pretrain the glyph-trunk of a job's model (Ray "
                                          "Train; cached in RUN_DIR/pretrained)",
                         description="Pretrain the job's CNN trunk on a glyph set disjoint from "
                                     "every campaign (model.pretrain settings), or find it "
                                     "cached, and print its held-out accuracy.")
    pre.add_argument("job", help="job file (YAML)")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    pre.add_argument("--run-dir", help="run directory (default runs/<job name>)")
    pre.add_argument("--image-size", type=int, help="image side (default: dataset.image_size)")
    pre.add_argument("--workers", type=int, help="Ray Train workers (default: "
                                                 "model.pretrain.num_workers)")
    pre.add_argument("--address", help=_ADDRESS_HELP)

    pre.set_defaults(fn=_cmd_pretrain)

    data = sub.add_parser("data", help="generate data sets")
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    gl = dsub.add_parser("glyphs", help="synthetic Synbols-like glyphs as Parquet shards")
    gl.add_argument("--out", required=True, help="output folder (pool/, test/, dataset.json)")
    gl.add_argument("--scenario", default="sensitive_attribute",
                    choices=["sensitive_attribute", "minority_group", "four_class"],
                    help="bias scenario (default sensitive_attribute)")
    gl.add_argument("--n-pool", type=int, default=10_000, help="pool rows")
    gl.add_argument("--n-test", type=int, default=2_000, help="test rows")
    gl.add_argument("--seed", type=int, default=0, help="data seed")
    gl.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    gl.add_argument("--shard-rows", type=int, default=50_000, help="rows per Parquet shard")
    gl.set_defaults(fn=_cmd_data_glyphs)
    ix = dsub.add_parser("index-images", help="a pool index (Parquet, uri column) of a tree of "
                                              "image files, local or s3://, gs://")
    ix.add_argument("root", metavar="DIR_OR_URI", help="the tree (ImageFolder layout gives "
                                                       "labels: ROOT/<class>/...)")
    ix.add_argument("--out", required=True, help="output folder of the index shards")
    ix.add_argument("--csv", help="CSV with a 'file' column and 'group' and/or 'label'")
    ix.add_argument("--image-size", type=int, default=224, help="decoded image side (default "
                                                               "224; the job may override)")
    ix.add_argument("--channels", type=int, choices=[1, 3], default=3, help="3 RGB, 1 grey")
    ix.add_argument("--namespace", default="", help="salt of the row_id hash (e.g. to index "
                                                    "a test tree with the same file names)")
    ix.add_argument("--shard-rows", type=int, default=100_000, help="rows per Parquet shard")
    ix.add_argument("--verify", action="store_true", help="read and decode every file once "
                                                          "(reports unreadable ones)")
    ix.set_defaults(fn=_cmd_data_index_images)
    return p


def _error_line(exc: BaseException) -> str:
    """The one line printed for a failed command (a pydantic error is summarised)."""
    from pydantic import ValidationError

    from rayfal.config.errors import format_validation_error, one_line

    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    return one_line(str(exc)) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"rayfal: error: {_error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
