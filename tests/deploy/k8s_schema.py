"""A small, offline schema and consistency check for the Kubernetes manifests.

kubeconform cannot be installed here without downloads, so this checks what matters for eusdx
by hand: the fields the API server requires for each kind we use, and the references between
documents that only fail at run time in a real cluster (a selector that matches no pod, a probe
on a port the container does not expose, a volume or Secret that does not exist, a KEDA trigger
on a queue no worker consumes). ``check_documents`` returns a list of problems; empty means OK.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["check_documents", "API_VERSIONS", "NAMESPACED"]

# kind -> the apiVersion we expect (the stable one for the Kubernetes versions we target).
API_VERSIONS: dict[str, str] = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}
NAMESPACED = set(API_VERSIONS) - {"Namespace"}
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_ACCESS_MODES = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}
GPU = "nvidia.com/gpu"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{_get(doc, 'metadata', 'name')}"


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = _get(doc, "spec", "template", "spec")
    return spec if isinstance(spec, dict) else None


def _is_eusdx_container(container: dict[str, Any]) -> bool:
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    return bool(words) and (words[0] == "eusdx" or words[0].endswith("/eusdx"))


def _queues(container: dict[str, Any]) -> set[str]:
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    out: set[str] = set()
    for i, w in enumerate(words):
        if w in ("--queues", "-Q") and i + 1 < len(words):
            out.update(q.strip() for q in words[i + 1].split(",") if q.strip())
        elif w.startswith("--queues="):
            out.update(q.strip() for q in w.split("=", 1)[1].split(",") if q.strip())
    return out


def _check_container(
    where: str,
    c: dict[str, Any],
    volumes: set[str],
    configmaps: set[str],
    secrets: dict[str, set[str]],
) -> list[str]:
    errs: list[str] = []
    cname = c.get("name")
    where = f"{where} container {cname}"
    if not cname:
        errs.append(f"{where}: container without name")
    if not c.get("image"):
        errs.append(f"{where}: no image")
    if not c.get("command") and not c.get("args"):
        errs.append(f"{where}: no command (the image's default is not a deployment decision)")
    port_names: set[str] = set()
    port_numbers: set[int] = set()
    for p in c.get("ports") or []:
        num = p.get("containerPort")
        if not isinstance(num, int) or not 0 < num < 65536:
            errs.append(f"{where}: containerPort {num!r} is not a port number")
        else:
            port_numbers.add(num)
        pname = p.get("name")
        if pname is not None:
            if len(pname) > 15 or not _PORT_NAME.match(pname):
                errs.append(f"{where}: port name {pname!r} is not a valid IANA_SVC_NAME")
            port_names.add(pname)
    for probe_key in _PROBES:
        probe = c.get(probe_key)
        if probe is None:
            continue
        handlers = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in probe]
        if len(handlers) != 1:
            errs.append(f"{where}: {probe_key} needs exactly one handler, has {handlers}")
            continue
        handler = probe[handlers[0]]
        if handlers[0] in ("httpGet", "tcpSocket"):
            port = handler.get("port")
            if isinstance(port, str) and port not in port_names:
                errs.append(f"{where}: {probe_key} uses port {port!r}, not a named container port")
            if isinstance(port, int) and port not in port_numbers:
                errs.append(f"{where}: {probe_key} uses port {port}, not a container port")
        if handlers[0] == "httpGet" and _is_eusdx_container(c) and handler.get("path") != "/healthz":
            errs.append(f"{where}: {probe_key} path {handler.get('path')!r} is not /healthz")
        if handlers[0] == "exec" and not handler.get("command"):
            errs.append(f"{where}: {probe_key} exec without command")
    for m in c.get("volumeMounts") or []:
        if m.get("name") not in volumes:
            errs.append(f"{where}: volumeMount {m.get('name')!r} has no volume")
        if not str(m.get("mountPath", "")).startswith("/"):
            errs.append(f"{where}: volumeMount {m.get('name')!r} mountPath is not absolute")
    for src in c.get("envFrom") or []:
        cm = _get(src, "configMapRef", "name")
        if cm is not None and cm not in configmaps:
            errs.append(f"{where}: envFrom ConfigMap {cm!r} is not defined")
        sec = _get(src, "secretRef", "name")
        if sec is not None and sec not in secrets:
            errs.append(f"{where}: envFrom Secret {sec!r} is not defined")
    seen_env: set[str] = set()
    for e in c.get("env") or []:
        ename = e.get("name")
        if not ename:
            errs.append(f"{where}: env entry without name")
        if ename in seen_env:
            errs.append(f"{where}: env {ename} set twice")
        seen_env.add(ename)
        ref = _get(e, "valueFrom", "secretKeyRef")
        if ref:
            keys = secrets.get(ref.get("name"))
            if keys is None:
                errs.append(f"{where}: env {ename} reads Secret {ref.get('name')!r}, not defined")
            elif ref.get("key") not in keys:
                errs.append(f"{where}: env {ename} reads key {ref.get('key')!r}, not in the Secret")
        cmref = _get(e, "valueFrom", "configMapKeyRef")
        if cmref and cmref.get("name") not in configmaps:
            errs.append(f"{where}: env {ename} reads ConfigMap {cmref.get('name')!r}, not defined")
    res = c.get("resources") or {}
    req_gpu = _get(res, "requests", GPU)
    lim_gpu = _get(res, "limits", GPU)
    if req_gpu is not None and lim_gpu is None:
        errs.append(f"{where}: {GPU} is requested but has no limit (extended resources need one)")
    if req_gpu is not None and lim_gpu is not None and str(req_gpu) != str(lim_gpu):
        errs.append(f"{where}: {GPU} request {req_gpu} differs from limit {lim_gpu}")
    return errs


def _check_pod(
    doc: dict[str, Any],
    pvcs: dict[str, dict[str, Any]],
    configmaps: set[str],
    secrets: dict[str, set[str]],
) -> list[str]:
    errs: list[str] = []
    where = _name(doc)
    pod = _pod_spec(doc)
    if pod is None:
        return [f"{where}: spec.template.spec missing"]
    containers = pod.get("containers") or []
    if not containers:
        errs.append(f"{where}: no containers")
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        errs.append(f"{where}: duplicate container names {names}")
    volumes: set[str] = set()
    for v in pod.get("volumes") or []:
        volumes.add(v.get("name"))
        claim = _get(v, "persistentVolumeClaim", "claimName")
        if claim is not None and claim not in pvcs:
            errs.append(f"{where}: volume {v.get('name')!r} uses PVC {claim!r}, not defined")
        sec = _get(v, "secret", "secretName")
        if sec is not None and sec not in secrets:
            errs.append(f"{where}: volume {v.get('name')!r} uses Secret {sec!r}, not defined")
        cm = _get(v, "configMap", "name")
        if cm is not None and cm not in configmaps:
            errs.append(f"{where}: volume {v.get('name')!r} uses ConfigMap {cm!r}, not defined")
    for c in containers:
        errs += _check_container(where, c, volumes, configmaps, secrets)
    return errs


def _check_one(doc: Any, index: int) -> list[str]:
    if not isinstance(doc, dict):
        return [f"document {index}: not a mapping"]
    errs: list[str] = []
    kind = doc.get("kind")
    where = _name(doc)
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            errs.append(f"document {index} ({where}): {key} missing")
    name = _get(doc, "metadata", "name")
    if not name:
        errs.append(f"document {index} ({where}): metadata.name missing")
    elif len(name) > 253 or not _DNS1123.match(name):
        errs.append(f"{where}: metadata.name {name!r} is not a DNS-1123 name")
    if kind not in API_VERSIONS:
        errs.append(f"{where}: unknown kind {kind!r} (known: {', '.join(sorted(API_VERSIONS))})")
        return errs
    if doc.get("apiVersion") != API_VERSIONS[kind]:
        errs.append(f"{where}: apiVersion {doc.get('apiVersion')!r}, expected {API_VERSIONS[kind]!r}")
    if kind in NAMESPACED and _get(doc, "metadata", "namespace") != "eusdx":
        errs.append(f"{where}: metadata.namespace must be 'eusdx'")
    return errs


def check_documents(docs: list[Any]) -> list[str]:
    """Check a set of manifests that are deployed together.

    Parameters
    ----------
    docs
        Every parsed YAML document of the deployment (including the example Secrets, which
        declare the Secret names and keys the workloads may reference).

    Returns
    -------
    list of str
        One message per problem, naming the object; empty when everything checks out.
    """
    errs: list[str] = []
    for i, doc in enumerate(docs):
        errs += _check_one(doc, i)
    docs = [d for d in docs if isinstance(d, dict)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(str(d.get("kind")), []).append(d)
    seen: set[tuple[str, str]] = set()
    for d in docs:
        key = (str(d.get("kind")), str(_get(d, "metadata", "name")))
        if key in seen:
            errs.append(f"{_name(d)}: defined twice")
        seen.add(key)

    pvcs = {_get(d, "metadata", "name"): d for d in by_kind.get("PersistentVolumeClaim", [])}
    configmaps = {_get(d, "metadata", "name") for d in by_kind.get("ConfigMap", [])}
    secrets = {
        _get(d, "metadata", "name"): set((d.get("stringData") or {}) | (d.get("data") or {}))
        for d in by_kind.get("Secret", [])
    }

    for d in by_kind.get("PersistentVolumeClaim", []):
        modes = _get(d, "spec", "accessModes") or []
        if not modes or not set(modes) <= _ACCESS_MODES:
            errs.append(f"{_name(d)}: accessModes {modes!r} invalid")
        if not _get(d, "spec", "resources", "requests", "storage"):
            errs.append(f"{_name(d)}: spec.resources.requests.storage missing")

    deployments = {_get(d, "metadata", "name"): d for d in by_kind.get("Deployment", [])}
    for d in by_kind.get("Deployment", []):
        selector = _get(d, "spec", "selector", "matchLabels") or {}
        labels = _get(d, "spec", "template", "metadata", "labels") or {}
        if not selector:
            errs.append(f"{_name(d)}: spec.selector.matchLabels missing")
        for k, v in selector.items():
            if labels.get(k) != v:
                errs.append(f"{_name(d)}: selector {k}={v} does not match the pod template labels")
        errs += _check_pod(d, pvcs, configmaps, secrets)
    for d in by_kind.get("Job", []):
        errs += _check_pod(d, pvcs, configmaps, secrets)
        policy = _get(d, "spec", "template", "spec", "restartPolicy")
        if policy not in ("Never", "OnFailure"):
            errs.append(f"{_name(d)}: a Job's restartPolicy must be Never or OnFailure, not {policy!r}")

    for s in by_kind.get("Service", []):
        spec = s.get("spec") or {}
        if spec.get("type") == "ExternalName":
            if not spec.get("externalName"):
                errs.append(f"{_name(s)}: ExternalName Service without externalName")
            continue
        ports = spec.get("ports") or []
        if not ports:
            errs.append(f"{_name(s)}: no ports")
        selector = spec.get("selector") or {}
        targets = [
            d
            for d in by_kind.get("Deployment", [])
            if selector
            and all(
                (_get(d, "spec", "template", "metadata", "labels") or {}).get(k) == v
                for k, v in selector.items()
            )
        ]
        if not targets:
            errs.append(f"{_name(s)}: selector {selector} matches no Deployment's pods")
        named = {
            p.get("name"): p.get("containerPort")
            for d in targets
            for c in (_pod_spec(d) or {}).get("containers") or []
            for p in c.get("ports") or []
        }
        for p in ports:
            if not isinstance(p.get("port"), int):
                errs.append(f"{_name(s)}: port {p!r} has no numeric port")
            target = p.get("targetPort", p.get("port"))
            if isinstance(target, str) and targets and target not in named:
                errs.append(f"{_name(s)}: targetPort {target!r} is not a container port name")
            if isinstance(target, int) and targets and target not in named.values():
                errs.append(f"{_name(s)}: targetPort {target} is not a container port")
        if len(ports) > 1 and any(not p.get("name") for p in ports):
            errs.append(f"{_name(s)}: several ports need a name each")

    for so in by_kind.get("ScaledObject", []):
        target = _get(so, "spec", "scaleTargetRef", "name")
        dep = deployments.get(target)
        if dep is None:
            errs.append(f"{_name(so)}: scaleTargetRef {target!r} is not a Deployment here")
            continue
        triggers = _get(so, "spec", "triggers") or []
        if not triggers:
            errs.append(f"{_name(so)}: no triggers")
        consumed = set().union(*(_queues(c) for c in (_pod_spec(dep) or {}).get("containers", [])))
        for t in triggers:
            if t.get("type") in ("redis", "redis-cluster"):
                queue = _get(t, "metadata", "listName")
                if queue not in consumed:
                    errs.append(
                        f"{_name(so)}: trigger on list {queue!r}, but {target} consumes {sorted(consumed)}"
                    )
                if not (_get(t, "metadata", "address") or _get(t, "metadata", "addressFromEnv")
                        or _get(t, "metadata", "host")):
                    errs.append(f"{_name(so)}: redis trigger without address")
        lo = _get(so, "spec", "minReplicaCount") or 0
        hi = _get(so, "spec", "maxReplicaCount") or 100
        if lo > hi:
            errs.append(f"{_name(so)}: minReplicaCount {lo} > maxReplicaCount {hi}")
    return errs
