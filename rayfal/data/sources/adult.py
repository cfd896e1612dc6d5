"""UCI Adult (census income) in the pool schema, split by PANDA's protocol (Sharaf et al. 2022, §4).

Preprocessing (read from ``adult.data`` + ``adult.test`` in ``src_dir``, never downloaded):

1. Parse both files (comma + space separated, 15 fields as listed in ``adult.names``);
   ``adult.test`` starts with a ``|1x3 Cross validator`` line and its labels end with ``'.'``
   (``>50K.``): both are stripped. Rows with a missing value (``'?'`` in any field) are dropped:
   32,561 -> 30,162 training and 16,281 -> 15,060 test rows, 45,222 in all.
2. ``label = 1[income == '>50K']``; ``group = 1[sex == 'Male']`` (0 = Female, 1 = Male: PANDA
   uses binary gender as the group attribute). ``sex`` also stays a feature (one-hot), as in
   the paper's 251-feature encoding.
3. Features: the 6 continuous columns as they are, then every categorical column one-hot
   encoded over the category list of ``adult.names`` (fixed order, so the width is always
   6 + 99 = 105 whatever rows a split holds; the paper's 251 includes encodings we cannot
   reconstruct). ``standardize="all"`` (default; PANDA §4.2: "We scale all the features to have
   a mean zero and unit standard deviation") standardises every column, ``"numeric"`` only the
   6 continuous ones; means and standard deviations come from the meta-train part D only (the
   labelled data available before the campaign), never from the pool or the test set; a column
   constant on D keeps scale 1.
4. PANDA's split (§4): the 45,222 rows, shuffled with ``seed``, are split 50/50 into meta-train
   D and meta-test; meta-test 50/50 into the unlabelled pool U and the test set. The original
   UCI train/test division is ignored (as the paper does: "given a complete dataset, we first
   split it 50/50"). ``row_id`` = position in the concatenation adult.data + adult.test after
   dropping '?' rows, so ids are stable across seeds.

Written under ``out_dir`` (cached: an existing directory with the same parameters is reused;
different parameters are an error): ``meta/`` (D, with labels), ``pool/`` (U plus the rows of
D0, see below), ``test/``, and ``manifest.json``.

**D0, the pre-existing labelled set.** In PANDA, D is the pre-existing labelled data on which
the policy is meta-trained. The campaign must start labelled with D0 (``d0_size`` rows of D: a
seeded sample; ``None`` = all of D). The label ledger only accepts row_ids of the pool, so the
D0 rows are also written into ``pool/`` with the flag column ``initial = 1`` (U rows have
``initial = 0``; the same row_id as in ``meta/``); the driver's initial selection
(:func:`initial_row_ids`) labels exactly the flagged rows, and they are never query
candidates (they are labelled from round 0). ``meta/`` holds all of D (including D0); use
:func:`open_split` to read it (PANDA meta-training, FairAL's fairness set).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfal.data import schema as S

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = [c for c in COLUMNS[:-1] if c not in NUMERIC]
INITIAL = "initial"
MANIFEST = "manifest.json"
SPLITS = ("meta", "pool", "test")
GROUP_NAMES = ("Female", "Male")

__all__ = [
    "AdultData", "encode", "initial_row_ids", "load_raw", "open_split", "prepare_adult",
    "read_categories",
]


class AdultError(ValueError):
    """Malformed Adult source files; the message names the file and line."""


def read_categories(names_path: str | Path) -> dict[str, list[str]]:
    """Category lists of the categorical attributes, in ``adult.names`` order."""
    cats: dict[str, list[str]] = {}
    for line in Path(names_path).read_text().splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in CATEGORICAL:
            cats[key] = [v.strip() for v in rest.strip().rstrip(".").split(",")]
    missing = [c for c in CATEGORICAL if c not in cats]
    if missing:
        raise AdultError(f"{names_path}: no category list for {missing}")
    return cats


def _parse(path: Path) -> list[list[str]]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(COLUMNS):
            raise AdultError(f"{path}:{i}: expected {len(COLUMNS)} fields, got {len(fields)}")
        fields[-1] = fields[-1].rstrip(".")  # adult.test: '>50K.'
        rows.append(fields)
    return rows


def load_raw(src_dir: str | Path) -> tuple[list[list[str]], dict[str, int]]:
    """Rows of adult.data then adult.test without any '?' field; plus row counts."""
    src = Path(src_dir)
    out: list[list[str]] = []
    counts: dict[str, int] = {}
    for name in ("adult.data", "adult.test"):
        path = src / name
        if not path.is_file():
            raise AdultError(f"Adult source file {path} not found")
        rows = _parse(path)
        kept = [r for r in rows if "?" not in r]
        counts[f"{name}_raw"], counts[name] = len(rows), len(kept)
        out += kept
    return out, counts


def encode(rows: list[list[str]], cats: dict[str, list[str]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Unscaled features ``[N, 105]`` (numerics, then one-hots), labels, groups, column names."""
    n = len(rows)
    cols = {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}
    parts = [np.array(cols[c], dtype=np.float64)[:, None] for c in NUMERIC]
    names = list(NUMERIC)
    for c in CATEGORICAL:
        index = {v: j for j, v in enumerate(cats[c])}
        unknown = sorted(set(cols[c]) - set(index))
        if unknown:
            raise AdultError(f"column '{c}': values {unknown[:5]} are not in adult.names")
        onehot = np.zeros((n, len(index)))
        onehot[np.arange(n), [index[v] for v in cols[c]]] = 1.0
        parts.append(onehot)
        names += [f"{c}={v}" for v in cats[c]]
    income = np.array(cols["income"])
    bad = sorted(set(income) - {">50K", "<=50K"})
    if bad:
        raise AdultError(f"column 'income': unexpected values {bad[:5]}")
    label = (income == ">50K").astype(np.int64)
    group = (np.array(cols["sex"]) == "Male").astype(np.int64)
    return np.concatenate(parts, axis=1), label, group, names


