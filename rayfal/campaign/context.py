"""What every campaign of a job shares: the pool, the held-out sets, the groups, the oracle."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from rayfal.data import schema as S
from rayfal.data.pool import Pool
from rayfal.data.splits import validation_mask
from rayfal.fairness.bias import aligned_for, read_bias_aligned

log = logging.getLogger("rayfal")


def pool_fingerprint(pool, edge: int = 65_536) -> str:
    """A hash of the pool's files — names, sizes, and the first and last ``edge`` bytes of each
    (Parquet keeps its schema and per-row-group statistics at the end) — and its row count.
    Reads at most ``2 * edge`` bytes a file, so it stays cheap for very large pools."""
    digest = hashlib.sha256(str(pool.num_rows).encode())
    for f in sorted(pool.files, key=lambda f: Path(f).name):
        size = Path(f).stat().st_size
        digest.update(f"{Path(f).name}:{size}".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(edge))
            fh.seek(max(0, size - edge))
            digest.update(fh.read(edge))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EvalSet:
    """A held-out split in model-input form (test set, or the validation split for ``z*``)."""

    x: torch.Tensor
    y: np.ndarray
    group: np.ndarray
    row_id: np.ndarray
    bias_aligned: np.ndarray | None = None  # 0/1 per row when the data has the column

    def subset(self, mask: np.ndarray) -> EvalSet:
        idx = torch.from_numpy(np.flatnonzero(mask))
        return EvalSet(self.x[idx], self.y[mask], self.group[mask], self.row_id[mask],
                       None if self.bias_aligned is None else self.bias_aligned[mask])


@dataclass
class Context:
    """Shared by every campaign (strategy x seed) of one job."""

    cfg: object  # rayfal.config.JobConfig
    run_dir: Path
    pool: Pool
    test: EvalSet
    groups: list[int]
    scenario: str
    progress: bool
    val: EvalSet | None = None  # evaluation.val_fraction > 0: the split that picks z*
    accept_partial: bool = False  # go on with a partly labelled query batch (people)

    @cached_property
    def pool_fingerprint(self) -> str:
        """The pool's fingerprint, computed once for every campaign of the job."""
        return pool_fingerprint(self.pool)

    @property
    def num_classes(self) -> int:
        return int(max(self.test.y.max(), 1)) + 1


def read_eval_set(split: Pool) -> EvalSet:
    """A labelled split (test set) read whole, in model-input form."""
    rows = split.read_all([S.ROW_ID, split.feature_column, S.LABEL, S.GROUP])
    row_id = rows[S.ROW_ID].astype(np.int64)
    lookup = read_bias_aligned(split)
    return EvalSet(
        x=torch.from_numpy(S.to_model_input(rows[split.feature_column], split.input_shape)),
        y=rows[S.LABEL].astype(np.int64), group=rows[S.GROUP].astype(np.int64), row_id=row_id,
        bias_aligned=None if lookup is None else aligned_for(lookup, row_id),
    )


def split_validation(test: EvalSet, fraction: float) -> tuple[EvalSet, EvalSet | None]:
    """``(reported test set, validation split)``: with ``fraction > 0`` that share of the test
    rows (by row_id hash, :func:`~rayfal.data.splits.validation_mask`) becomes the validation
    split used only to find ``z*`` (FRAL Algorithm 1, line 5)."""
    if fraction <= 0:
        return test, None
    val = validation_mask(test.row_id, fraction)
    if val.all() or not val.any():
        raise ValueError(f"evaluation.val_fraction={fraction} leaves an empty validation or "
                         f"test split of the {len(val)} test rows")
    for name, arr in (("validation", test.group[val]), ("test", test.group[~val])):
        if len(np.unique(arr)) < len(np.unique(test.group)):
            raise ValueError(f"evaluation.val_fraction={fraction}: the {name} split misses a "
                             "group")
    return test.subset(~val), test.subset(val)


def all_groups(pool: Pool, test: EvalSet) -> list[int]:
    """Every group id of the pool and the test set (sorted)."""
    groups = sorted(set(np.unique(pool.groups()).tolist()) | set(np.unique(test.group).tolist()))
    if len(groups) < 2:
        log.warning("only one group (%s) in the data: every disparity metric is 0", groups)
    return groups
