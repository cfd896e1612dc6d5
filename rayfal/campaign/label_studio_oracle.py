"""People label in Label Studio (``oracle: {kind: label_studio, url, project, api_key_env}``).

Each query batch is written to the run directory as for ``oracle.kind: files`` and imported
into the project as tasks (idempotent: rows already there are skipped); annotations are pulled
through the REST API into the campaign's ledger as annotations (``rayfal labels sync``, and
again whenever the campaign asks for labels), with the same checks as an imported file.
Classes are the label ids ``0..C-1`` shown as text; the project is created when missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rayfal.campaign.oracle import LabelAnswer, PeopleOracle
from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.labelling.batches import QueryBatch, write_batch
from rayfal.labelling.label_studio import (
    LabelStudioClient,
    annotations_by_annotator,
    batch_to_tasks,
)


def class_names(num_classes: int) -> list[str]:
    """The project's choices: the class ids as text (label = the choice's index)."""
    return [str(c) for c in range(int(num_classes))]


def client_for(cfg_oracle) -> LabelStudioClient:
    """A client for the job's Label Studio, with the token from ``oracle.api_key_env``."""
    key = os.environ.get(cfg_oracle.api_key_env, "")
    if not key:
        raise ValueError(f"oracle.api_key_env: the environment variable "
                         f"{cfg_oracle.api_key_env} (the Label Studio API token) is not set")
    return LabelStudioClient(cfg_oracle.url, key)


def sync_annotations(client: LabelStudioClient, project_id: int, classes: list[str],
                     ledger: LabelLedger, batch_ids: np.ndarray, *, round: int,
                     aggregation: str, source_url: str) -> int:
    """Pull the project's finished annotations of the batch's rows into ``ledger`` (one
    transaction per annotator; conflicts are errors as for files). Returns the new ones."""
    wanted = set(np.asarray(batch_ids, np.int64).tolist())
    added = 0
    anns = [a for a in client.annotations(project_id, classes) if a.row_id in wanted]
    for who, (ids, labels) in sorted(annotations_by_annotator(anns).items()):
        added += ledger.add_annotations(ids, labels, annotator=who, round=round,
                                        source="label_studio", file=source_url,
                                        aggregation=aggregation)
    return added


class LabelStudioOracle(PeopleOracle):
    """:class:`PeopleOracle` whose batches also go to a Label Studio project."""

    name = "label_studio"

    def __init__(self, cfg_oracle, pool, ledger: LabelLedger, queries_dir: Path, *,
                 num_classes: int) -> None:
        super().__init__(pool, ledger, queries_dir, aggregation=cfg_oracle.aggregation)
        self.cfg = cfg_oracle
        self.classes = class_names(num_classes)
        self.kind = "image" if pool.feature_column == S.IMAGE else "text"
        self._client: LabelStudioClient | None = None
        self._project: int | None = None

    @property
    def client(self) -> LabelStudioClient:
        if self._client is None:
            self._client = client_for(self.cfg)
        return self._client

    @property
    def project(self) -> int:
        if self._project is None:
            self._project = self.client.ensure_project(self.cfg.project, self.classes,
                                                       kind=self.kind)
        return self._project

    def request(self, batch: QueryBatch) -> dict[str, Path]:
        full = self.with_rows(batch)
        files = write_batch(full, self.queries_dir)
        table = full.table()
        if self.kind == "text":
            table["features"] = list(self.pool.take(full.row_id, [S.FEATURES])[S.FEATURES])
        self.client.import_tasks(self.project, batch_to_tasks(table, kind=self.kind,
                                                              images=full.images))
        return {**files, "label_studio": Path(self.client.project_url(self.project))}

    def labels_for(self, row_ids: np.ndarray, round: int = 0) -> LabelAnswer:
        """Pull the batch's finished annotations from Label Studio (once the batch was handed
        over), then answer as :class:`PeopleOracle`. ``round``: the ledger round the labels
        feed (the pending query's round + 1)."""
        ids = np.asarray(row_ids, np.int64)
        stem = "initial" if round <= 0 else f"round_{round - 1:03d}"
        if len(ids) and (self.queries_dir / f"{stem}.csv").exists():
            done, _, _ = self.ledger.resolved_annotations(ids)
            if len(done) < len(ids):
                sync_annotations(self.client, self.project, self.classes, self.ledger, ids,
                                 round=round, aggregation=self.aggregation,
                                 source_url=self.client.project_url(self.project))
        return super().labels_for(ids, round)
