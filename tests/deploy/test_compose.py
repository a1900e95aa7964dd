"""deploy/docker-compose.yml and docker-compose.dev.yml, resolved by `docker-compose config`
(Debian's docker-compose 1.29, which needs no Docker daemon for it), then read: healthchecks,
start order, the environment each ThinkWatch container gets (loaded by the real settings
module), ports, stop grace, and the proxy's configuration checked by `haproxy -c`."""

import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, URLCONF, image_settings_env, route_exists, settings_of

PRODUCTION = DEPLOY / "docker-compose.yml"
DEV = DEPLOY / "docker-compose.dev.yml"
ENV_EXAMPLE = DEPLOY / "docker-compose.env.example"
HAPROXY = DEPLOY / "haproxy.cfg"
# run.py waits this long after the drain before it kills what is left.
RUN_PY_MARGIN = 10


def _compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install docker-compose (see Makefile)"
    options = ["--env-file", str(env_file)] if env_file else []
    return subprocess.run(
        [binary, *options, *args],
        cwd=DEPLOY,
        env={"PATH": "/usr/bin:/bin"},  # nothing from the developer's shell
        capture_output=True,
        text=True,
        timeout=60,
    )


def _example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with every empty value (the passwords) filled in, as an operator would."""
    filled = {name: value or secrets.token_hex(16) for name, value in _example().items()}
    path = tmp_path_factory.mktemp("compose") / "env"
    path.write_text("".join(f"{name}={value}\n" for name, value in filled.items()))
    return path


@pytest.fixture(scope="module")
def production(env_file: Path) -> dict[str, Any]:
    done = _compose("-f", str(PRODUCTION), "config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the operator puts into deploy/secrets/, by secret name."""
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "thinkwatch_master_key").write_text(secrets.token_hex(32) + "\n")
    (directory / "thinkwatch_secret_key").write_text(secrets.token_urlsafe(50) + "\n")
    return {path.name: path for path in directory.iterdir()}


