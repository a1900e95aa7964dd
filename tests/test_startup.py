"""Startup checks (thinkwatch/startup.py): a process that cannot serve refuses to start,
exits non-zero and says why in one line, without any secret in it."""

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.test import override_settings

from audit.clickhouse import client, migrate
from tests.clickhouse.conftest import clickhouse_url  # noqa: F401
from tests.conftest import database_url, free_port
from tests.factories import ProviderFactory
from tests.observability.test_health import silent_port  # noqa: F401
from thinkwatch import startup
from thinkwatch.lib import crypto

PASSWORD = "pw-that-must-not-show-3b1f"
WEAK_SECRET_KEYS = [
    "changeme" * 4,
    "a" * 64,
    "0123456789" * 4,
    "django-insecure-" + "x" * 40,
    "Password123Password123!Password123",
]
RANDOM_SECRET_KEYS = [
    "3ce6e2ff0cc2cd9dbc61f1373b51f679",  # secrets.token_hex(16): 128 bits
    "iRzDfptDVa3j3a4uzTOE0pRVWAK8QgzCDUy09il6DcHj0InO-dFoxuoo1hklwkq4Wq0",  # token_urlsafe(50)
    "=d!(uxr#kz6)0c2b59oyun$0zle^67vt(%+o9k^l)2_23=z4(^",  # Django's get_random_secret_key()
]
WEAK_MASTER_KEYS = ["00" * 32, "0123456789abcdef" * 4, "deadbeef" * 8]
OTHER_MASTER_KEY = bytes.fromhex("e732b37fb53d28ed77171557cfc4a5ef01a801ea7409c6813b5935ff42304c14")


def environment(data_dir: Path, **overrides: str) -> dict[str, str]:
    """A process on the test's database and master key, with `overrides`."""
    return {
        **os.environ,
        "THINKWATCH_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url(connection),
        "THINKWATCH_MASTER_KEY": settings.MASTER_KEY.hex(),
        **overrides,
    }


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


# --- secrets ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_is_ready_with_the_embedded_defaults() -> None:
    assert startup.problems() == []


@pytest.mark.parametrize("value", WEAK_SECRET_KEYS)
def test_it_refuses_a_secret_key_that_is_not_random(settings: Any, value: str) -> None:
    settings.SECRET_KEY = value

    (problem,) = startup.secret_problems()

    assert problem.startswith("THINKWATCH_SECRET_KEY is not random enough")
    assert value not in problem


def test_it_refuses_a_short_secret_key(settings: Any) -> None:
    settings.SECRET_KEY = "changeme"

    assert startup.secret_problems() == [
        "THINKWATCH_SECRET_KEY is too short (8 characters, at least 32)"
    ]


@pytest.mark.parametrize("value", RANDOM_SECRET_KEYS)
def test_it_accepts_a_random_secret_key(settings: Any, value: str) -> None:
    settings.SECRET_KEY = value

    assert startup.secret_problems() == []


@pytest.mark.parametrize("value", WEAK_MASTER_KEYS)
def test_it_refuses_a_master_key_that_is_not_random(settings: Any, value: str) -> None:
    settings.MASTER_KEY = bytes.fromhex(value)

    (problem,) = startup.secret_problems()

    assert problem.startswith("THINKWATCH_MASTER_KEY is not random enough")
    assert value not in problem


@pytest.mark.django_db
def test_it_refuses_a_master_key_that_cannot_open_the_stored_secrets() -> None:
    with override_settings(MASTER_KEY=OTHER_MASTER_KEY):
        ProviderFactory(api_key="sk-sealed-by-another-key")

    (problem,) = startup.problems()

    assert problem.startswith(
        f"stored secrets were sealed by master key {crypto.key_id(OTHER_MASTER_KEY)}, which is "
        "neither THINKWATCH_MASTER_KEY nor in THINKWATCH_PREVIOUS_MASTER_KEYS"
    )


@pytest.mark.django_db
def test_it_accepts_secrets_sealed_by_a_previous_master_key(settings: Any) -> None:
    with override_settings(MASTER_KEY=OTHER_MASTER_KEY):
        ProviderFactory(api_key="sk-sealed-by-the-old-key")
    settings.PREVIOUS_MASTER_KEYS = [OTHER_MASTER_KEY]

    assert startup.problems() == []


# --- dependencies -----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_names_an_unapplied_migration() -> None:
    app, name = next(node for node in MigrationLoader(connection).graph.leaf_nodes())
    MigrationRecorder(connection).record_unapplied(app, name)

    (problem,) = startup.problems()

    assert problem.startswith("the database (")
    assert problem.endswith(f"has 1 unapplied migration(s) ({app}.{name}); run `manage.py migrate`")


