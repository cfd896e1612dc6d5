"""People's labels for a run directory: import a labelled batch, show what waits for labels.

``rayfal labels import`` and ``rayfal labels status`` call these; they read the run's saved
job (``job.yaml``) and each campaign's ``pending.json`` and ledger, never start Ray, and change
nothing on disk when a file is rejected.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rayfal.campaign.pending import PendingQuery, read_pending
from rayfal.campaign.rundir import run_dir_lock
from rayfal.config import ConfigError, config_from_dict
from rayfal.data.ledger import LabelLedger, LedgerError
from rayfal.labelling.imports import LabelFileError, read_label_file

JOB_YAML = "job.yaml"


@dataclass(frozen=True)
class ImportResult:
    campaign: str
    seed: int
    round: int  # the pending query's round (-1: the initial labelled set)
    added: int  # new annotations
    labelled: int  # rows of the batch with a resolved label now
    remaining: int  # rows of the batch still without one
    file: Path


def load_run_job(run_dir: Path):
    """The typed job saved in ``run_dir/job.yaml`` (one-line errors naming the file)."""
    path = Path(run_dir) / JOB_YAML
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {JOB_YAML})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(raw, source=str(path))


def campaign_dirs(run_dir: Path) -> list[tuple[str, int, Path]]:
    """``(campaign, seed, directory)`` of every campaign of the run, sorted."""
    out = []
    for d in sorted(Path(run_dir).glob("campaigns/*/seed_*")):
        try:
            out.append((d.parent.name, int(d.name.removeprefix("seed_")), d))
        except ValueError:
            continue
    return out


def _find_pending(run_dir: Path, campaign: str | None, seed: int | None
                  ) -> tuple[str, int, Path, PendingQuery]:
    waiting = [(c, s, d, p) for c, s, d in campaign_dirs(run_dir)
               if (campaign is None or c == campaign) and (seed is None or s == seed)
               and (p := read_pending(d)) is not None]
    if not waiting:
        which = " ".join(x for x in (campaign and f"campaign {campaign}",
                                     seed is not None and f"seed {seed}") if x)
        raise ConfigError(f"{run_dir}: no {which + ' ' if which else ''}campaign is waiting "
                          "for labels (rayfal labels status shows each campaign's state)")
    if len(waiting) > 1:
        names = ", ".join(f"--campaign {c} --seed {s}" for c, s, _, _ in waiting)
        raise ConfigError(f"{run_dir}: {len(waiting)} campaigns wait for labels; say which "
                          f"one the file answers: {names}")
    return waiting[0]


def import_labels(run_dir: str | Path, file: str | Path, *, campaign: str | None = None,
                  seed: int | None = None, annotator: str | None = None) -> ImportResult:
    """Check ``file`` against the batch the campaign waits for and add its labels to the
    campaign's ledger in one transaction (all or nothing). A partial batch is fine."""
    run_dir = Path(run_dir)
    cfg = load_run_job(run_dir)
    if cfg.oracle.kind == "simulated":
        raise ConfigError(f"{run_dir}: the job's oracle is simulated (hidden labels); labels "
                          "by people need oracle.kind: files or label_studio")
    with run_dir_lock(run_dir, "import labels"):
        return _import_locked(run_dir, file, cfg, campaign, seed, annotator)


def _import_locked(run_dir: Path, file, cfg, campaign, seed, annotator) -> ImportResult:
    name, s, cdir, pending = _find_pending(run_dir, campaign, seed)
    batch = np.asarray(pending.row_id, np.int64)
    try:
        rows = read_label_file(file, batch_ids=batch, num_classes=pending.num_classes,
                               expected={"campaign": name, "seed": s, "round": pending.round})
    except LabelFileError as exc:
        raise ConfigError(str(exc)) from None
    ledger = LabelLedger(cdir / "ledger.sqlite")
    try:
        added = ledger.add_annotations(
            rows.row_id, rows.label, annotator=annotator or getpass.getuser(),
            round=pending.round + 1, source="human", file=str(Path(file).resolve()),
            aggregation=getattr(cfg.oracle, "aggregation", "none"))
        labelled, _, _ = ledger.resolved_annotations(batch)
    except LedgerError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    finally:
        ledger.close()
    return ImportResult(name, s, pending.round, added, len(labelled), len(batch) - len(labelled),
                        Path(file))


