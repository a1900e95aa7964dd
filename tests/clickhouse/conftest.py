"""A real ClickHouse server for these tests: the one deploy/clickhouse.sh starts on
127.0.0.1:19000 (started here if it does not answer), a database of our own for the
session with the migrations applied, and empty tables for every test.

CLICKHOUSE_TEST_URL points the tests at another server (its database name is replaced).
"""

import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from django.contrib.auth.models import User
from django.test import Client as HttpClient
from django.test import override_settings

from accounts.models import RoleAssignment
from audit.clickhouse import client, migrate, schema
from tests.factories import RoleAssignmentFactory, RoleFactory, UserFactory, make_key

ROOT = Path(__file__).resolve().parents[2]
SERVER = os.environ.get("CLICKHOUSE_TEST_URL", "clickhouse://default:@127.0.0.1:19000/")
START = datetime(2026, 11, 1, tzinfo=UTC)


def _answers(url: str) -> bool:
    try:
        Client.from_url(url.rsplit("/", 1)[0] + "/").execute("SELECT 1")
    except (ClickHouseError, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """CLICKHOUSE_URL of a fresh database, migrated, dropped at the end of the session."""
    if not _answers(SERVER):
        subprocess.run(["bash", str(ROOT / "deploy" / "clickhouse.sh")], check=True)
    url = f"{SERVER.rsplit('/', 1)[0]}/tw_test_{secrets.token_hex(4)}"
    with override_settings(CLICKHOUSE_URL=url):
        migrate.apply()
    yield url
    where = client.target(url)
    client.client(where).execute(f"DROP DATABASE IF EXISTS {where.database}")
    client.forget_database(where)


@pytest.fixture
def ch(settings: Any, clickhouse_url: str, db: None) -> str:
    """ClickHouse as the store, its log tables empty (the SQL chain heads are, too)."""
    settings.CLICKHOUSE_URL = clickhouse_url
    for family in schema.TABLES:
        client.execute(f"TRUNCATE TABLE {schema.table(family)}")
    return clickhouse_url


def rows_in(family: str) -> int:
    return int(client.execute(f"SELECT count() FROM {schema.table(family)}")[0][0])  # noqa: S608


def gateway_record(n: int, **fields: Any) -> dict[str, Any]:
    """A gateway record as the pipeline hands it to the store; every 7 share a second."""
    return {
        "uid": f"uid-{n:06d}-{secrets.token_hex(4)}",
        "request_id": f"req-{n}",
        "created_at": START + timedelta(seconds=n // 7, microseconds=n),
        "user_id": None,
        "team_id": None,
        "api_key_id": None,
        "api_key_prefix": "",
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "gpt-4o-mini",
        "provider_id": None,
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "streamed": False,
        "input_tokens": 10,
        "output_tokens": 20,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "weighted_tokens": 30,
        "cost_usd": Decimal("0.0001"),
        "latency_ms": 12.5,
        "ttft_ms": None,
        "status_code": 200,
        "error_code": "",
        "error_message": "",
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "disconnected": False,
        "usage_estimated": False,
        "routing": {
            "strategy": "weighted",
            "attempts": [{"route_id": 1, "provider": "openai", "outcome": "ok", "ms": 11.5}],
        },
        **fields,
    }


def person(username: str, *permissions: str) -> User:
    """A user holding exactly a custom role with these permissions."""
    user = UserFactory(username=username)
    RoleAssignment.objects.filter(user=user).delete()
    RoleAssignmentFactory(user=user, role=RoleFactory(permissions=list(permissions)))
    return user


def api_for(user: User) -> HttpClient:
    return HttpClient(HTTP_AUTHORIZATION=f"Bearer {make_key(user, surfaces=['console'])[1]}")
