"""The container image recipe and the Kubernetes examples say what the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.config.loader import parse_config
from watcher.config.operations import split_listen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()))
    return {doc["kind"]: doc for doc in docs if doc}


def stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split by FROM."""
    text = re.sub(r"\\\n", " ", dockerfile)
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    built = stages((DEPLOY / "Dockerfile").read_text())
    assert len(built) >= 2
    final = built[-1]
    assert re.fullmatch(r"FROM python:3\.1[1-9]-slim( AS \w+)?", final[0])
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    health = [line for line in final if line.startswith("HEALTHCHECK")]
    assert len(health) == 1
    assert '"run-watcher", "health"' in health[0]
    # No compilers or package installs in the final image; only the built venv is copied.
    joined = "\n".join(final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in joined
    assert "COPY --from=build /opt/run-watcher /opt/run-watcher" in final
    listen = re.search(r"WATCHER_HTTP_LISTEN=(\S+)", joined)
    assert listen is not None
    assert f"EXPOSE {split_listen(listen.group(1))[1]}" in final


def _watcher_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == "run-watcher")


def _config_of(docs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    secret = docs["Secret"]["stringData"]
    for key, value in secret.items():
        monkeypatch.setenv(key, value)
    return parse_config(docs["ConfigMap"]["data"]["watcher.yaml"], "configmap")


def _check_probes_and_secrets(
    docs: dict[str, dict[str, Any]], pod: dict[str, Any], config: Any
) -> None:
    container = _watcher_container(pod)
    port = split_listen(config.http.listen)[1]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    secret_name = docs["Secret"]["metadata"]["name"]
    assert {"secretRef": {"name": secret_name}} in container["envFrom"]
    assert {"PARALLEL_API_KEY", "TRIGGER_SECRET_KEY"} <= set(docs["Secret"]["stringData"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WATCHER_CONFIG"] == "/etc/run-watcher/watcher.yaml"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "/etc/run-watcher" in mounts
    assert env["WATCHER_STATE_FILE"].startswith("/var/lib/run-watcher/")
    assert "/var/lib/run-watcher" in mounts
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert (
        volumes[mounts["/etc/run-watcher"]]["configMap"]["name"]
        == (docs["ConfigMap"]["metadata"]["name"])
    )
    security = container["securityContext"]
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_sidecar_example(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = documents("sidecar.yaml")
    assert set(docs) == {"ConfigMap", "Secret", "Deployment"}
    config = _config_of(docs, monkeypatch)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    _check_probes_and_secrets(docs, pod, config)
    # Beyond loopback, the watch API needs the token: the Secret carries it.
    assert config.http.watch_api is True
    assert "WATCHER_API_TOKEN" in docs["Secret"]["stringData"]
    app = next(c for c in pod["containers"] if c["name"] != "run-watcher")
    app_env = {e["name"]: e for e in app["env"]}
    assert (
        app_env["WATCHER_URL"]["value"] == f"http://localhost:{split_listen(config.http.listen)[1]}"
    )


def test_statefulset_example_shards_by_pod_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = documents("statefulset.yaml")
    assert set(docs) == {"ConfigMap", "Secret", "Service", "StatefulSet"}
    config = _config_of(docs, monkeypatch)
    sts = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == config.shard.count
    assert config.shard.index is None  # taken from the pod name
    assert sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    pod = sts["spec"]["template"]["spec"]
    _check_probes_and_secrets(docs, pod, config)
    env = {e["name"]: e for e in _watcher_container(pod)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert "state" in claims


def test_cluster_example_runs_replicas_on_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cluster.yaml").read_text()))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs if d}
    secret = by_name[("Secret", "run-watcher-cluster-keys")]
    for key, value in secret["stringData"].items():
        monkeypatch.setenv(key, value)
    config = parse_config(
        by_name[("ConfigMap", "run-watcher-cluster")]["data"]["watcher.yaml"], "configmap"
    )
    assert config.cluster is not None
    assert config.shard.count == 1  # the cluster assigns the watches itself
    assert config.cluster.password() == secret["stringData"]["REDIS_PASSWORD"]
    # The Redis URL names the Service in front of Redis, on its port.
    service = by_name[("Service", "run-watcher-redis")]
    assert config.cluster.where() == f"redis://{service['metadata']['name']}:6379/0"
    assert service["spec"]["ports"][0]["port"] == 6379
    watchers = by_name[("Deployment", "run-watcher")]
    assert watchers["spec"]["replicas"] == 3
    pod = watchers["spec"]["template"]["spec"]
    container = _watcher_container(pod)
    env = {e["name"]: e for e in container["env"]}
    # Each replica's cluster name is its pod's, so names are unique.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"secretRef": {"name": "run-watcher-cluster-keys"}} in container["envFrom"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert config.http.listen is not None
    assert container["ports"][0]["containerPort"] == split_listen(config.http.listen)[1]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