class AdultData:
    """The three splits as arrays (before writing): index arrays into the encoded rows."""

    def __init__(self, x: np.ndarray, y: np.ndarray, g: np.ndarray, names: list[str],
                 seed: int, standardize: str = "all") -> None:
        n = len(y)
        perm = np.random.default_rng([seed, 0xAD017]).permutation(n)
        n_meta = n // 2
        n_pool = (n - n_meta) // 2
        self.idx = {"meta": perm[:n_meta], "pool": perm[n_meta : n_meta + n_pool],
                    "test": perm[n_meta + n_pool :]}
        scale_cols = np.ones(x.shape[1], bool) if standardize == "all" else np.isin(
            np.arange(x.shape[1]), np.arange(len(NUMERIC)))
        if standardize not in ("all", "numeric"):
            raise ValueError(f"standardize must be 'all' or 'numeric', got {standardize!r}")
        d = x[self.idx["meta"]]  # statistics from D only: no pool/test leakage
        self.mean = np.where(scale_cols, d.mean(0), 0.0)
        std = d.std(0)
        self.std = np.where(scale_cols & (std > 0), std, 1.0)
        self.x = ((x - self.mean) / self.std).astype(np.float32)
        self.y, self.g, self.names = y, g, names


def prepare_adult(out_dir: str | Path, src_dir: str | Path, *, seed: int = 0,
                  d0_size: int | None = None, standardize: str = "all") -> dict[str, Any]:
    """Write (once) the Adult splits under ``out_dir`` (module docstring); returns the manifest."""
    out = Path(out_dir)
    src = Path(src_dir)
    params = {"dataset": "adult", "seed": int(seed), "d0_size": d0_size,
              "standardize": standardize, "version": 1}
    if (out / MANIFEST).is_file():
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("params") != params:
            raise ValueError(f"{out} holds Adult data made with {manifest.get('params')}, not "
                             f"{params}; use another dataset.dir")
        return manifest
    rows, counts = load_raw(src)
    cats = read_categories(src / "adult.names")
    x, y, g, names = encode(rows, cats)
    data = AdultData(x, y, g, names, seed, standardize)
    meta_idx = data.idx["meta"]
    if d0_size is None:
        d0 = meta_idx
    else:
        if not 1 <= d0_size <= len(meta_idx):
            raise ValueError(f"dataset.d0_size must be in 1..{len(meta_idx)}, got {d0_size}")
        d0 = np.sort(np.random.default_rng([seed, 0xD0]).choice(meta_idx, d0_size, replace=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        split_rows = {"meta": np.sort(meta_idx), "test": np.sort(data.idx["test"]),
                      "pool": np.sort(np.concatenate([data.idx["pool"], d0]))}
        for split, idx in split_rows.items():
            (tmp / split).mkdir()
            table = S.feature_table(idx.astype(np.int64), data.x[idx], g[idx], y[idx])
            if split == "pool":
                table = table.append_column(INITIAL, pa.array(np.isin(idx, d0).astype(np.int8)))
            pq.write_table(table, tmp / split / "part-00000.parquet")
        digest = hashlib.sha256(data.x[np.sort(meta_idx)].tobytes()).hexdigest()[:16]
        manifest = {
            "params": params, "counts": counts, "n_features": int(x.shape[1]),
            "feature_names": names, "group_names": list(GROUP_NAMES),
            "sizes": {"meta": len(meta_idx), "pool_unlabelled": len(data.idx["pool"]),
                      "d0": len(d0), "test": len(data.idx["test"])},
            "positive_rate": {s: float(y[i].mean()) for s, i in split_rows.items()},
            "mean": data.mean.tolist(), "std": data.std.tolist(), "meta_digest": digest,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        try:
            os.rename(tmp, out)
        except OSError:
            if (out / MANIFEST).is_file():  # an identical writer won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return prepare_adult(out, src, seed=seed, d0_size=d0_size,
                                     standardize=standardize)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def adult_dir(cfg: Any, default_dir: Path) -> Path:
    """Where the Adult splits of ``cfg`` (a DatasetConfig) live."""
    if cfg.dir:
        return Path(cfg.dir)
    d0 = "all" if cfg.d0_size is None else cfg.d0_size
    return default_dir / f"adult-s{cfg.seed}-d0{d0}"


def source_dir(cfg: Any) -> Path:
    """The raw Adult files: ``dataset.src_dir``, else ``$RAYFAL_ADULT_DIR``, else
    ``../shared/data/adult`` relative to the working directory."""
    if cfg.src_dir:
        return Path(cfg.src_dir)
    return Path(os.environ.get("RAYFAL_ADULT_DIR", "../shared/data/adult"))


def open_split(cfg: Any, run_dir: str | Path, split: str):
    """Open one split (``meta``, ``pool`` or ``test``) of a prepared data set as a Pool.

    ``run_dir`` is the run directory (the data live in ``run_dir/data`` unless ``dataset.dir``
    is set). Only sources that write a ``meta/`` split (``adult``) have one.
    """
    from rayfal.data.pool import Pool

    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    if cfg.name != "adult":
        raise ValueError(f"dataset '{cfg.name}' has no '{split}' split (only 'adult' writes one)")
    root = adult_dir(cfg, Path(run_dir) / "data")
    return Pool(str(root / split / "*.parquet"), name=f"adult {split}")


def initial_row_ids(pool: Any) -> np.ndarray | None:
    """Row ids flagged ``initial = 1`` in the pool (the pre-existing labelled set D0), or
    ``None`` when the pool has no ``initial`` column."""
    if INITIAL not in pool.schema.names:
        return None
    t = pool.read_all([S.ROW_ID, INITIAL])
    return np.sort(t[S.ROW_ID][t[INITIAL].astype(bool)].astype(np.int64))


def meta_split_arrays(src_dir: str | Path, seed: int = 0, standardize: str = "all"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The meta-train split D as arrays ``(x, y, group)`` straight from the raw files in
    ``src_dir``, without writing Parquet: the same rows (sorted by row_id), order and
    standardisation as the ``meta/`` split :func:`prepare_adult` writes with ``seed`` and
    ``standardize`` (e.g. PANDA's D for ``rayfal panda-train --data adult``)."""
    src = Path(src_dir)
    rows, _ = load_raw(src)
    x, y, g, names = encode(rows, read_categories(src / "adult.names"))
    data = AdultData(x, y, g, names, seed, standardize)
    idx = np.sort(data.idx["meta"])
    return data.x[idx], data.y[idx], data.g[idx]
