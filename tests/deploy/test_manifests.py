"""The rendered overlays hold the production rules of issue 15: a PDB and a NetworkPolicy per
Deployment, no ``latest`` image, production images by digest, drain-covering grace periods, set-up
Jobs instead of per-replica migrations, and alerts that each have a runbook section and a test.

Overlays are rendered with ``kubectl kustomize`` (on the machines; ``make check-deploy`` validates
the same renders against the Kubernetes 1.29 and 1.32 schemas).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "staging", "production")
NAME = "app.kubernetes.io/name"


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the overlays (make check-deploy)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels")) and selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_pdb_and_its_own_network_policy(overlay: str) -> None:
    docs = render(overlay)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    policies = of_kind(docs, "NetworkPolicy")
    assert any(p["metadata"]["name"] == "tsmesh-deny-all" for p in policies)
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        name = deployment["metadata"]["name"]
        assert any(selects(p["spec"]["selector"], labels) for p in pdbs), name
        own = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get(NAME) == labels[NAME]]
        assert own, f"{overlay}: no NetworkPolicy of its own for {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_latest_images_and_production_pins_digests(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            image = container["image"]
            assert not image.endswith(":latest") and (":" in image.rsplit("/", 1)[-1] or "@" in image), image
            if overlay == "production" and image.split("/")[0].count(".") > 0 and "tsmesh" in image:
                assert re.search(r"@sha256:[0-9a-f]{64}$", image), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_drain_within_their_grace_and_nothing_migrates_per_replica(overlay: str) -> None:
    docs = render(overlay)
    config = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("tsmesh-config-"))
    drain = float(config["data"]["TSMESH_SHUTDOWN_DRAIN_SECONDS"])
    grace = float(config["data"]["TSMESH_SHUTDOWN_GRACE_SECONDS"])
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert "initContainers" not in pod, deployment["metadata"]["name"]
        (container,) = pod["containers"]
        sleep = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] >= sleep + drain + grace + 5
        refs = [e.get("secretRef", {}).get("name") for e in container["envFrom"]]
        assert any(refs), "credentials come from a Secret"
        assert all(e["name"] != "TSMESH_DATABASE_URL" for e in container.get("env", []))
    ingest = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "ingest")
    probe = ingest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]
    assert probe["service"] == "tsmesh.v1.IngestService"
    jobs = {j["metadata"]["name"]: j for j in of_kind(docs, "Job")}
    assert {"tsmesh-bootstrap", "tsmesh-migrate-auth", "tsmesh-migrate-ingest", "tsmesh-topics"} <= set(jobs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_tsmesh_pods_reach_auth(overlay: str) -> None:
    policy = next(p for p in of_kind(render(overlay), "NetworkPolicy") if p["metadata"]["name"] == "auth")
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if "podSelector" in peer:
                assert peer["podSelector"]["matchLabels"][NAME] in ("gateway", "ingest", "ingest-writer", "query")
                assert [p["port"] for p in rule["ports"]] == [50053]
            else:  # Prometheus, on the metrics port only
                assert [p["port"] for p in rule["ports"]] == [9103]


# every call the services make to each other (config.env's *_ADDR), and the port it goes to
CALLS = (
    ("gateway", "auth", 50053),
    ("gateway", "ingest", 50051),
    ("gateway", "query", 50052),
    ("gateway", "ingest-writer", 50051),  # admin routes: DataLifecycleService
    ("ingest", "auth", 50053),
    ("ingest-writer", "auth", 50053),  # the writer authenticates lifecycle RPCs
    ("query", "auth", 50053),
)


def _admits(rules: list[dict[str, Any]], peer_key: str, peer: str, port: int) -> bool:
    for rule in rules:
        peers = rule.get(peer_key)
        pods = [p["podSelector"].get("matchLabels", {}).get(NAME) for p in peers or [] if "podSelector" in p]
        if (peers is None or peer in pods) and any(p["port"] == port for p in rule.get("ports", [{"port": port}])):
            return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_every_call_of_the_mesh(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(render(overlay), "NetworkPolicy")}
    for client, server, port in CALLS:
        assert _admits(policies[client]["egress"], "to", server, port), f"{client} may not call {server}:{port}"
        assert _admits(policies[server]["ingress"], "from", client, port), f"{server} refuses {client} on {port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_metrics_and_docs_are_on_an_internal_port_for_monitoring_only(overlay: str) -> None:
    docs = render(overlay)
    gateway = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "gateway")
    pod = gateway["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert ports["metrics"] == int(env["TSMESH_METRICS_PORT"]) == 9100
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    policy = next(p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "gateway")
    for rule in policy["spec"]["ingress"]:
        if 9100 in [p["port"] for p in rule["ports"]]:
            assert rule["from"] == [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ]
    assert not _admits(policy["spec"]["ingress"], "from", "anything", 9100)


def test_production_kafka_is_replicated_and_authenticated() -> None:
    docs = render("production")
    assert all(d["metadata"].get("namespace") == "tsmesh" for d in docs if d["kind"] != "Namespace")
    config = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("tsmesh-config-"))
    data = config["data"]
    assert (data["TSMESH_KAFKA_REPLICATION"], data["TSMESH_KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert data["TSMESH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for deployment in of_kind(docs, "Deployment"):
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert of_kind(docs, "HorizontalPodAutoscaler") and of_kind(docs, "PrometheusRule")


@pytest.mark.parametrize(("overlay", "docs"), [("dev", None), ("staging", None), ("production", "false")])
def test_only_production_switches_the_api_docs_off(overlay: str, docs: str | None) -> None:
    (gateway,) = [d for d in of_kind(render(overlay), "Deployment") if d["metadata"]["name"] == "gateway"]
    (container,) = [c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("TSMESH_GATEWAY_DOCS") == docs


def test_copies_in_kustomize_components_equal_their_sources() -> None:
    components = ROOT / "k8s" / "components"
    assert (components / "setup-jobs" / "bootstrap.sql").read_text() == (
        ROOT / "deploy" / "postgres" / "bootstrap.sql"
    ).read_text()
    rule = yaml.safe_load((components / "monitoring" / "prometheusrule.yaml").read_text())
    groups = []
    for name in ("recording.yaml", "alerts.yaml"):
        groups += yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / name).read_text())["groups"]
    assert rule["spec"]["groups"] == groups


def test_every_alert_has_a_runbook_section_and_a_promtool_test() -> None:
    alerts = [
        rule
        for group in yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "alerts.yaml").read_text())["groups"]
        for rule in group["rules"]
    ]
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbooks, re.M)
    }
    tests = yaml.safe_load((ROOT / "deploy" / "prometheus" / "tests" / "rules_test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("docs/runbooks.md#") and url.split("#", 1)[1] in anchors, url
        assert alert["alert"] in tested, alert["alert"]


def exported_metrics() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]:
        names.update(re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(tsmesh_[a-z0-9_]+)\"", path.read_text()))
    return names


def recorded() -> set[str]:
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "recording.yaml").read_text())
    return {rule["record"] for group in doc["groups"] for rule in group["rules"]}


def test_rules_and_dashboards_use_metrics_the_services_export() -> None:
    known = exported_metrics() | recorded()
    suffixes = ("_bucket", "_sum", "_count")
    texts = [p.read_text() for p in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yaml")]
    boards = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert {b.stem for b in boards} == {"overview", "auth", "ingest", "query", "gateway"}
    for board in boards:
        texts += [t["expr"] for panel in json.loads(board.read_text())["panels"] for t in panel["targets"]]
    used = {m for text in texts for m in re.findall(r"\b(tsmesh(?:_|:)[a-z0-9_:]+)", text)}
    unknown = {m for m in used if m not in known and not any(m.endswith(s) and m[: -len(s)] in known for s in suffixes)}
    assert used and not unknown, unknown