def labels_status(run_dir: str | Path) -> pd.DataFrame:
    """One row per campaign and seed: rounds recorded, labels in the ledger, and its state —
    ``waiting for labels`` (the batch's round, its rows still unlabelled, of how many, and the
    file to fill in), ``finished`` (the last round queried nothing), or ``in progress``."""
    run_dir = Path(run_dir)
    load_run_job(run_dir)  # a run directory with a readable job
    rows = []
    for name, s, cdir in campaign_dirs(run_dir):
        records = sorted((cdir / "rounds").glob("round_*.json"))
        pending = read_pending(cdir)
        ledger = LabelLedger(cdir / "ledger.sqlite")
        try:
            n_labels = len(ledger)
            remaining = None
            if pending is not None:
                got, _, _ = ledger.resolved_annotations(np.asarray(pending.row_id, np.int64))
                remaining = len(pending.row_id) - len(got)
        finally:
            ledger.close()
        if pending is not None:
            state = "waiting for labels"
        elif records and not json.loads(records[-1].read_text()).get("selected"):
            state = "finished"
        else:
            state = "in progress"
        rows.append({
            "campaign": name, "seed": s, "rounds_done": len(records), "labels": n_labels,
            "state": state,
            "waiting_round": (None if pending is None else
                              "initial" if pending.round < 0 else pending.round),
            "unlabelled": remaining,
            "batch": None if pending is None else len(pending.row_id),
            "file": (pending.files.get("csv") if pending is not None and pending.files
                     else None),
        })
    return pd.DataFrame(rows)


def _waiting(run_dir: Path, campaign: str | None, seed: int | None):
    return [(c, s, d, p) for c, s, d in campaign_dirs(run_dir)
            if (campaign is None or c == campaign) and (seed is None or s == seed)
            and (p := read_pending(d)) is not None]


def sync_labels(run_dir: str | Path, *, campaign: str | None = None,
                seed: int | None = None) -> list[ImportResult]:
    """Pull finished Label Studio annotations of every waiting batch into the ledgers
    (``oracle.kind: label_studio``)."""
    from rayfal.campaign.label_studio_oracle import client_for

    run_dir = Path(run_dir)
    cfg = load_run_job(run_dir)
    if cfg.oracle.kind != "label_studio":
        raise ConfigError(f"{run_dir}: the job's oracle is {cfg.oracle.kind}, not label_studio; "
                          "use 'rayfal labels import' for files")
    client = client_for(cfg.oracle)
    with run_dir_lock(run_dir, "sync labels"):
        return [_sync_one(client, cfg, name, s, cdir, pending)
                for name, s, cdir, pending in _waiting(run_dir, campaign, seed)]


def _sync_one(client, cfg, name: str, s: int, cdir: Path, pending: PendingQuery
              ) -> ImportResult:
    from rayfal.campaign.label_studio_oracle import class_names, sync_annotations

    kind = "text" if pending.files.get("csv") and not pending.files.get("png") else "image"
    classes = class_names(pending.num_classes)
    pid = client.ensure_project(cfg.oracle.project, classes, kind=kind)
    batch = np.asarray(pending.row_id, np.int64)
    ledger = LabelLedger(cdir / "ledger.sqlite")
    try:
        added = sync_annotations(client, pid, classes, ledger, batch, round=pending.round + 1,
                                 aggregation=cfg.oracle.aggregation,
                                 source_url=client.project_url(pid))
        done, _, _ = ledger.resolved_annotations(batch)
    except LedgerError as exc:
        raise ConfigError(f"label studio {cfg.oracle.url}: {exc}") from None
    finally:
        ledger.close()
    return ImportResult(name, s, pending.round, added, len(done), len(batch) - len(done),
                        Path(client.project_url(pid)))


