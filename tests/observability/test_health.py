"""Readiness names every configured dependency, each checked within a bounded time; the
console's /api/health adds pool figures and versions for those who may read settings."""

import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings

from providers.models import Provider
from tests.conftest import LiveServer, free_port
from tests.factories import (
    ProviderFactory,
    RoleAssignmentFactory,
    RoleFactory,
    UserFactory,
    make_key,
)
from tests.quotas.test_instances import RedisServer
from thinkwatch.health import CHECK_TIMEOUT

PASSWORD = "hunter2-redis-password"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in body["dependencies"]}


def test_it_lists_each_dependency_with_its_latency(
    gateway: LiveServer, openai_provider: Provider
) -> None:
    response = httpx.get(f"{gateway.url}/health/ready")

    database = by_name(response.json())["database"]
    assert response.status_code == 200
    assert database["status"] == "ok"
    assert database["latency_ms"] >= 0
    assert "version" not in database  # nothing about the software to strangers


def test_it_checks_redis_when_it_is_configured(
    gateway: LiveServer, openai_provider: Provider, own_redis: RedisServer
) -> None:
    with override_settings(REDIS_URL=own_redis.url):
        response = httpx.get(f"{gateway.url}/health/ready")

    assert response.status_code == 200
    assert by_name(response.json())["redis"]["status"] == "ok"


def test_it_is_not_ready_when_redis_is_unreachable(
    gateway: LiveServer, openai_provider: Provider
) -> None:
    with override_settings(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"):
        response = httpx.get(f"{gateway.url}/health/ready")

    body = response.json()
    assert response.status_code == 503
    assert by_name(body)["redis"]["status"] == "failed"
    assert by_name(body)["database"]["status"] == "ok"
    assert body["problems"] == ["redis unreachable: ConnectionError"]
    assert PASSWORD not in response.text


def test_a_dependency_that_never_answers_is_given_up_on_in_time(
    gateway: LiveServer, openai_provider: Provider, silent_port: int
) -> None:
    started = time.monotonic()
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{silent_port}/0"):
        response = httpx.get(f"{gateway.url}/health/ready", timeout=30)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["problems"] == [f"redis did not answer within {CHECK_TIMEOUT:g} s"]
    assert elapsed < CHECK_TIMEOUT + 1.5


def test_the_checks_run_at_the_same_time(
    gateway: LiveServer, openai_provider: Provider, silent_port: int
) -> None:
    started = time.monotonic()
    silent = f"redis://127.0.0.1:{silent_port}/0"
    with override_settings(
        REDIS_URL=silent, CLICKHOUSE_URL=f"clickhouse://127.0.0.1:{silent_port}/thinkwatch"
    ):
        response = httpx.get(f"{gateway.url}/health/ready", timeout=30)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert set(by_name(response.json())) == {"database", "redis", "clickhouse"}
    assert response.json()["problems"] == [
        f"redis did not answer within {CHECK_TIMEOUT:g} s",
        f"clickhouse did not answer within {CHECK_TIMEOUT:g} s",
    ]
    assert elapsed < 2 * CHECK_TIMEOUT


def test_it_checks_clickhouse_when_it_is_configured(
    gateway: LiveServer, openai_provider: Provider, clickhouse_url: str
) -> None:
    with override_settings(CLICKHOUSE_URL=clickhouse_url):
        response = httpx.get(f"{gateway.url}/health/ready")

    assert response.status_code == 200
    assert by_name(response.json())["clickhouse"]["status"] == "ok"


def test_it_is_not_ready_when_clickhouse_is_unreachable(
    gateway: LiveServer, openai_provider: Provider
) -> None:
    with override_settings(CLICKHOUSE_URL=f"clickhouse://127.0.0.1:{free_port()}/thinkwatch"):
        response = httpx.get(f"{gateway.url}/health/ready")

    body = response.json()
    assert response.status_code == 503
    assert by_name(body)["clickhouse"]["status"] == "failed"
    assert body["problems"][0].startswith("clickhouse unreachable: ")


def test_it_still_needs_an_enabled_provider(gateway: LiveServer) -> None:
    ProviderFactory(enabled=False)

    response = httpx.get(f"{gateway.url}/health/ready")

    assert response.status_code == 503
    assert by_name(response.json())["database"]["status"] == "ok"
    assert response.json()["problems"] == ["no provider is enabled"]


# --- /api/health ---------------------------------------------------------------------------


@pytest.fixture
def carol(db: None) -> User:
    """Carol may read the settings."""
    user = cast(User, UserFactory(username="carol@example.com"))
    role = RoleFactory(
        name="Settings reader", slug="settings-reader", permissions=["settings:read"]
    )
    RoleAssignmentFactory(user=user, role=role, team=None)
    return user


def api_for(user: User) -> Client:
    _, key = make_key(user, name="console", surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.django_db
def test_the_api_needs_settings_read(bob: User) -> None:
    ProviderFactory()

    response = api_for(bob).get("/api/health")

    assert response.status_code == 403
    assert response.json() == {"detail": "You need the settings:read permission."}


@pytest.mark.django_db
def test_the_api_refuses_an_anonymous_caller() -> None:
    assert Client().get("/api/health").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_api_gives_latencies_pools_and_versions(carol: User, own_redis: RedisServer) -> None:
    ProviderFactory()
    client = api_for(carol)

    with override_settings(REDIS_URL=own_redis.url):
        response = client.get("/api/health")

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert {d["name"]: d["status"] for d in body["dependencies"]} == {
        "database": "ok",
        "redis": "ok",
    }
    assert all(d["latency_ms"] >= 0 for d in body["dependencies"])
    redis_pool = body["pools"]["redis"]
    assert redis_pool["max"] == settings.REDIS_MAX_CONNECTIONS
    assert redis_pool["in_use"] + redis_pool["available"] >= 1  # the check's connection
    assert body["pools"]["audit_queue"]["sink"] == "redis"
    assert body["pools"]["audit_queue"]["depth"] >= 0
    from django.db import connection

    if connection.vendor == "sqlite":
        assert body["pools"]["database"] is None  # SQLite: no connection pool
    else:
        assert body["pools"]["database"]["requests_num"] >= 1  # psycopg pool statistics
    assert body["versions"]["redis"].startswith("Redis ")
    assert body["versions"]["database"].startswith(("SQLite ", "PostgreSQL "))
    assert {"thinkwatch", "python", "django"} <= set(body["versions"])


@pytest.mark.django_db(transaction=True)
def test_the_api_reports_a_failed_dependency_without_its_url(carol: User) -> None:
    ProviderFactory()
    client = api_for(carol)

    with override_settings(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"):
        response = client.get("/api/health")

    assert response.status_code == 200
    assert response.json()["status"] == "unavailable"
    assert response.json()["problems"] == ["redis unreachable: ConnectionError"]
    assert PASSWORD not in response.content.decode()
    assert "redis://" not in response.content.decode()
