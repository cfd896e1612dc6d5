"""A campaign's open query, kept on disk while people label it (``pending.json``).

Written atomically before the batch is handed to the oracle, removed after the round record
and the ledger commit. A crash at any point leaves either no pending query (nothing asked yet,
or the round finished) or the pending one, which ``--resume`` asks about again (requests are
idempotent). A pending query older than the last round record is stale and dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rayfal.atomic import atomic_write_text

PENDING = "pending.json"


@dataclass
class PendingQuery:
    """``round`` -1 is the initial labelled set; otherwise the round whose model chose the
    rows. ``record`` is that round's record without its labels (a query round)."""

    round: int
    row_id: list[int]
    group: list[int]
    num_classes: int
    score: list[float] | None = None
    record: dict | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return "initial" if self.round < 0 else f"round_{self.round:03d}"


def read_pending(campaign_dir: Path) -> PendingQuery | None:
    path = Path(campaign_dir) / PENDING
    if not path.is_file():
        return None
    try:
        return PendingQuery(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable pending query ({exc})") from None


def write_pending(campaign_dir: Path, pending: PendingQuery) -> None:
    atomic_write_text(Path(campaign_dir) / PENDING, json.dumps(asdict(pending)))


def clear_pending(campaign_dir: Path) -> None:
    (Path(campaign_dir) / PENDING).unlink(missing_ok=True)
