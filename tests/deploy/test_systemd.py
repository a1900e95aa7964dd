"""deploy/systemd/: `systemd-analyze verify` on the units installed into a root of their own,
the stop timeouts against the drain, the hardening, and the environment file example loaded
by the real settings module."""

import configparser
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, ENTRYPOINT, settings_of

UNITS = DEPLOY / "systemd"
ROLES = ("gateway", "console", "worker", "beat")
RUN_PY_MARGIN = 10  # run.py waits this long after the drain before it kills what is left
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "SystemCallFilter": "@system-service",
}


def _unit(name: str) -> configparser.RawConfigParser:
    """A unit file's sections; a key given more than once keeps its last value."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def _env_example() -> dict[str, str]:
    lines = (UNITS / "thinkwatch.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    """Installed as the docs say: units in /etc/systemd/system, the checkout in
    /opt/thinkwatch; systemd's own units come from this machine."""
    binary = shutil.which("systemd-analyze")
    assert binary, "systemd-analyze is missing: apt-get install systemd"
    installed = tmp_path / "etc/systemd/system"
    installed.mkdir(parents=True)
    (tmp_path / "opt/thinkwatch/deploy").mkdir(parents=True)
    shutil.copy(ENTRYPOINT, tmp_path / "opt/thinkwatch/deploy/entrypoint.sh")
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    sources = [*sorted(UNITS.glob("*.service")), UNITS / "thinkwatch.target"]
    units = [shutil.copy(unit, installed) for unit in sources]

    done = subprocess.run(
        [binary, f"--root={tmp_path}", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
    )

    assert len(units) == 6
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_target_wants_the_migrations_and_every_role() -> None:
    wanted = _unit("thinkwatch.target")["Unit"]["Wants"].split()

    assert sorted(wanted) == sorted(f"thinkwatch-{r}.service" for r in ("migrate", *ROLES))


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_after_the_migrations_through_the_entrypoint(role: str) -> None:
    unit = _unit(f"thinkwatch-{role}.service")

    assert unit["Service"]["ExecStart"] == f"/opt/thinkwatch/deploy/entrypoint.sh {role}"
    assert unit["Unit"]["Requires"] == "thinkwatch-migrate.service"
    assert "thinkwatch-migrate.service" in unit["Unit"]["After"]


def test_the_migrations_run_once_per_start_of_the_target() -> None:
    service = _unit("thinkwatch-migrate.service")["Service"]

    assert (service["Type"], service["RemainAfterExit"]) == ("oneshot", "yes")
    assert service["ExecStart"] == "/opt/thinkwatch/deploy/entrypoint.sh migrate"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_given_longer_to_stop_than_the_drain(role: str) -> None:
    service = _unit(f"thinkwatch-{role}.service")["Service"]
    drain = int(_env_example()["THINKWATCH_DRAIN_SECONDS"])

    assert (service["KillMode"], service["KillSignal"]) == ("mixed", "SIGTERM")
    assert _seconds(service["TimeoutStopSec"]) > drain + RUN_PY_MARGIN


@pytest.mark.parametrize("role", (*ROLES, "migrate"))
def test_each_unit_is_hardened(role: str) -> None:
    service = _unit(f"thinkwatch-{role}.service")["Service"]

    assert {key: service.get(key) for key in HARDENING} == HARDENING
    assert (service["User"], service["StateDirectory"]) == ("thinkwatch", "thinkwatch")


def test_the_environment_file_example_gives_production_settings(tmp_path: Path) -> None:
    """As a unit runs it: the example, the unit's own Environment= lines, and the keys as
    credentials (files a root-only directory holds)."""
    service = _unit("thinkwatch-gateway.service")["Service"]
    credentials = {"secret_key": secrets.token_urlsafe(50), "master_key": secrets.token_hex(32)}
    for name, value in credentials.items():
        (tmp_path / name).write_text(value + "\n")
    lines = (UNITS / "thinkwatch-gateway.service").read_text().splitlines()
    unit_env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in lines
        if line.startswith("Environment=") and not line.startswith("Environment=PATH")
    )
    env = {**_env_example(), **unit_env}
    env = {name: value.replace("%d", str(tmp_path)) for name, value in env.items()}

    loaded = settings_of(env)

    assert service["EnvironmentFile"] == "/etc/thinkwatch/thinkwatch.env"
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert (loaded["redis"], loaded["generated"]) == (True, [])
    assert "console.example.com" in loaded["allowed_hosts"]
