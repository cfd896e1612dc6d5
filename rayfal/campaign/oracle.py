"""Who answers a query: the :class:`Oracle` protocol and the simulated oracle.

An oracle is asked for the labels of a batch of row ids and answers with a :class:`LabelAnswer`
holding the rows it can label *now*. A simulated oracle (hidden ``label`` column) always
answers every row. An oracle backed by people (files, a labelling tool) may answer only some
rows, or none yet: the campaign then stops durably in an "awaiting labels" state
(:class:`AwaitingLabels`) after recording its query, and continues from there once the labels
are in (``--resume``). ``provenance`` is stored with each label in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from rayfal.data import schema as S


@dataclass(frozen=True)
class LabelAnswer:
    """The labels an oracle gives for (some of) the requested rows, in request order."""

    row_id: np.ndarray
    label: np.ndarray
    source: str = "simulated"

    def missing(self, requested: np.ndarray) -> np.ndarray:
        """The requested row ids this answer does not label."""
        return np.setdiff1d(np.asarray(requested, np.int64), self.row_id)

    def labels_in_order(self, requested: np.ndarray) -> np.ndarray:
        """Labels of ``requested`` in that order (every row must be answered)."""
        requested = np.asarray(requested, np.int64)
        missing = self.missing(requested)
        if len(missing):
            raise AwaitingLabels(len(missing), len(requested))
        pos = {int(r): i for i, r in enumerate(self.row_id.tolist())}
        return self.label[[pos[int(r)] for r in requested.tolist()]].astype(np.int64)


class AwaitingLabels(Exception):
    """The oracle has not labelled every queried row yet; the campaign waits durably."""

    def __init__(self, missing: int, requested: int, where: str = "") -> None:
        self.missing, self.requested = missing, requested
        super().__init__(f"{where}awaiting {missing} of {requested} labels")


@runtime_checkable
class Oracle(Protocol):
    """Answers label requests; ``name`` is recorded as the labels' source."""

    name: str

    def labels_for(self, row_ids: np.ndarray) -> LabelAnswer:
        """Labels of the rows it can answer now (possibly none)."""
        ...


class SimulatedOracle:
    """Reveals the hidden ``label`` column of the pool (simulated active learning)."""

    name = "simulated"

    def __init__(self, pool) -> None:
        if not pool.has_labels:
            raise ValueError(f"{pool.name}: the pool has no hidden 'label' column, which the "
                             "simulated oracle (oracle.kind: simulated) reveals")
        self.pool = pool

    def labels_for(self, row_ids: np.ndarray) -> LabelAnswer:
        ids = np.asarray(row_ids, dtype=np.int64)
        if len(ids) == 0:
            return LabelAnswer(ids, np.zeros(0, np.int64), self.name)
        labels = self.pool.take(ids, [S.LABEL])[S.LABEL].astype(np.int64)
        return LabelAnswer(ids, labels, self.name)


def make_oracle(kind: str, pool) -> Oracle:
    """The oracle of a job's ``oracle.kind``."""
    if kind == "simulated":
        return SimulatedOracle(pool)
    raise ValueError(f"oracle.kind: unknown oracle {kind!r}; known: simulated")
