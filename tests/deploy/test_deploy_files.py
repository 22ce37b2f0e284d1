"""Deployment descriptions stay consistent: compose, Dockerfile, Prometheus and the kustomize base.

Docker and Kubernetes do not run on these machines; these checks parse the files and hold them to
what the services actually need (targets, health checks, probes on the right ports, non-root).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TSMESH = {"auth": 50053, "ingest": 50051, "query": 50052}
METRICS = {"auth": 9103, "ingest": 9101, "query": 9102, "gateway": 8080}


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dockerfile_targets() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE))


def test_compose_names_every_service_with_a_healthcheck() -> None:
    compose = load("docker-compose.yml")
    services: dict[str, dict[str, Any]] = compose["services"]
    assert {"postgres", "redis", "kafka", "auth", "ingest", "ingest-writer", "query", "gateway", "prometheus"} <= set(
        services
    )
    assert services["postgres"]["image"].startswith(("postgres:", "timescale/timescaledb"))
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot set-up jobs (migrations, topics, tokens) end instead of serving
            assert svc["command"][0] in ("migrate", "create-topics") or name == "setup", name
            continue
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_compose_builds_each_service_from_its_dockerfile_target() -> None:
    services = load("docker-compose.yml")["services"]
    targets = dockerfile_targets()
    assert {"auth", "ingest", "query", "gateway"} <= targets
    for name, svc in services.items():
        if "build" in svc:
            assert svc["build"]["target"] in targets, name
            assert svc["image"] == f"tsmesh-{svc['build']['target']}:dev", name
    for name in ("auth", "ingest", "ingest-writer", "query", "gateway"):
        env = services[name]["environment"]
        if name != "gateway":
            assert int(env["TSMESH_GRPC_PORT"]) == TSMESH[name.removesuffix("-writer")]
            assert env["TSMESH_GRPC_HOST"] == "0.0.0.0"
    assert services["ingest-writer"]["environment"]["TSMESH_INGEST_MODE"] == "writer"


def test_dockerfile_runtime_is_slim_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)
    assert re.search(r"^USER 10001", text, flags=re.MULTILINE)
    for target in ("auth", "ingest", "query", "gateway"):
        stage = text.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"--from=build-{target} /opt/venv" in stage
        assert "HEALTHCHECK" in stage and f'"tsmesh_{target}"' in stage


def test_prometheus_scrapes_every_service_metrics_port() -> None:
    config = load("deploy/prometheus/prometheus.yml")
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name, port in METRICS.items():
        assert f"{name}:{port}" in targets
    assert "ingest-writer:9101" in targets
    compose = load("docker-compose.yml")
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in compose["services"]["prometheus"]["volumes"]
    )


def test_compose_prometheus_writes_into_tsmesh_with_the_setup_jobs_token() -> None:
    """Self-monitoring: the remote_write token file is one the setup job writes, mounted read-only."""
    (remote,) = load("deploy/prometheus/prometheus.yml")["remote_write"]
    assert remote["url"] == "http://gateway:8080/api/v1/write"
    compose = load("docker-compose.yml")["services"]
    setup = compose["setup"]
    script = setup["command"][0]
    assert "prometheus:write" in script and "grafana:read" in script
    assert "tokens:/tokens" in setup["volumes"]
    token_file = Path(remote["authorization"]["credentials_file"])
    assert f"tokens:{token_file.parent}:ro" in compose["prometheus"]["volumes"]
    assert token_file.name == "prometheus.token"
    for consumer in ("prometheus", "grafana"):
        assert compose[consumer]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}


def test_grafana_provisions_tsmesh_as_a_prometheus_data_source_with_its_read_token() -> None:
    sources = {s["uid"]: s for s in load("deploy/grafana/provisioning/datasources/prometheus.yaml")["datasources"]}
    tsmesh = sources["tsmesh"]
    assert tsmesh["type"] == "prometheus" and tsmesh["url"] == "http://gateway:8080"
    assert tsmesh["jsonData"]["httpHeaderName1"] == "Authorization"
    assert tsmesh["secureJsonData"]["httpHeaderValue1"] == "Bearer ${TSMESH_GRAFANA_TOKEN}"
    grafana = load("docker-compose.yml")["services"]["grafana"]
    assert "tokens:/etc/grafana/tokens:ro" in grafana["volumes"]
    assert "TSMESH_GRAFANA_TOKEN=$$(cat /etc/grafana/tokens/grafana.token)" in grafana["entrypoint"][-1]


@pytest.mark.parametrize("board", sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")), ids=str)
def test_every_dashboard_panel_reads_the_chosen_data_source(board: Path) -> None:
    """Each dashboard works over Prometheus or over tsmesh: every panel uses the $datasource variable."""
    dashboard = json.loads(board.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "datasource" and variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] in {"prometheus", "tsmesh"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def kustomize_docs() -> list[dict[str, Any]]:
    base = ROOT / "k8s" / "base"
    kustomization = load("k8s/base/kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = base / resource
        assert path.is_file(), f"kustomization lists missing {resource}"
        docs.extend(load_all(path))
    return docs


def test_kustomization_lists_existing_files_and_every_yaml_is_listed() -> None:
    kustomization = load("k8s/base/kustomization.yaml")
    assert kustomize_docs()
    on_disk = {p.name for p in (ROOT / "k8s" / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(kustomization["resources"])


DEPLOYMENTS = ["auth", "ingest", "ingest-writer", "query", "gateway"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_each_deployment_has_probes_resources_non_root_and_a_service(name: str) -> None:
    docs = kustomize_docs()
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container[probe]
        if name == "gateway":
            assert spec["httpGet"]["port"] == "http"
            assert spec["httpGet"]["path"] == "/healthz"  # readiness must not follow the upstreams
        else:
            assert spec["grpc"]["port"] == ports["grpc"] == TSMESH[name.removesuffix("-writer")]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    if name == "ingest-writer":
        assert env["TSMESH_INGEST_MODE"] == "writer"
    if name != "gateway":
        assert env["TSMESH_GRPC_PORT"] == str(ports["grpc"])
        assert env["TSMESH_METRICS_PORT"] == str(ports["metrics"])
    service_ports = {p["targetPort"] for p in service["spec"]["ports"]}
    assert service_ports <= set(ports)
