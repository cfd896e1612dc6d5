"""Who answers a query: the :class:`Oracle` protocol, the simulated oracle and people.

The campaign hands each batch to its oracle (:meth:`Oracle.request`, idempotent) and asks for
labels (:meth:`Oracle.labels_for`), which answers with the rows it can label *now*. The
simulated oracle (hidden ``label`` column) answers every row at once and ``request`` does
nothing. An oracle backed by people answers only what has been labelled: the campaign then
stops durably in an "awaiting labels" state (:class:`AwaitingLabels`, the query kept in
``pending.json``) and continues from there on ``--resume`` once the labels are in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rayfal.data import schema as S
from rayfal.data.ledger import LabelLedger
from rayfal.labelling.batches import QueryBatch, write_batch

#: pool columns that are never copied into a query batch as id/URI columns
_INTERNAL = {S.ROW_ID, S.GROUP, S.LABEL, S.IMAGE, S.FEATURES, "initial", "bias_aligned"}


@dataclass(frozen=True)
class LabelAnswer:
    """The labels an oracle gives for (some of) the requested rows."""

    row_id: np.ndarray
    label: np.ndarray
    source: str = "simulated"
    annotator: list[str | None] = field(default_factory=list)  # per row (people), else empty
    ties: list[int] = field(default_factory=list)  # rows whose annotators tie (majority)

    def missing(self, requested: np.ndarray) -> np.ndarray:
        """The requested row ids this answer does not label."""
        return np.setdiff1d(np.asarray(requested, np.int64), self.row_id)

    def subset(self, requested: np.ndarray) -> LabelAnswer:
        """The answer restricted to ``requested`` rows, in that order (answered rows only)."""
        requested = np.asarray(requested, np.int64)
        pos = {int(r): i for i, r in enumerate(self.row_id.tolist())}
        idx = [pos[int(r)] for r in requested.tolist() if int(r) in pos]
        who = [self.annotator[i] for i in idx] if self.annotator else []
        return LabelAnswer(self.row_id[idx], self.label[idx].astype(np.int64), self.source,
                           who, self.ties)

    def labels_in_order(self, requested: np.ndarray) -> np.ndarray:
        """Labels of ``requested`` in that order (every row must be answered)."""
        requested = np.asarray(requested, np.int64)
        missing = self.missing(requested)
        if len(missing):
            raise AwaitingLabels(len(missing), len(requested))
        return self.subset(requested).label


class AwaitingLabels(Exception):
    """The oracle has not labelled every queried row yet; the campaign waits durably."""

    def __init__(self, missing: int, requested: int, where: str = "", files: str = "") -> None:
        self.missing, self.requested, self.files = missing, requested, files
        super().__init__(f"{where}awaiting {missing} of {requested} labels"
                         + (f" ({files})" if files else ""))


@runtime_checkable
class Oracle(Protocol):
    """Answers label requests; ``name`` is recorded as the labels' source."""

    name: str

    def request(self, batch: QueryBatch) -> dict[str, Path]:
        """Hand ``batch`` to whoever labels it (idempotent); returns the files written."""
        ...

    def labels_for(self, row_ids: np.ndarray, round: int = 0) -> LabelAnswer:
        """Labels of the rows it can answer now (possibly none); ``round`` is the ledger round
        they will feed (provenance)."""
        ...


class SimulatedOracle:
    """Reveals the hidden ``label`` column of the pool (simulated active learning)."""

    name = "simulated"

    def __init__(self, pool) -> None:
        if not pool.has_labels:
            raise ValueError(f"{pool.name}: the pool has no hidden 'label' column, which the "
                             "simulated oracle (oracle.kind: simulated) reveals; use "
                             "oracle.kind: files (people label the queries) for an unlabelled "
                             "pool")
        self.pool = pool

    def request(self, batch: QueryBatch) -> dict[str, Path]:
        return {}

    def labels_for(self, row_ids: np.ndarray, round: int = 0) -> LabelAnswer:
        ids = np.asarray(row_ids, dtype=np.int64)
        if len(ids) == 0:
            return LabelAnswer(ids, np.zeros(0, np.int64), self.name)
        labels = self.pool.take(ids, [S.LABEL])[S.LABEL].astype(np.int64)
        return LabelAnswer(ids, labels, self.name)


class PeopleOracle:
    """People label query batches written as files (``oracle.kind: files``); their labels
    reach the campaign's ledger as annotations (``rayfal labels import`` / ``sync``), and
    :meth:`labels_for` answers the rows whose annotations resolve to one label."""

    name = "human"

    def __init__(self, pool, ledger: LabelLedger, queries_dir: Path, *,
                 aggregation: str = "none") -> None:
        self.pool, self.ledger, self.queries_dir = pool, ledger, Path(queries_dir)
        self.aggregation = aggregation

    def with_rows(self, batch: QueryBatch) -> QueryBatch:
        """The batch with the pool's id/URI columns and, for image pools, its images."""
        ids = np.asarray(batch.row_id, np.int64)
        extra_cols = [c for c in self.pool.schema.names if c not in _INTERNAL]
        cols = extra_cols + ([S.IMAGE] if self.pool.feature_column == S.IMAGE else [])
        if not cols or len(ids) == 0:
            return batch
        rows = self.pool.take(ids, cols)
        images = None
        if self.pool.feature_column == S.IMAGE:
            c, h, w = self.pool.input_shape
            images = np.stack(rows[S.IMAGE]).reshape(len(ids), h, w, c).astype(np.uint8) \
                if rows[S.IMAGE].dtype == object else \
                np.asarray(rows[S.IMAGE]).reshape(len(ids), h, w, c).astype(np.uint8)
        return QueryBatch(batch.campaign, batch.seed, batch.round, ids, batch.group,
                          batch.score, {c: rows[c] for c in extra_cols}, images)

    def request(self, batch: QueryBatch) -> dict[str, Path]:
        return write_batch(self.with_rows(batch), self.queries_dir)

    def labels_for(self, row_ids: np.ndarray, round: int = 0) -> LabelAnswer:
        ids = np.asarray(row_ids, dtype=np.int64)
        got, labels, ties = self.ledger.resolved_annotations(ids)
        frame = self.ledger.annotations_frame()
        who = frame[frame["row_id"].isin(got)].groupby("row_id")["annotator"].apply(
            lambda a: ",".join(sorted(a))).to_dict()
        return LabelAnswer(got, labels, self.name, [who.get(int(r)) for r in got.tolist()],
                           ties)
