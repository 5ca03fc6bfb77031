"""The Kubernetes manifests: offline schema check, cross-references, and the eusdx-specific shape."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy._refs import K8S, k8s_manifest_files, load_yaml_docs
from tests.deploy.k8s_schema import GPU, check_documents


def _all_docs() -> list[dict[str, Any]]:
    return [d for p in k8s_manifest_files() for d in load_yaml_docs(p)]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"{kind}/{name} not found in deploy/kubernetes")


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def _words(c: dict[str, Any]) -> list[str]:
    return [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]


def _deployment_running(docs: list[dict[str, Any]], *words: str) -> dict[str, Any]:
    hits = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(all(w in _words(c) for w in words) for c in _containers(d))
    ]
    assert len(hits) == 1, f"expected one Deployment running {words}, found {len(hits)}"
    return hits[0]


def test_every_manifest_passes_the_schema_check() -> None:
    docs = _all_docs()
    assert len(docs) >= 12
    assert check_documents(docs) == []


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    on_disk = {p.name for p in k8s_manifest_files()}
    assert listed <= on_disk, f"listed but missing: {listed - on_disk}"
    assert on_disk - listed == {"secret.example.yaml"}
    # No placeholder secret may ever be applied by `kubectl apply -k`.
    for name in listed:
        for doc in load_yaml_docs(K8S / name):
            assert doc["kind"] != "Secret", f"{name} defines a Secret"


def test_kustomize_renders_when_kubectl_is_present() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the Python schema check above still ran")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds.count("Deployment") == 4
    assert all(d["metadata"].get("namespace") == "eusdx" for d in rendered if d["kind"] != "Namespace")


def test_node_exposes_dicom_and_http_with_healthz_probes() -> None:
    docs = _all_docs()
    node = _deployment_running(docs, "eusdx", "serve")
    assert node["spec"]["replicas"] == 1
    assert node["spec"]["strategy"]["type"] == "Recreate"
    (c,) = _containers(node)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"dicom": 11112, "http": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    svc = _find(docs, "Service", "eusdx-node")
    assert {p["port"] for p in svc["spec"]["ports"]} == {11112, 8080}
    env = {e["name"]: e for e in c["env"]}
    assert env["EUSDX_TLS_REQUIRE_CLIENT_CERT"]["value"] == "true"
    cm = _find(docs, "ConfigMap", "eusdx-config")["data"]
    assert cm["EUSDX_HTTP_HOST"] == "0.0.0.0", "the HTTP API must listen beyond loopback in a pod"
    assert int(cm["EUSDX_DICOM_PORT"]) == 11112 and int(cm["EUSDX_HTTP_PORT"]) == 8080


def test_spool_is_a_shared_rwx_claim_mounted_by_node_and_analysis_workers() -> None:
    docs = _all_docs()
    spool = _find(docs, "PersistentVolumeClaim", "eusdx-spool")
    assert spool["spec"]["accessModes"] == ["ReadWriteMany"]
    cm = _find(docs, "ConfigMap", "eusdx-config")["data"]
    for words in (("eusdx", "serve"), ("--queues", "analysis")):
        dep = _deployment_running(docs, *words)
        pod = dep["spec"]["template"]["spec"]
        claim_vols = {
            v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "eusdx-spool"
        }
        mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in claim_vols}
        assert cm["EUSDX_SPOOL_DIR"] in mounts, f"{dep['metadata']['name']} does not mount the spool"


def test_gpu_worker_requests_a_gpu_and_export_worker_does_not() -> None:
    docs = _all_docs()
    gpu = _deployment_running(docs, "--queues", "analysis")
    (c,) = _containers(gpu)
    assert int(c["resources"]["requests"][GPU]) >= 1
    assert c["resources"]["limits"][GPU] == c["resources"]["requests"][GPU]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in gpu["spec"]["template"]["spec"]["tolerations"]
    export = _deployment_running(docs, "--queues", "export")
    for c in _containers(export):
        assert GPU not in (c.get("resources") or {}).get("requests", {})
    # A worker killed mid-study loses its late-acked message only after the grace period.
    assert gpu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 900


def test_keda_scales_the_gpu_workers_on_the_analysis_queue() -> None:
    docs = _all_docs()
    so = _find(docs, "ScaledObject", "eusdx-worker-gpu")
    gpu = _deployment_running(docs, "--queues", "analysis")
    assert so["spec"]["scaleTargetRef"]["name"] == gpu["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "analysis"
    assert trigger["metadata"]["address"].startswith("eusdx-redis.")
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]


def test_redis_and_postgres_are_external_by_default() -> None:
    docs = _all_docs()
    for name in ("eusdx-redis", "eusdx-postgres"):
        assert _find(docs, "Service", name)["spec"]["type"] == "ExternalName"
    assert not [d for d in docs if d["kind"] in ("StatefulSet",)]
    example = _find(docs, "Secret", "eusdx-secrets")["stringData"]
    assert "@eusdx-postgres:5432/" in example["database-url"]
    assert example["broker-url"].startswith("redis://eusdx-redis:6379/")


# --- the checker itself must catch what it claims to catch ------------------------------------

Mutation = Callable[[list[dict[str, Any]]], None]


def _dep(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _find(docs, "Deployment", name)


def _c(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _containers(_dep(docs, name))[0]


MUTATIONS: list[tuple[str, Mutation, str]] = [
    (
        "selector",
        lambda d: _dep(d, "eusdx-node")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "other"}
        ),
        r"selector .* does not match the pod template labels",
    ),
    (
        "probe-port",
        lambda d: _c(d, "eusdx-node")["livenessProbe"]["httpGet"].update({"port": "web"}),
        r"livenessProbe uses port 'web', not a named container port",
    ),
    (
        "probe-path",
        lambda d: _c(d, "eusdx-node")["readinessProbe"]["httpGet"].update({"path": "/health"}),
        r"readinessProbe path '/health' is not /healthz",
    ),
    (
        "gpu-limit",
        lambda d: _c(d, "eusdx-worker-gpu")["resources"]["limits"].pop(GPU),
        r"nvidia.com/gpu is requested but has no limit",
    ),
    (
        "no-command",
        lambda d: _c(d, "eusdx-worker-export").pop("command"),
        r"container worker: no command",
    ),
    (
        "no-image",
        lambda d: _c(d, "eusdx-worker-export").pop("image"),
        r"container worker: no image",
    ),
    (
        "pvc",
        lambda d: _dep(d, "eusdx-node")["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"].update(
            {"claimName": "spool"}
        ),
        r"uses PVC 'spool', not defined",
    ),
    (
        "secret-key",
        lambda d: _c(d, "eusdx-node")["env"][0]["valueFrom"]["secretKeyRef"].update({"key": "db-url"}),
        r"reads key 'db-url', not in the Secret",
    ),
    (
        "keda-queue",
        lambda d: _find(d, "ScaledObject", "eusdx-worker-gpu")["spec"]["triggers"][0]["metadata"].update(
            {"listName": "celery"}
        ),
        r"trigger on list 'celery', but eusdx-worker-gpu consumes \['analysis'\]",
    ),
    (
        "service-target",
        lambda d: _find(d, "Service", "eusdx-node")["spec"]["ports"][0].update({"targetPort": "dcm"}),
        r"targetPort 'dcm' is not a container port name",
    ),
    (
        "unknown-kind",
        lambda d: d.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "eusdx"}}),
        r"unknown kind 'Pod'",
    ),
    (
        "missing-name",
        lambda d: d[0]["metadata"].pop("name"),
        r"metadata.name missing",
    ),
    (
        "api-version",
        lambda d: _dep(d, "eusdx-node").update({"apiVersion": "extensions/v1beta1"}),
        r"apiVersion 'extensions/v1beta1', expected 'apps/v1'",
    ),
    (
        "namespace",
        lambda d: _dep(d, "eusdx-node")["metadata"].update({"namespace": "default"}),
        r"metadata.namespace must be 'eusdx'",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in MUTATIONS], ids=[i for i, _, _ in MUTATIONS])
def test_schema_check_reports_each_broken_manifest(mutate: Mutation, expected: str) -> None:
    import re

    docs = copy.deepcopy(_all_docs())
    mutate(docs)
    errors = check_documents(docs)
    assert any(re.search(expected, e) for e in errors), errors
