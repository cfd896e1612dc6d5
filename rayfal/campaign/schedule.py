"""The labelling schedule: how many queries a campaign makes and which rows start labelled."""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path

import numpy as np

from rayfal.config.errors import ConfigError
from rayfal.hashing import row_uniform

log = logging.getLogger("rayfal")


def schedule(cfg, pool_size: int) -> int:
    """Number of queries R of a job's campaigns (rounds 0..R train; rounds 0..R-1 query):
    ``al.rounds`` when set, else as many ``al.query_size`` batches as reach ``al.max_frac``
    of the pool."""
    al = cfg.al
    if al.rounds is not None:
        return al.rounds
    target = math.floor(al.max_frac * pool_size + 1e-9)
    return max(0, (target - al.initial_labels) // al.query_size)


def known_pool_rows(dataset) -> int | None:
    """The pool's row count when the job file tells it without opening the pool: ``n_pool`` of
    generated data sets (glyphs, colored_mnist), the Parquet footers' row counts of a
    ``parquet`` data set (footers only, no column data); ``None`` when unknown (adult before
    it is prepared, unreadable files: the pool reports those when it is opened)."""
    name = getattr(dataset, "name", None)
    if name in ("glyphs", "colored_mnist"):
        return int(dataset.n_pool)
    if name != "parquet":
        return None
    import pyarrow.parquet as pq

    pattern = str(dataset.pool)
    if Path(pattern).is_dir():
        files = sorted(glob.glob(str(Path(pattern) / "*.parquet")))
    elif any(c in pattern for c in "*?["):
        files = sorted(glob.glob(pattern))
    else:
        files = [pattern]
    try:
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # noqa: BLE001  (unreadable: Pool names the file when it opens it)
        return None
    return rows or None  # no files / no rows: Pool names them when it opens them


def check_schedule(cfg, pool_rows: int | None, *, initial: int | None = None,
                   source: str | None = None) -> None:
    """Refuse a labelling schedule the pool cannot supply (:class:`ConfigError`, one line
    naming ``al.initial_labels``, ``al.query_size``, ``al.rounds`` and the pool rows).

    The rule, with ``N`` pool rows and ``I`` initial labels (``al.initial_labels``, or
    ``initial`` when the data bring their own initial set, e.g. Adult's D0):

    * ``I > N`` is an error;
    * with ``al.rounds = R`` set, ``I + al.query_size x R > N`` is an error: some round would
      ask for more rows than are left unlabelled;
    * with ``al.rounds`` null the schedule is clipped by construction
      (:func:`schedule`: ``R = (floor(al.max_frac x N) - I) // al.query_size``, so
      ``I + al.query_size x R <= al.max_frac x N <= N``); a ``query_size`` that leaves no
      query round (``R = 0``) is allowed, with a warning.

    ``pool_rows=None`` (not known yet) checks nothing: call it again once the pool is open.
    """
    if pool_rows is None:
        return
    al = cfg.al
    n_init = al.initial_labels if initial is None else int(initial)
    init_key = "al.initial_labels" if initial is None else "the data's initial labels"
    where = f"{source}: " if source else ""
    if n_init > pool_rows:
        raise ConfigError(f"{where}{init_key}={n_init} exceeds the pool's {pool_rows} rows "
                          f"(pool rows: {pool_rows})")
    if al.rounds is not None:
        need = n_init + al.query_size * al.rounds
        if need > pool_rows:
            raise ConfigError(
                f"{where}al.query_size={al.query_size} x al.rounds={al.rounds} + {init_key}="
                f"{n_init} = {need} labels, more than the pool's {pool_rows} rows (pool rows: "
                f"{pool_rows}); lower al.query_size or al.rounds, or use al.max_frac")
    elif schedule(cfg, pool_rows) == 0 and n_init + al.query_size > pool_rows * al.max_frac:
        log.warning("%sal.query_size=%d: no query round fits in al.max_frac=%g of the pool's "
                    "%d rows after %d initial labels; only round 0 trains", where,
                    al.query_size, al.max_frac, pool_rows, n_init)


def initial_selection(row_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The initial labelled set: ``n`` uniform rows of ``row_ids``, a function of the seed
    only (so every strategy of a seed starts from the same labels: paired comparisons)."""
    ids = np.asarray(row_ids, dtype=np.int64)
    key = row_uniform(ids, seed, 0x1417)
    return ids[np.lexsort((ids, -key))[: min(n, len(ids))]]


def group_fracs(prefix: str, groups: np.ndarray | dict[int, int], all_groups: list[int]) -> dict:
    """``{prefix}_frac_group_<g>``: each group's share of ``groups`` (an array of group ids or
    a ``{group: count}`` mapping); NaN when there is nothing to share."""
    if isinstance(groups, dict):
        counts = {g: groups.get(g, 0) for g in all_groups}
    else:
        counts = {g: int(np.sum(groups == g)) for g in all_groups}
    total = sum(counts.values())
    return {f"{prefix}_frac_group_{g}": (c / total if total else float("nan"))
            for g, c in counts.items()}
