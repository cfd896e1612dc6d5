"""cluster.yaml is a valid Ray cluster-launcher config (checked offline, no cloud call) that
shares one token between all nodes and keeps Ray's ports private; docs/kuberay-rayjob.yaml is a
RayJob with KubeRay's token auth and a shared volume (checked against KubeRay's RayJob CRD
schema when ``RAYFAL_KUBERAY_CRD`` names a ``ray.io_rayjobs.yaml``: no Python package ships it).
"""

from __future__ import annotations

import copy
import os
import shlex
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


def test_cluster_yaml_shares_one_token_and_keeps_ray_ports_private():
    text = (ROOT / "cluster.yaml").read_text()
    cfg = _validate(yaml.safe_load(text))
    # Ray's token guide for `ray up`: the locally generated ~/.ray/auth_token is file-mounted
    # to every node, and token mode is on for every `ray start` and shell
    mounts = {k: v for k, v in cfg["file_mounts"].items() if k.endswith("/.ray/auth_token")}
    assert list(mounts.values()) == ["~/.ray/auth_token"], cfg["file_mounts"]
    assert "ray get-auth-token --generate" in text
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if " ray start" in f" {cmd}":
            assert cmd.startswith("RAY_AUTH_MODE=token "), cmd
            assert "RAY_AUTH_TOKEN=" not in cmd  # never a literal token in the config
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["setup_commands"])
    assert any("chmod 600 ~/.ray/auth_token" in c for c in cfg["setup_commands"])
    head = next(c for c in cfg["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in shlex.split(head)
    # private network: internal IPs, and no security-group rule that opens a port
    provider = cfg["provider"]
    assert provider["use_internal_ips"] is True
    assert provider["security_group"]["GroupName"]
    assert not provider["security_group"].get("IpPermissions")
    for port in ("6379", "8265", "10001", "52365"):
        assert port in text.split("Ports that must stay private")[1].split("cluster_name")[0]


def _rayjob_docs() -> tuple[dict, list[dict]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "docs" / "kuberay-rayjob.yaml").read_text())
            if d]
    rayjobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(rayjobs) == 1
    return rayjobs[0], docs


def test_kuberay_manifest_is_a_rayjob_running_rayfal():
    doc, _ = _rayjob_docs()
    assert doc["kind"] == "RayJob" and doc["apiVersion"] == "ray.io/v1"
    assert "rayfal.cli run jobs/quickstart.yaml" in doc["spec"]["entrypoint"]
    assert (ROOT / "jobs" / "quickstart.yaml").is_file()
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + \
        [w["template"]["spec"] for w in spec["workerGroupSpecs"]]


def test_kuberay_uses_token_auth_and_a_shared_run_dir():
    doc, docs = _rayjob_docs()
    cluster = doc["spec"]["rayClusterSpec"]
    # KubeRay's authOptions: the operator creates the Secret and sets RAY_AUTH_MODE /
    # RAY_AUTH_TOKEN on every Ray container and on the submitter (KubeRay >= 1.5.1)
    assert cluster["authOptions"]["mode"] == "token"
    major, minor = (int(x) for x in cluster["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)
    for pod in _pod_specs(doc):
        for c in pod["containers"]:
            names = {e["name"] for e in c.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, c["name"]  # one source
    # the submitter Job reaches the dashboard through the head Service: not bound to loopback
    assert cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0") not in \
        ("127.0.0.1", "localhost")
    # the run directory is on a volume that the head and every worker mount
    argv = shlex.split(doc["spec"]["entrypoint"])
    run_dir = argv[argv.index("--run-dir") + 1]
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    for pod in _pod_specs(doc):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = [m for m in pod["containers"][0]["volumeMounts"]
                  if run_dir.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mounts, (run_dir, pod["containers"][0]["name"])
        claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]


def _unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Keys the CRD schema does not define (what ``kubectl apply --validate=strict`` rejects;
    plain JSON Schema validation of a CRD accepts them, the API server prunes them)."""
    out: list[str] = []
    if isinstance(value, dict) and "properties" in schema and \
            not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema["properties"]
        for key, sub in value.items():
            if key not in props:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_fields(sub, props[key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def _crd_schema() -> dict:
    crd_path = os.environ.get("RAYFAL_KUBERAY_CRD")
    if not crd_path:
        pytest.skip("set RAYFAL_KUBERAY_CRD to KubeRay's ray-operator/config/crd/bases/"
                    "ray.io_rayjobs.yaml to check the manifest against the CRD's schema")
    crd = yaml.safe_load(Path(crd_path).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def test_kuberay_manifest_passes_the_rayjob_crd_schema():
    import jsonschema

    schema = _crd_schema()
    doc, _ = _rayjob_docs()
    jsonschema.validate(doc, schema)
    assert _unknown_fields(doc, schema) == []
    broken = copy.deepcopy(doc)
    broken["spec"]["rayClusterSpec"]["authOption"] = broken["spec"]["rayClusterSpec"].pop(
        "authOptions")
    assert _unknown_fields(broken, schema) == [".spec.rayClusterSpec.authOption"]
    broken = copy.deepcopy(doc)
    broken["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    with pytest.raises(jsonschema.ValidationError, match="tokens"):
        jsonschema.validate(broken, schema)
