"""What the deployment files under deploy/ are checked with, here where Docker cannot run:
the settings module loaded with the environment each container or unit would get, the
Dockerfile read stage by stage, and deploy/entrypoint.sh run on loopback."""

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.urls import Resolver404, resolve

from tests.conftest import free_port

REPO = Path(settings.BASE_DIR)
DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent

# What a process learns from its environment, as far as a deployment can get it wrong. The
# keys are reported as digests, and `generated` lists key files the process had to create
# because its environment named none: each container would then hold keys of its own.
_SETTINGS_REPORT = """
import hashlib, json, django
django.setup()
from django.conf import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"],
    "db_host": db.get("HOST") or "",
    "redis": bool(s.REDIS_URL),
    "clickhouse": bool(s.CLICKHOUSE_URL),
    "bind": s.BIND_ADDRESS,
    "gateway_port": s.GATEWAY_PORT,
    "console_port": s.CONSOLE_PORT,
    "allowed_hosts": s.ALLOWED_HOSTS,
    "trusted_proxies": sorted(s.TRUSTED_PROXIES),
    "drain_seconds": s.GATEWAY_DRAIN_SECONDS,
    "master_key": hashlib.sha256(s.MASTER_KEY).hexdigest(),
    "secret_key": hashlib.sha256(s.SECRET_KEY.encode()).hexdigest(),
    "generated": sorted(p.name for p in s.DATA_DIR.iterdir() if p.is_file()),
}))
"""


def settings_of(env: dict[str, str]) -> dict[str, object]:
    """The settings a process started with exactly `env` (and a data directory of its own)
    ends up with; fails with the process's error when they do not load."""
    return _settings_of(tuple(sorted(env.items())))


@functools.cache
def _settings_of(items: tuple[tuple[str, str], ...]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tw-deploy-settings-") as data_dir:
        env = {
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "thinkwatch.settings",
            **dict(items),
            "THINKWATCH_DATA_DIR": data_dir,
        }
        done = subprocess.run(
            [sys.executable, "-c", _SETTINGS_REPORT],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def route_exists(path: str, urlconf: str) -> bool:
    try:
        resolve(path, urlconf=urlconf)
    except Resolver404:
        return False
    return True


URLCONF = {"gateway": settings.GATEWAY_URLCONF, "console": settings.ROOT_URLCONF}


# --- the Dockerfile ---------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """deploy/Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined and
    comments dropped; the first list holds what comes before the first FROM."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def image_env() -> dict[str, str]:
    """The ENV of the final stage (KEY=value pairs; $PATH-style references left as they are)."""
    env: dict[str, str] = {}
    for instruction, arguments in final_stage():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(arguments))
    return env


def image_settings_env() -> dict[str, str]:
    """The image's ENV that the settings read (PATH and the like are the host's here)."""
    return {k: v for k, v in image_env().items() if k.startswith("THINKWATCH_")}


# --- deploy/entrypoint.sh on loopback ---------------------------------------------------


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """An embedded installation of its own (SQLite and the filesystem broker under data_dir),
    with the test's virtualenv first on PATH as the image's is."""
    return {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HOME": str(data_dir),
        "THINKWATCH_DATA_DIR": str(data_dir),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CLICKHOUSE_URL": "",
        "THINKWATCH_DRAIN_SECONDS": "2",
        **extra,
    }


class Role:
    """One role of deploy/entrypoint.sh, running in the background."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            [str(ENTRYPOINT), role],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output() and time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            time.sleep(0.2)
        assert text in self.output(), self.output()

    def wait_for_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                httpx.get(url, timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"{url} did not answer:\n{self.output()}")

    def stop(self, timeout: float = 30) -> int:
        self.process.terminate()
        code = self.process.wait(timeout)
        self.handle.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.handle.close()


class Servers:
    """The gateway and console roles of one embedded installation, migrated first by the
    migrate role, as a container platform would run them."""

    def __init__(self, data_dir: Path) -> None:
        self.gateway_port, self.console_port = free_port(), free_port()
        self.env = embedded_env(
            data_dir,
            THINKWATCH_GATEWAY_PORT=str(self.gateway_port),
            THINKWATCH_CONSOLE_PORT=str(self.console_port),
        )
        self.data_dir = data_dir
        self.roles: dict[str, Role] = {}

    def start(self) -> "Servers":
        migrate = subprocess.run(
            [str(ENTRYPOINT), "migrate"], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stderr
        for role in ("gateway", "console"):
            self.roles[role] = Role(role, self.env, self.data_dir / f"{role}.log")
        for role, port in (("gateway", self.gateway_port), ("console", self.console_port)):
            self.roles[role].wait_for_http(f"http://127.0.0.1:{port}/health/live")
        return self

    def close(self) -> None:
        for role in self.roles.values():
            role.kill()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    running = Servers(tmp_path_factory.mktemp("deploy-servers")).start()
    yield running
    running.close()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
