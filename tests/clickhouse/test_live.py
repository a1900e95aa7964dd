"""The live dashboard and the log changelists with ClickHouse as the store: the same
numbers as from SQL for the same records, under the same scopes."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import Q
from django.test import Client
from django.utils import timezone

from accounts.access import log_filter
from audit import live, store
from audit.store import SqlStore
from tests.clickhouse.conftest import gateway_record, person
from tests.clickhouse.test_store import mcp_record

NOW = timezone.now().replace(microsecond=0)


def traffic(dora: User) -> dict[str, list[dict[str, Any]]]:
    """Ten gateway records in the window (two of them Dora's), one too old, three MCP calls."""
    at = [NOW - timedelta(seconds=10 * n + 1) for n in range(10)]
    gateway = [
        gateway_record(
            n,
            created_at=at[n],
            latency_ms=float(100 * (n + 1)),
            model="claude-x" if n % 3 == 0 else "gpt-4o",
            cost_usd=Decimal("0.25") if n % 3 == 0 else Decimal("0.01"),
            status_code=502 if n == 4 else 200,
            user_id=dora.pk if n in (2, 7) else None,
        )
        for n in range(10)
    ]
    gateway.append(gateway_record(99, created_at=NOW - timedelta(minutes=6)))
    mcp = [
        mcp_record(n, created_at=NOW - timedelta(seconds=n + 1), status=status)
        for n, status in enumerate(["ok", "tool_error", "ok"])
    ]
    return {"gateway": gateway, "mcp": mcp}


@pytest.fixture
def dora(db: None) -> User:
    return person("dora@example.com", "logs:read_own")


@pytest.fixture
def both(ch: str, dora: User) -> None:
    """The same records in SQL and in ClickHouse."""
    for family, records in traffic(dora).items():
        SqlStore().append(family, [dict(r) for r in records])
        store.current().append(family, [dict(r) for r in records])


def snapshots(settings: Any, ch: str, scope: Q) -> tuple[dict[str, Any], dict[str, Any]]:
    settings.CLICKHOUSE_URL = ""
    from_sql = live.snapshot(scope, NOW)
    settings.CLICKHOUSE_URL = ch
    return from_sql, live.snapshot(scope, NOW)


def test_the_dashboard_reads_clickhouse_and_shows_what_sql_shows(
    settings: Any, ch: str, both: None, alice: User
) -> None:
    from_sql, from_clickhouse = snapshots(settings, ch, log_filter(alice))

    assert from_clickhouse == from_sql
    assert from_clickhouse["requests"] == 10
    assert from_clickhouse["errors"] == 1
    assert from_clickhouse["tokens"] == 10 * 30
    assert Decimal(str(from_clickhouse["cost_usd"])) == Decimal("1.06")
    assert from_clickhouse["latency_ms"] == {"p50": 500.0, "p95": 1000.0}
    assert (from_clickhouse["mcp_calls"], from_clickhouse["mcp_errors"]) == (3, 1)
    # The chart covers 15 minutes: the record from 6 minutes ago is on it.
    assert sum(point["requests"] for point in from_clickhouse["series"]) == 11
    by_requests = from_clickhouse["top_models"]["by_requests"]
    assert [(m["name"], m["requests"]) for m in by_requests] == [("gpt-4o", 6), ("claude-x", 4)]
    by_cost = from_clickhouse["top_models"]["by_cost"]
    assert [m["name"] for m in by_cost] == ["claude-x", "gpt-4o"]


def test_the_dashboard_on_clickhouse_keeps_to_the_viewers_scope(
    settings: Any, ch: str, both: None, dora: User
) -> None:
    from_sql, from_clickhouse = snapshots(settings, ch, log_filter(dora))

    assert from_clickhouse == from_sql
    assert from_clickhouse["requests"] == 2
    assert [u["name"] for u in from_clickhouse["top_users"]["by_requests"]] == [dora.username]


def test_the_dashboard_on_clickhouse_shows_an_empty_window(
    settings: Any, ch: str, alice: User
) -> None:
    settings.CLICKHOUSE_URL = ch

    snapshot = live.snapshot(log_filter(alice), NOW)

    assert (snapshot["requests"], snapshot["cost_usd"]) == (0, 0.0)
    assert snapshot["latency_ms"] == {"p50": None, "p95": None}
    assert snapshot["top_models"] == {"by_requests": [], "by_cost": []}


def test_the_log_changelists_lead_to_the_explorer_that_reads_clickhouse(
    ch: str, alice: User, dora: User
) -> None:
    record = gateway_record(1, created_at=NOW, request_id="req-in-clickhouse")
    store.current().append("gateway", [record])  # seals it: the record gets its seq
    console = Client()
    console.force_login(alice)

    listing = console.get("/admin/audit/gatewaylog/", follow=True)
    seq = record["seq"]
    one = console.get(f"/admin/audit/gatewaylog/{seq}/change/", follow=True)

    assert listing.redirect_chain == [("/admin/logs/?tab=gateway", 302)]
    assert "req-in-clickhouse" in listing.content.decode()
    assert one.redirect_chain == [(f"/admin/logs/gateway/{seq}/", 302)]
    assert "req-in-clickhouse" in one.content.decode()
    assert console.get("/admin/audit/mcplog/").url == "/admin/logs/?tab=mcp"


def test_the_changelists_stay_closed_to_those_who_may_not_read_logs(ch: str) -> None:
    console = Client()
    console.force_login(person("carl@example.com", "models:read"))

    response = console.get("/admin/audit/gatewaylog/")

    assert response.status_code in (302, 403)
    assert "/admin/logs/" not in response.get("Location", "")
