"""cluster.yaml is a valid Ray cluster-launcher config (checked offline, no cloud call)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_the_launcher_schema():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = _validate(cfg)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head_cpu"
    assert types["worker_gpu"]["max_workers"] >= 1
    assert any("rayfal" in c for c in prepared["setup_commands"])
    assert "/home/ray/rayfal" in prepared["file_mounts"]


def test_the_schema_check_catches_a_broken_config():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["worker_gpu"]["min_wokers"] = 1  # typo
    with pytest.raises(Exception, match="min_wokers"):
        _validate(cfg)
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["head_node_type"] = "missing"
    with pytest.raises(Exception):  # noqa: B017 - the launcher raises ValueError/KeyError
        _validate(cfg)


def test_kuberay_manifest_is_a_rayjob_running_rayfal():
    doc = yaml.safe_load((ROOT / "docs" / "kuberay-rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob" and doc["apiVersion"] == "ray.io/v1"
    assert "rayfal.cli run jobs/quickstart.yaml" in doc["spec"]["entrypoint"]
    assert (ROOT / "jobs" / "quickstart.yaml").is_file()
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