@pytest.mark.django_db
def test_it_names_an_unreachable_redis_without_its_password(settings: Any) -> None:
    port = free_port()
    settings.REDIS_URL = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"

    assert startup.problems() == [
        f"Redis (127.0.0.1:{port}) is unreachable: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    ]


@pytest.mark.django_db
def test_it_names_an_unreachable_clickhouse_without_its_password(settings: Any) -> None:
    port = free_port()
    settings.CLICKHOUSE_URL = f"clickhouse://default:{PASSWORD}@127.0.0.1:{port}/thinkwatch"

    assert startup.problems() == [
        f"ClickHouse (127.0.0.1:{port}) is unreachable: "
        f"Code: 210. Connection refused (127.0.0.1:{port})"
    ]


@pytest.mark.django_db
def test_it_gives_up_on_a_clickhouse_that_never_answers(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    silent_port: int,  # noqa: F811
) -> None:
    monkeypatch.setattr(startup, "TIMEOUT", 0.5)
    settings.CLICKHOUSE_URL = f"clickhouse://default:@127.0.0.1:{silent_port}/thinkwatch"

    assert startup.problems() == [
        f"ClickHouse (127.0.0.1:{silent_port}) did not answer within 0.5 s"
    ]


@pytest.fixture
def unmigrated_clickhouse(settings: Any, clickhouse_url: str) -> Iterator[str]:  # noqa: F811
    """A database of its own on the tests' ClickHouse, with no migration applied."""
    url = f"{clickhouse_url.rsplit('/', 1)[0]}/tw_unmigrated_{secrets.token_hex(4)}"
    settings.CLICKHOUSE_URL = url
    yield url
    where = client.target(url)
    client.client(where).execute(f"DROP DATABASE IF EXISTS {where.database}")
    client.forget_database(where)


@pytest.mark.django_db
def test_it_names_clickhouse_migrations_not_yet_applied(unmigrated_clickhouse: str) -> None:
    labels = ", ".join(m.label for m in migrate.migrations())
    server = urlsplit(unmigrated_clickhouse)

    assert startup.problems() == [
        f"ClickHouse ({server.hostname}:{server.port}) has unapplied schema migrations "
        f"({labels}); "
        "run `manage.py clickhouse_migrate`"
    ]
    migrate.apply()
    assert startup.problems() == []


# --- the processes ----------------------------------------------------------------------


@pytest.mark.django_db
def test_check_ready_says_what_it_checked() -> None:
    out = io.StringIO()

    call_command("check_ready", stdout=out)

    assert out.getvalue().startswith("Ready: database migrated, secrets sound")


def test_check_ready_names_an_unreachable_database_without_its_password(
    transactional_db: None, tmp_path: Path
) -> None:
    port = free_port()
    url = f"postgres://thinkwatch:{PASSWORD}@127.0.0.1:{port}/thinkwatch"

    result = run(["manage.py", "check_ready"], environment(tmp_path, DATABASE_URL=url))

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"CommandError: ThinkWatch cannot start: the database (PostgreSQL 127.0.0.1:{port}/"
        f"thinkwatch) is unreachable: connection failed: connection to server at "
        f'"127.0.0.1", port {port} failed: Connection refused'
    )
    assert PASSWORD not in result.stderr


def test_the_gateway_exits_with_code_3_naming_the_problem(
    transactional_db: None, tmp_path: Path
) -> None:
    port = free_port()
    env = environment(tmp_path, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    args = ["-m", "uvicorn", "thinkwatch.asgi:gateway", "--port", str(free_port())]

    result = run([*args, "--lifespan", "on"], env)

    assert result.returncode == 3  # uvicorn's code for a failed lifespan startup
    assert (
        f"ERROR:    ThinkWatch cannot start: Redis (127.0.0.1:{port}) is unreachable"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # A malformed setting stops settings.py itself...
        (
            {"THINKWATCH_SECRET_KEY": "changeme"},
            "THINKWATCH_SECRET_KEY must be at least 32 characters",
        ),
        # ...a weak key the startup checks, after the fresh database was migrated.
        (
            {"THINKWATCH_MASTER_KEY": "deadbeef" * 8},
            "THINKWATCH_MASTER_KEY is not random enough",
        ),
    ],
)
def test_make_run_starts_nothing_when_a_check_fails(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    env = {**os.environ, "THINKWATCH_DATA_DIR": str(tmp_path), "DATABASE_URL": "", **overrides}
    env["REDIS_URL"] = ""

    result = run(["-m", "thinkwatch.run"], env)

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"ThinkWatch cannot start: {message}")
    assert result.stdout == ""  # no banner: nothing was started


def test_the_worker_exits_naming_the_problem(transactional_db: None, tmp_path: Path) -> None:
    env = environment(tmp_path, THINKWATCH_MASTER_KEY="deadbeef" * 8)

    result = run(["-m", "celery", "-A", "thinkwatch", "worker", "--pool", "solo"], env)

    assert result.returncode == 1
    assert "ThinkWatch cannot start: THINKWATCH_MASTER_KEY is not random enough" in result.stderr
    assert "Traceback" not in result.stderr
