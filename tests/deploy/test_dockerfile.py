"""deploy/Dockerfile and .dockerignore, checked without Docker: hadolint, the stages read as
text, and the build's collectstatic and the image's HEALTHCHECK run here for real."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy.conftest import (
    DEPLOY,
    ENTRYPOINT,
    REPO,
    VENV_BIN,
    Servers,
    dockerfile_stages,
    embedded_env,
    final_stage,
    image_env,
)

BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[a-z0-9.+-]+-dev)\b")


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
    )

    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_it_builds_on_slim_python_311() -> None:
    default_base = dict(arg.split("=", 1) for _, arg in dockerfile_stages()[0] if "=" in arg)

    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", default_base["PYTHON_IMAGE"])
    assert [args for stage in dockerfile_stages()[1:] for i, args in stage if i == "FROM"] == [
        "${PYTHON_IMAGE} AS builder",
        "${PYTHON_IMAGE}",
    ]


def test_the_final_stage_runs_as_a_non_root_user() -> None:
    users = [arguments for instruction, arguments in final_stage() if instruction == "USER"]

    uid = users[-1].split(":")[0]
    assert uid.isdigit()  # numeric: Kubernetes' runAsNonRoot can only verify a number
    assert int(uid) > 0


def test_the_final_stage_installs_no_build_tools() -> None:
    runs = " ".join(arguments for instruction, arguments in final_stage() if instruction == "RUN")

    assert BUILD_TOOLS.findall(runs) == []
    assert "pip install" not in runs


def test_the_final_stage_copies_only_the_venv_from_the_builder() -> None:
    copied = [
        arguments
        for instruction, arguments in final_stage()
        if instruction == "COPY" and "--from=" in arguments
    ]

    assert copied == ["--from=builder /opt/thinkwatch/venv /opt/thinkwatch/venv"]


def test_the_builder_installs_the_locked_runtime_dependencies() -> None:
    builder = " ".join(arguments for instruction, arguments in dockerfile_stages()[1])

    assert "pip install --constraint requirements.lock --requirement /tmp/runtime.txt" in builder
    assert "['project']['dependencies']" in builder  # not the lock's test and lint tools


def test_the_image_listens_on_all_interfaces_at_the_ports_it_exposes() -> None:
    env = image_env()
    exposed = [arguments for instruction, arguments in final_stage() if instruction == "EXPOSE"]

    assert env["THINKWATCH_BIND"] == "0.0.0.0"  # noqa: S104 (a container must)
    assert exposed == [f"{env['THINKWATCH_GATEWAY_PORT']} {env['THINKWATCH_CONSOLE_PORT']}"]


def test_the_entrypoint_is_the_role_script_under_tini() -> None:
    entrypoint = [json.loads(a) for i, a in final_stage() if i == "ENTRYPOINT"]
    cmd = [json.loads(a) for i, a in final_stage() if i == "CMD"]

    assert entrypoint == [["tini", "--", "/app/deploy/entrypoint.sh"]]
    assert cmd == [["gateway"]]
    assert os.access(ENTRYPOINT, os.X_OK)


def test_collectstatic_at_build_writes_the_static_files_and_no_key(tmp_path: Path) -> None:
    """The build's collectstatic, run as written: it must not leave a generated secret key
    or master key in the image's data directory for every container to share."""
    run = next(a for i, a in final_stage() if i == "RUN" and "collectstatic" in a)
    command = run.split("&&")[0]
    env = embedded_env(tmp_path)
    del env["DATABASE_URL"], env["REDIS_URL"], env["CLICKHOUSE_URL"]

    done = subprocess.run(["sh", "-c", command], env=env, cwd=REPO, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static"]
    assert (tmp_path / "static/admin/css/base.css").is_file()


def _healthcheck() -> list[str]:
    instruction = next(a for i, a in final_stage() if i == "HEALTHCHECK")
    command: list[str] = json.loads(instruction.split(" CMD ", 1)[1])
    return command


def _run_healthcheck(servers: Servers, gateway_port: int, console_port: int) -> int:
    env = {
        **servers.env,
        "THINKWATCH_GATEWAY_PORT": str(gateway_port),
        "THINKWATCH_CONSOLE_PORT": str(console_port),
    }
    return subprocess.run(_healthcheck(), env=env, capture_output=True, timeout=30).returncode


def test_the_healthcheck_passes_in_a_gateway_container(servers: Servers) -> None:
    """Each container runs one server: the other port has nothing listening."""
    nothing = free_port()

    assert _run_healthcheck(servers, servers.gateway_port, nothing) == 0


def test_the_healthcheck_passes_in_a_console_container(servers: Servers) -> None:
    nothing = free_port()

    assert _run_healthcheck(servers, nothing, servers.console_port) == 0


def test_the_healthcheck_fails_when_nothing_answers(servers: Servers) -> None:
    assert _run_healthcheck(servers, free_port(), free_port()) == 1


# --- .dockerignore ------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression (Go's filepath.Match plus `**`)."""
    translated = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
    return re.compile(translated.replace(r"\?", "[^/]"))


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        "var/master.key",
        "var/secret_key",
        "var/thinkwatch.sqlite3",
        ".env",
        "deploy/.env",
        "deploy/secrets/thinkwatch_master_key",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "thinkwatch/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert _ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "requirements.lock",
        "manage.py",
        "deploy/entrypoint.sh",
        "thinkwatch/settings.py",
        "gateway/views.py",
        "templates",
        "static",
    ],
)
def test_the_build_context_keeps(path: str) -> None:
    assert (REPO / path).exists()
    assert not _ignored(path)


def test_the_builder_copies_files_the_build_context_has() -> None:
    sources = [
        source
        for instruction, arguments in dockerfile_stages()[1]
        if instruction == "COPY"
        for source in shlex.split(arguments)[:-1]
    ]

    assert [s for s in sources if s != "." and (_ignored(s) or not (REPO / s).exists())] == []
