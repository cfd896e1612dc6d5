"""The oracle of a job's ``oracle`` section, for one campaign."""

from __future__ import annotations

from pathlib import Path

from rayfal.campaign.label_studio_oracle import LabelStudioOracle
from rayfal.campaign.oracle import Oracle, PeopleOracle, SimulatedOracle
from rayfal.data.ledger import LabelLedger


def make_oracle(cfg_oracle, pool, *, ledger: LabelLedger | None = None,
                queries_dir: Path | None = None, num_classes: int = 2) -> Oracle:
    """The oracle of a job's ``oracle`` section for one campaign (its ledger and query
    folder are needed by the oracles backed by people)."""
    kind = getattr(cfg_oracle, "kind", cfg_oracle)
    if kind == "simulated":
        return SimulatedOracle(pool)
    if kind in ("files", "label_studio"):
        if ledger is None or queries_dir is None:
            raise ValueError(f"oracle.kind: {kind} needs the campaign's ledger and query folder")
        if kind == "label_studio":
            return LabelStudioOracle(cfg_oracle, pool, ledger, queries_dir,
                                     num_classes=num_classes)
        return PeopleOracle(pool, ledger, queries_dir,
                            aggregation=getattr(cfg_oracle, "aggregation", "none"))
    raise ValueError(f"oracle.kind: unknown oracle {kind!r}; known: files, label_studio, "
                     "simulated")
