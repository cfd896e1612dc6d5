"""The Oracle protocol: label answers, partial answers, and the simulated oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rayfal
from rayfal.campaign.oracle import (
    AwaitingLabels,
    LabelAnswer,
    Oracle,
    SimulatedOracle,
)
from rayfal.campaign.oracles import make_oracle
from rayfal.data.pool import Pool


def _pool(tmp_path: Path, label: bool = True) -> Pool:
    ids = np.array([5, 9, 2, 7])
    glob = rayfal.write_pool(tmp_path / "pool", row_id=ids, group=np.array([0, 1, 0, 1]),
                             features=np.eye(4, dtype=np.float32),
                             label=np.array([1, 0, 3, 2]) if label else None)
    return Pool(str(glob))


def test_simulated_oracle_reveals_hidden_labels_in_request_order(tmp_path: Path) -> None:
    oracle = SimulatedOracle(_pool(tmp_path))
    assert isinstance(oracle, Oracle)
    ans = oracle.labels_for(np.array([7, 5, 2]))
    assert ans.source == "simulated"
    np.testing.assert_array_equal(ans.labels_in_order(np.array([7, 5, 2])), [2, 1, 3])
    np.testing.assert_array_equal(ans.labels_in_order(np.array([2, 7, 5])), [3, 2, 1])
    assert len(oracle.labels_for(np.zeros(0, np.int64)).row_id) == 0


def test_simulated_oracle_needs_a_label_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no hidden 'label' column"):
        make_oracle("simulated", _pool(tmp_path, label=False))
    with pytest.raises(ValueError, match="unknown oracle 'people'"):
        make_oracle("people", _pool(tmp_path / "b"))


def test_partial_answer_says_what_is_missing() -> None:
    ans = LabelAnswer(np.array([3, 1]), np.array([0, 1]), "human")
    np.testing.assert_array_equal(ans.missing(np.array([1, 2, 3, 4])), [2, 4])
    with pytest.raises(AwaitingLabels, match="awaiting 2 of 4 labels") as info:
        ans.labels_in_order(np.array([1, 2, 3, 4]))
    assert (info.value.missing, info.value.requested) == (2, 4)
    np.testing.assert_array_equal(ans.labels_in_order(np.array([1, 3])), [1, 0])
