"""The Helm chart, linted and rendered by Helm's own Go SDK (helm-python-sdk), each manifest
validated against the Kubernetes schemas (kubernetes-validate), and the pods' environment
loaded by the real settings module."""

import base64
import secrets
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, URLCONF, image_settings_env, route_exists, settings_of

CHART = DEPLOY / "helm" / "thinkwatch"
SERVERS = ("gateway", "console")
RUN_PY_MARGIN = 10  # run.py waits this long after the drain before it kills what is left

VALUES: dict[str, Any] = {
    "secrets": {
        "secretKey": secrets.token_urlsafe(50),
        "masterKey": secrets.token_hex(32),
        "databaseUrl": "postgres://thinkwatch:pw@postgres.internal:5432/thinkwatch",
        "redisUrl": "redis://:pw@redis.internal:6379/0",
        "clickhouseUrl": "clickhouse://thinkwatch:pw@clickhouse.internal:9000/thinkwatch",
    },
    "config": {
        "allowedHosts": ["console.example.com"],
        "trustedProxies": ["10.0.0.7"],
    },
    "gateway": {"ingress": {"enabled": True}},
}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="thinkwatch", namespace="ai", is_install=True)
    return [
        document
        for name, text in rendered.items()
        if name.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return _render(VALUES)


def _named(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _pods(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod template of every Deployment and Job, by its component label."""
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "Job")]
    return {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"][
            "template"
        ]["spec"]
        for m in workloads
    }


def _env(manifests: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, str]:
    """The image's ENV, then the pod's envFrom sources, as Kubernetes assembles them."""
    config_maps, secrets_ = _named(manifests, "ConfigMap"), _named(manifests, "Secret")
    env = image_settings_env()
    for source in pod["containers"][0]["envFrom"]:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            data = secrets_[source["secretRef"]["name"]]["data"]
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    return env


def _http_probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if "httpGet" in container.get(kind, {})
    ]


def test_helm_lint_finds_no_error() -> None:
    report = helm.lint(str(CHART), VALUES, strict=True)

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []  # only "icon is recommended"


@pytest.mark.parametrize("kubernetes", ["1.25.0", "1.37.0"])
def test_every_manifest_is_valid_kubernetes(
    manifests: list[dict[str, Any]], kubernetes: str
) -> None:
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kubernetes, strict=True)


def test_it_refuses_to_render_without_the_master_key() -> None:
    values = {**VALUES, "secrets": {**VALUES["secrets"], "masterKey": ""}}

    with pytest.raises(helm.HelmError, match=r"secrets\.masterKey is required"):
        _render(values)


def test_an_existing_secret_replaces_the_charts_own(tmp_path: Path) -> None:
    manifests = _render({"secrets": {"existingSecret": "thinkwatch-keys"}})

    assert _named(manifests, "Secret") == {}
    assert {
        source["secretRef"]["name"]
        for pod in _pods(manifests).values()
        for source in pod["containers"][0]["envFrom"]
        if "secretRef" in source
    } == {"thinkwatch-keys"}


def test_it_runs_each_role_of_the_image(manifests: list[dict[str, Any]]) -> None:
    roles = {name: pod["containers"][0]["args"][0] for name, pod in _pods(manifests).items()}

    assert roles == {
        "gateway": "gateway",
        "console": "console",
        "worker": "worker",
        "beat": "beat",
        "migrate": "migrate",
    }


def test_every_pod_loads_production_settings_with_shared_keys(
    manifests: list[dict[str, Any]],
) -> None:
    loaded = {name: settings_of(_env(manifests, pod)) for name, pod in _pods(manifests).items()}

    assert {s["engine"] for s in loaded.values()} == {"django.db.backends.postgresql"}
    assert {(s["redis"], s["clickhouse"], s["bind"]) for s in loaded.values()} == {
        (True, True, "0.0.0.0")  # noqa: S104 (a pod must)
    }
    assert {tuple(s["generated"]) for s in loaded.values()} == {()}  # no key made up locally
    assert len({(s["master_key"], s["secret_key"]) for s in loaded.values()}) == 1


def test_service_links_cannot_shadow_the_port_settings(manifests: list[dict[str, Any]]) -> None:
    """A Service named thinkwatch-gateway would otherwise set THINKWATCH_GATEWAY_PORT to
    tcp://...:3000 in every pod of the namespace."""
    assert {pod["enableServiceLinks"] for pod in _pods(manifests).values()} == {False}


@pytest.mark.parametrize("role", SERVERS)
def test_probes_reach_routes_the_server_serves_on_its_port(
    manifests: list[dict[str, Any]], role: str
) -> None:
    pod = _pods(manifests)[role]
    container = pod["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    listening = settings_of(_env(manifests, pod))[f"{role}_port"]

    probed = {(ports[p["port"]], p["path"]) for p in _http_probes(container)}

    assert probed == {(listening, "/health/live"), (listening, "/health/ready")}
    assert all(route_exists(path, URLCONF[role]) for _, path in probed)


def test_console_probes_name_a_host_the_console_answers_to(
    manifests: list[dict[str, Any]],
) -> None:
    pod = _pods(manifests)["console"]
    allowed = settings_of(_env(manifests, pod))["allowed_hosts"]

    hosts = {
        header["value"]
        for probe in _http_probes(pod["containers"][0])
        for header in probe.get("httpHeaders", [])
        if header["name"] == "Host"
    }

    assert hosts == {"localhost"}
    assert "localhost" in allowed


@pytest.mark.parametrize("role", SERVERS)
def test_services_send_traffic_to_the_pods_of_their_role(
    manifests: list[dict[str, Any]], role: str
) -> None:
    service = _named(manifests, "Service")[f"thinkwatch-{role}"]
    deployment = _named(manifests, "Deployment")[f"thinkwatch-{role}"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = [
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    ]

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == port_names


def test_the_autoscaler_owns_the_gateways_replica_count(manifests: list[dict[str, Any]]) -> None:
    hpa = _named(manifests, "HorizontalPodAutoscaler")["thinkwatch-gateway"]
    gateway = _named(manifests, "Deployment")["thinkwatch-gateway"]

    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "thinkwatch-gateway",
    }
    assert "replicas" not in gateway["spec"]


def test_the_disruption_budget_covers_the_gateway_pods(manifests: list[dict[str, Any]]) -> None:
    pdb = _named(manifests, "PodDisruptionBudget")["thinkwatch-gateway"]
    labels = _named(manifests, "Deployment")["thinkwatch-gateway"]["spec"]["template"]["metadata"]

    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels["labels"].items()


def test_beat_is_a_single_pod_never_two(manifests: list[dict[str, Any]]) -> None:
    beat = _named(manifests, "Deployment")["thinkwatch-beat"]["spec"]

    assert (beat["replicas"], beat["strategy"]) == (1, {"type": "Recreate"})


def test_the_migrations_run_before_install_and_upgrade_from_hook_made_settings(
    manifests: list[dict[str, Any]],
) -> None:
    job = _named(manifests, "Job")["thinkwatch-migrate"]
    hooks = {
        m["metadata"]["name"] + "/" + m["kind"]: m["metadata"]["annotations"]
        for m in manifests
        if "helm.sh/hook" in m["metadata"].get("annotations", {})
    }
    sources = {
        next(iter(source.values()))["name"]
        for source in job["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    }

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert sources == {"thinkwatch-migrate"}
    assert {
        name: (a["helm.sh/hook"], int(a["helm.sh/hook-weight"]) < 0)
        for name, a in hooks.items()
        if not name.endswith("/Job")
    } == {
        "thinkwatch-migrate/ConfigMap": ("pre-install,pre-upgrade", True),
        "thinkwatch-migrate/Secret": ("pre-install,pre-upgrade", True),
        "thinkwatch-migrate/ServiceAccount": ("pre-install,pre-upgrade", True),
    }


def test_pods_get_longer_to_stop_than_the_drain_takes(manifests: list[dict[str, Any]]) -> None:
    pods = _pods(manifests)
    gateway = pods["gateway"]
    drain = settings_of(_env(manifests, gateway))["drain_seconds"]
    pre_stop = int(gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])

    assert {
        name: pod["terminationGracePeriodSeconds"] > drain + RUN_PY_MARGIN + pre_stop
        for name, pod in pods.items()
        if name != "migrate"
    } == {"gateway": True, "console": True, "worker": True, "beat": True}


def test_containers_run_unprivileged_on_a_read_only_root(manifests: list[dict[str, Any]]) -> None:
    pods = _pods(manifests).values()

    assert {pod["securityContext"]["runAsNonRoot"] for pod in pods} == {True}
    assert {
        (
            c["securityContext"]["readOnlyRootFilesystem"],
            c["securityContext"]["allowPrivilegeEscalation"],
        )
        for pod in pods
        for c in pod["containers"]
    } == {(True, False)}


def test_every_container_keeps_its_audit_spool_on_a_volume(manifests: list[dict[str, Any]]) -> None:
    mounts = {
        name: {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        for name, pod in _pods(manifests).items()
    }

    assert all({"/var/lib/thinkwatch/auditq", "/tmp"} <= paths for paths in mounts.values())
    assert "/var/lib/thinkwatch" in mounts["beat"]  # its schedule file
