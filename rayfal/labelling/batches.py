"""A query batch written for annotators: Parquet, a CSV to fill in, and a contact sheet.

``<out>/<stem>.parquet`` holds ``row_id, group, score, rank`` (plus any extra id/URI columns
of the pool); ``<out>/<stem>.csv`` the same ids with ``campaign, seed, round`` and an empty
``label`` column to fill in; for image pools ``<out>/<stem>.png`` shows every image of the
batch with its row id. Each file is written to a temporary name and renamed (a crash leaves
the old file or the new one).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class QueryBatch:
    """The rows a campaign asks to have labelled (values only)."""

    campaign: str
    seed: int
    round: int  # the round whose model chose them; -1 for the initial labelled set
    row_id: np.ndarray
    group: np.ndarray
    score: np.ndarray | None = None  # the strategy's rank order: larger first (None: initial)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # id/URI columns of the pool
    images: np.ndarray | None = None  # uint8 [n, H, W, C] for image pools

    @property
    def stem(self) -> str:
        return "initial" if self.round < 0 else f"round_{self.round:03d}"

    def table(self) -> pd.DataFrame:
        n = len(self.row_id)
        df = pd.DataFrame({"row_id": np.asarray(self.row_id, np.int64),
                           "group": np.asarray(self.group, np.int64),
                           "score": (np.full(n, np.nan) if self.score is None
                                     else np.asarray(self.score, np.float64)),
                           "rank": np.arange(1, n + 1)})
        for name, values in self.extra.items():
            df[name] = np.asarray(values)
        return df


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_batch(batch: QueryBatch, out_dir: str | Path) -> dict[str, Path]:
    """Write the batch's files into ``out_dir`` (idempotent: the same batch gives the same
    files); returns their paths by kind (``parquet``, ``csv``, ``png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = batch.table()
    paths = {"parquet": out / f"{batch.stem}.parquet", "csv": out / f"{batch.stem}.csv"}
    _atomic(paths["parquet"], lambda p: table.to_parquet(p, index=False))
    sheet = table[["row_id", "group", "rank"]].copy()
    sheet.insert(0, "campaign", batch.campaign)
    sheet.insert(1, "seed", batch.seed)
    sheet.insert(2, "round", batch.round)
    sheet["label"] = ""
    _atomic(paths["csv"], lambda p: sheet.to_csv(p, index=False))
    if batch.images is not None and len(batch.images):
        paths["png"] = out / f"{batch.stem}.png"
        _atomic(paths["png"], lambda p: contact_sheet(batch.images, batch.row_id, p))
    return paths


def contact_sheet(images: np.ndarray, row_ids: np.ndarray, path: str | Path,
                  columns: int = 10) -> None:
    """A PNG grid of ``images`` (uint8 ``[n, H, W, C]``), each titled with its row id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(str(int(row_ids[i])), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)