def export_label_studio(run_dir: str | Path, out: str | Path, *, campaign: str | None = None,
                        seed: int | None = None) -> Path:
    """The waiting batch as Label Studio tasks JSON (for teams that move files by hand)."""
    import pyarrow.parquet as pq

    from rayfal.labelling.label_studio import batch_to_tasks, tasks_to_json

    run_dir = Path(run_dir)
    name, s, cdir, pending = _find_pending(run_dir, campaign, seed)
    parquet = Path(pending.files.get("parquet", ""))
    if not parquet.is_file():
        raise ConfigError(f"{run_dir}: the batch of campaign {name} seed {s} has no query file "
                          "yet; run 'rayfal run RUN_DIR --resume' first")
    table = pq.read_table(parquet).to_pandas()
    cfg = load_run_job(run_dir)
    from rayfal.campaign.oracle import PeopleOracle
    from rayfal.data.sources import open_dataset
    from rayfal.labelling.batches import QueryBatch

    pool, _ = open_dataset(cfg.dataset, run_dir / "data")
    ids = table["row_id"].to_numpy(np.int64)
    full = PeopleOracle(pool, None, cdir).with_rows(
        QueryBatch(name, s, pending.round, ids, table["group"].to_numpy(np.int64)))
    images, kind = full.images, "image" if full.images is not None else "text"
    if kind == "text":
        from rayfal.data import schema as S

        table["features"] = list(pool.take(ids, [S.FEATURES])[S.FEATURES])
    Path(out).write_text(tasks_to_json(batch_to_tasks(table, kind=kind, images=images)))
    return Path(out)


def import_label_studio(run_dir: str | Path, file: str | Path, *, campaign: str | None = None,
                        seed: int | None = None, annotator: str | None = None) -> ImportResult:
    """Import a Label Studio JSON export for the waiting batch (the same checks as a CSV:
    every row id must be in the batch; nothing is imported from a file with any problem)."""

    run_dir, file = Path(run_dir), Path(file)
    cfg = load_run_job(run_dir)
    with run_dir_lock(run_dir, "import labels"):
        return _import_ls_locked(run_dir, file, cfg, campaign, seed, annotator)


def _import_ls_locked(run_dir: Path, file: Path, cfg, campaign, seed, annotator
                      ) -> ImportResult:
    from rayfal.campaign.label_studio_oracle import class_names
    from rayfal.labelling.label_studio import annotations_by_annotator, parse_export

    name, s, cdir, pending = _find_pending(run_dir, campaign, seed)
    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    try:
        anns = parse_export(file.read_bytes(), class_names(pending.num_classes))
    except ValueError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    batch = np.asarray(pending.row_id, np.int64)
    outside = sorted({a.row_id for a in anns} - set(batch.tolist()))
    if outside:
        raise ConfigError(f"{file}: row_id not in the batch waiting for labels: "
                          f"{outside[:10]}; nothing imported")
    ledger = LabelLedger(cdir / "ledger.sqlite")
    added = 0
    try:
        groups = annotations_by_annotator(anns)
        if annotator:
            ids = np.concatenate([v[0] for v in groups.values()]) if groups else np.zeros(0)
            labs = np.concatenate([v[1] for v in groups.values()]) if groups else np.zeros(0)
            groups = {annotator: (ids, labs)}
        for who, (ids, labels) in sorted(groups.items()):
            added += ledger.add_annotations(ids, labels, annotator=who, round=pending.round + 1,
                                            source="label_studio", file=str(file.resolve()),
                                            aggregation=getattr(cfg.oracle, "aggregation",
                                                                "none"))
        done, _, _ = ledger.resolved_annotations(batch)
    except LedgerError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    finally:
        ledger.close()
    return ImportResult(name, s, pending.round, added, len(done), len(batch) - len(done), file)