def _thinkwatch_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in config["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def _container_env(service: dict[str, Any], secret_files: dict[str, Path]) -> dict[str, str]:
    """The image's ENV under the service's environment, with /run/secrets/NAME where the
    compose secret NAME would be mounted."""
    env = {**image_settings_env(), **{k: str(v) for k, v in service["environment"].items()}}
    for name, value in env.items():
        secret = value.removeprefix("/run/secrets/")
        if secret != value:
            mounted = [entry["source"] for entry in service["secrets"]]
            assert secret in mounted, f"{name} names a secret the service does not mount"
            env[name] = str(secret_files[secret])
    return env


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match, duration
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    found = re.search(r"http://[^'\" ]+", test)
    assert found, test
    return found[0]


def test_compose_accepts_both_files(env_file: Path) -> None:
    production = _compose("-f", str(PRODUCTION), "config", "--quiet", env_file=env_file)
    dev = _compose("-f", str(DEV), "--profile", "services", "config", "--quiet")

    assert (production.returncode, production.stderr) == (0, "")
    assert (dev.returncode, dev.stderr) == (0, "")


def test_it_refuses_to_run_without_the_passwords() -> None:
    done = _compose("-f", str(PRODUCTION), "config", "--quiet", env_file=ENV_EXAMPLE)

    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in done.stderr


def test_the_env_example_names_every_variable_the_file_uses() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", PRODUCTION.read_text()))

    assert used <= set(_example())


def test_it_runs_every_role_once_and_two_gateways(production: dict[str, Any]) -> None:
    roles = {name: service["command"] for name, service in _thinkwatch_services(production).items()}

    assert roles == {
        "migrate": ["migrate"],
        "gateway": ["gateway"],
        "console": ["console"],
        "worker": ["worker"],
        "beat": ["beat"],
    }
    assert production["services"]["gateway"]["deploy"]["replicas"] == 2


def test_every_service_has_a_healthcheck_or_waits_for_healthy_ones(
    production: dict[str, Any],
) -> None:
    services = production["services"]
    unchecked = {
        name
        for name, service in services.items()
        if service.get("healthcheck", {}).get("test", ["NONE"]) == ["NONE"]
    }
    waiting = {
        name: {dep["condition"] for dep in services[name]["depends_on"].values()}
        for name in unchecked
    }

    assert unchecked == {"migrate", "beat"}  # a one-shot, and a scheduler with no port
    assert all(
        conditions <= {"service_healthy", "service_completed_successfully"}
        for conditions in waiting.values()
    )


def test_nothing_waits_for_a_health_that_is_never_reported(production: dict[str, Any]) -> None:
    services = production["services"]
    awaited = {
        dependency
        for service in services.values()
        for dependency, wait in service.get("depends_on", {}).items()
        if wait["condition"] == "service_healthy"
    }

    assert [name for name in awaited if services[name]["healthcheck"]["test"] == ["NONE"]] == []


def test_thinkwatch_services_start_after_the_migrations(production: dict[str, Any]) -> None:
    services = _thinkwatch_services(production)
    waits = {
        name: service["depends_on"].get("migrate", {}).get("condition")
        for name, service in services.items()
        if name != "migrate"
    }

    assert set(waits.values()) == {"service_completed_successfully"}


def test_every_thinkwatch_container_loads_production_settings_with_shared_keys(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    loaded = {
        name: settings_of(_container_env(service, secret_files))
        for name, service in _thinkwatch_services(production).items()
    }

    assert {s["engine"] for s in loaded.values()} == {"django.db.backends.postgresql"}
    assert {(s["redis"], s["clickhouse"]) for s in loaded.values()} == {(True, True)}
    assert {tuple(s["generated"]) for s in loaded.values()} == {()}  # no key made up locally
    assert len({(s["master_key"], s["secret_key"]) for s in loaded.values()}) == 1


def test_the_healthchecks_probe_the_ports_and_routes_served(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    services = production["services"]
    served = {}
    for role in ("gateway", "console"):
        url = urlsplit(_healthcheck_url(services[role]))
        loaded = settings_of(_container_env(services[role], secret_files))
        served[role] = (url.port == loaded[f"{role}_port"], route_exists(url.path, URLCONF[role]))

    assert served == {"gateway": (True, True), "console": (True, True)}


def test_the_console_answers_its_healthcheck_host(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    console = production["services"]["console"]
    loaded = settings_of(_container_env(console, secret_files))

    assert urlsplit(_healthcheck_url(console)).hostname in loaded["allowed_hosts"]


def test_the_proxy_sends_requests_to_the_gateway_port_and_readiness_route(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    config = HAPROXY.read_text()
    server = re.search(r"server-template \S+ \d+ gateway:(\d+)", config)
    check = re.search(r"http-check send meth GET uri (\S+)", config)
    gateway = settings_of(_container_env(production["services"]["gateway"], secret_files))

    assert server and check
    assert int(server[1]) == gateway["gateway_port"]
    assert route_exists(check[1], URLCONF["gateway"])


def test_the_gateways_trust_the_proxy_to_name_the_client(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    proxy = production["services"]["proxy"]["networks"]["backend"]["ipv4_address"]
    gateway = settings_of(_container_env(production["services"]["gateway"], secret_files))

    assert gateway["trusted_proxies"] == [proxy]


def _published(port: str | dict[str, Any]) -> str:
    """Where on the host a port is published, [address:]port, from either compose syntax."""
    if isinstance(port, dict):
        return ":".join(str(part) for part in (port.get("host_ip"), port["published"]) if part)
    return port.rsplit(":", 1)[0]


def test_only_the_proxy_and_the_console_publish_ports(production: dict[str, Any]) -> None:
    published = {
        name: [_published(port) for port in service["ports"]]
        for name, service in production["services"].items()
        if service.get("ports")
    }

    assert published == {"proxy": ["3000"], "console": ["127.0.0.1:3001"]}


def test_containers_are_stopped_no_sooner_than_they_drain(
    production: dict[str, Any], secret_files: dict[str, Path]
) -> None:
    services = production["services"]
    too_short = {
        name: services[name].get("stop_grace_period", "10s")
        for name in ("gateway", "console", "worker")
        if _seconds(services[name].get("stop_grace_period", "10s"))
        <= settings_of(_container_env(services[name], secret_files))["drain_seconds"]
        + RUN_PY_MARGIN
    }

    assert too_short == {}


def test_the_secrets_come_from_where_the_build_context_leaves_them_out(
    production: dict[str, Any],
) -> None:
    secret_files = [Path(secret["file"]) for secret in production["secrets"].values()]

    assert {path.relative_to(DEPLOY).parent for path in secret_files} == {Path("secrets")}


def test_the_thinkwatch_containers_write_only_their_volumes(production: dict[str, Any]) -> None:
    services = _thinkwatch_services(production)

    assert {s["read_only"] for s in services.values()} == {True}
    assert all(
        "auditq:/var/lib/thinkwatch/auditq:rw" in service["volumes"]
        for service in services.values()
    )


def test_haproxy_accepts_its_configuration() -> None:
    binary = shutil.which("haproxy")
    assert binary, "haproxy is missing: apt-get install haproxy (see Makefile)"

    done = subprocess.run([binary, "-c", "-f", str(HAPROXY)], capture_output=True, text=True)

    assert done.returncode == 0, done.stdout + done.stderr
