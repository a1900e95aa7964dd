"""The log explorer and its API: filters, keyset pages that stay fast on large tables, and
records shown only to those who may see them."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import RoleAssignment
from audit import explorer, store
from audit.explorer import Filters
from audit.models import AuditEvent, GatewayLog
from tests.factories import (
    McpLogFactory,
    RoleAssignmentFactory,
    RoleFactory,
    TeamFactory,
    UserFactory,
    make_key,
)

START = datetime(2026, 11, 1, tzinfo=UTC)


def gateway_record(n: int, **fields: Any) -> dict[str, Any]:
    """A gateway log record as the gateway's writer takes it; every 7 share a timestamp, so
    pages must order ties by id."""
    return {
        "request_id": f"req-{n}",
        "created_at": START + timedelta(seconds=n // 7),
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
        **fields,
    }


def person(username: str, *permissions: str) -> User:
    """A user holding exactly a custom role with these permissions (not the default role)."""
    user = UserFactory(username=username)
    RoleAssignment.objects.filter(user=user).delete()
    RoleAssignmentFactory(user=user, role=RoleFactory(permissions=list(permissions)))
    return user


def api_for(user: User) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_key(user, surfaces=['console'])[1]}")


def newest_first(queryset: Any) -> list[int]:
    return list(queryset.order_by("-created_at", "-id").values_list("id", flat=True))


def record_id(detail_url: str) -> int:
    return int(detail_url.rstrip("/").rsplit("/", 1)[1])


def every_page(client: Client, path: str, **params: Any) -> list[list[int]]:
    pages, cursor = [], ""
    while True:
        body = client.get(path, {**params, "cursor": cursor}).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
def alice_api(alice: User) -> Client:
    return api_for(alice)


@pytest.fixture
def dora(db: None) -> User:
    """Dora may read her own records only."""
    return person("dora@example.com", "logs:read_own")


@pytest.fixture
def eve(db: None) -> User:
    """Eve reads every gateway and MCP record, but not the admin audit log."""
    return person("eve@example.com", "logs:read_all")


@pytest.fixture
def many(db: None) -> list[int]:
    store.current().append("gateway", [gateway_record(n) for n in range(1234)])
    return newest_first(GatewayLog.objects.all())


def test_it_pages_the_api_through_every_record_once_newest_first(
    alice_api: Client, many: list[int]
) -> None:
    pages = every_page(alice_api, "/api/logs/gateway", limit=100)

    assert [len(p) for p in pages] == [100] * 12 + [34]
    assert [i for p in pages for i in p] == many


def test_it_pages_the_console_through_every_record_once_newest_first(
    alice: User, many: list[int]
) -> None:
    console = Client()
    console.force_login(alice)
    seen, query = [], "?tab=gateway"
    while query:
        response = console.get(f"/admin/logs/{query}")
        seen += [record_id(url) for url, _ in response.context["rows"]]
        query = response.context["next_url"]

    assert seen == many


@pytest.fixture
def mixed(db: None, dora: User) -> dict[str, Any]:
    team = TeamFactory(name="research")
    store.current().append(
        "gateway",
        [
            gateway_record(1, user_id=dora.pk, team_id=team.pk, api_key_prefix="tw-0000dora"),
            gateway_record(2, model="claude-sonnet-4", status_code=429),
            gateway_record(3, status_code=502, request_id="abc-123"),
            gateway_record(40, team_id=team.pk),
            gateway_record(80),
        ],
    )
    return {"dora": dora, "team": team}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model": "claude-sonnet-4"}, ["req-2"]),
        ({"status": "error"}, ["abc-123", "req-2"]),
        ({"status": "429"}, ["req-2"]),
        ({"status": "ok"}, ["req-80", "req-40", "req-1"]),
        ({"request_id": "abc-123"}, ["abc-123"]),
        ({"key": "tw-0000dora"}, ["req-1"]),
        ({"team": "research"}, ["req-40", "req-1"]),
        ({"user": "dora@example.com"}, ["req-1"]),
        ({"since": "2026-11-01T00:00:05Z"}, ["req-80", "req-40"]),
        ({"until": "2026-11-01T00:00:05Z"}, ["abc-123", "req-2", "req-1"]),
        ({"since": "2026-11-01T00:00:05", "until": "2026-11-01T00:00:06"}, ["req-40"]),
    ],
)
def test_it_filters_gateway_records(
    alice_api: Client, mixed: dict[str, Any], params: dict[str, str], expected: list[str]
) -> None:
    body = alice_api.get("/api/logs/gateway", params).json()

    assert [item["request_id"] for item in body["items"]] == expected


def test_it_refuses_a_malformed_filter(alice_api: Client) -> None:
    response = alice_api.get("/api/logs/gateway", {"status": "sometimes"})

    assert response.status_code == 422
    assert "status must be ok, error or an HTTP status code" in response.json()["detail"]


def test_it_refuses_a_forged_cursor(alice_api: Client) -> None:
    response = alice_api.get("/api/logs/gateway", {"cursor": "not-a-cursor"})

    assert response.status_code == 422


def test_it_shows_a_reader_of_their_own_records_only_those(
    mixed: dict[str, Any], dora: User
) -> None:
    body = api_for(dora).get("/api/logs/gateway").json()

    assert [item["user_id"] for item in body["items"]] == [dora.pk]


def test_it_shows_a_reader_of_their_own_records_only_those_in_the_console(
    mixed: dict[str, Any], dora: User
) -> None:
    console = Client()
    console.force_login(dora)

    rows = console.get("/admin/logs/?tab=gateway").context["rows"]

    own = GatewayLog.objects.get(user_id=dora.pk)
    assert [url for url, _ in rows] == [f"/admin/logs/gateway/{own.pk}/"]


def test_it_hides_the_detail_of_someone_elses_record(mixed: dict[str, Any], dora: User) -> None:
    console = Client()
    console.force_login(dora)
    other = GatewayLog.objects.get(request_id="abc-123")

    assert console.get(f"/admin/logs/gateway/{other.pk}/").status_code == 404


def test_it_shows_a_record_in_detail(mixed: dict[str, Any], alice: User) -> None:
    console = Client()
    console.force_login(alice)
    record = GatewayLog.objects.get(request_id="abc-123")

    response = console.get(f"/admin/logs/gateway/{record.pk}/")

    assert response.status_code == 200
    assert ("status code", 502) in response.context["fields"]


@pytest.mark.parametrize("path", ["/admin/logs/?tab=audit", "/admin/audit/auditevent/"])
def test_it_refuses_the_admin_audit_log_in_the_console_without_audit_read(
    eve: User, path: str
) -> None:
    console = Client()
    console.force_login(eve)

    assert console.get(path).status_code == 403


def test_it_refuses_the_admin_audit_log_through_the_api_without_audit_read(eve: User) -> None:
    response = api_for(eve).get("/api/audit")

    assert response.status_code == 403
    assert response.json() == {"detail": "You need the audit:read permission."}


def test_it_shows_the_admin_audit_log_with_audit_read(db: None) -> None:
    auditor = person("frank@example.com", "audit:read")
    AuditEvent.objects.create(action="update", object_type="providers.provider", object_id="7")

    body = api_for(auditor).get("/api/audit", {"object_type": "providers.provider"}).json()

    assert [(e["action"], e["object_id"]) for e in body["items"]] == [("update", "7")]


def test_it_shows_the_admin_audit_tab_with_audit_read(db: None) -> None:
    auditor = person("frank@example.com", "audit:read")
    AuditEvent.objects.create(action="key.revoke", object_type="accounts.apikey", object_id="3")
    console = Client()
    console.force_login(auditor)

    response = console.get("/admin/logs/", {"tab": "audit", "action": "key.*"})

    assert response.status_code == 200
    assert [cells[1] for _, cells in response.context["rows"]] == ["key.revoke"]


def test_it_hides_mcp_arguments_without_audit_read_bodies(eve: User) -> None:
    McpLogFactory(arguments={"title": "private"}, user_id=eve.pk)

    body = api_for(eve).get("/api/logs/mcp").json()

    assert body["items"][0]["arguments"] is None
    assert body["items"][0]["name"] == "github__create_issue"


def test_it_scopes_mcp_records_like_gateway_records(dora: User) -> None:
    McpLogFactory(user_id=dora.pk, request_id="mine")
    McpLogFactory(user_id=None, request_id="not-mine")

    body = api_for(dora).get("/api/logs/mcp").json()

    assert [item["request_id"] for item in body["items"]] == ["mine"]


def test_it_refuses_gateway_records_to_someone_without_a_log_right(db: None) -> None:
    nobody = person("grace@example.com", "providers:read")

    assert api_for(nobody).get("/api/logs/gateway").status_code == 403


def test_it_scopes_the_admin_changelist_and_never_counts(mixed: dict[str, Any], dora: User) -> None:
    console = Client()
    console.force_login(dora)

    with CaptureQueriesContext(connection) as queries:
        response = console.get("/admin/audit/gatewaylog/")

    assert response.status_code == 200
    assert [r.user_id for r in response.context["cl"].result_list] == [dora.pk]
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


def test_it_pages_the_admin_changelist_without_counting(alice: User, many: list[int]) -> None:
    console = Client()
    console.force_login(alice)

    with CaptureQueriesContext(connection) as queries:
        response = console.get("/admin/audit/gatewaylog/", {"p": "3"})

    shown = [r.pk for r in response.context["cl"].result_list]
    assert shown == many[200:300]
    assert 'href="?p=4"' in response.content.decode()
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


# --- a large table ------------------------------------------------------------------------

# 200,000 records ten seconds apart (~23 days) from 50 users in 5 teams, 8 models, 1% refused.
# One INSERT ... SELECT: SQLite builds the rows itself, ten times faster than binding them.
SEED_LARGE = """
INSERT INTO audit_gatewaylog (
    request_id, created_at, user_id, team_id, api_key_id, api_key_prefix, surface, ingress,
    model, provider_id, provider, upstream_model, streamed, input_tokens, output_tokens,
    cached_tokens, reasoning_tokens, weighted_tokens, cost_usd, latency_ms, ttft_ms,
    status_code, error_code, error_message, client_ip, user_agent, disconnected, usage_estimated,
    uid, chain_hash
)
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < 199999)
SELECT 'req-' || n, strftime('%Y-%m-%d %H:%M:%S', '2026-11-01', '+' || (n * 10) || ' seconds'),
    n % 50 + 1, n % 5 + 1, NULL, '', 'ai_gateway', 'openai_chat', 'model-' || (n % 8), NULL,
    'openai', 'gpt', 0, 10, 20, 0, 0, 30, '0.0001', 12.5, NULL,
    CASE WHEN n % 97 = 0 THEN 429 ELSE 200 END, '', '', '127.0.0.1', 'test', 0, 0, '', ''
FROM seq
"""


@pytest.fixture
def large(db: None) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size = -262144")  # 256 MiB while the indexes are built
        cursor.execute(SEED_LARGE)
    yield
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size = -2000")


FILTERS = {
    "none": {},
    "model": {"model": "model-3"},
    "user": {"user": "7"},
    "team and outcome": {"team": "2", "status": "error"},
    "time range": {"since": "2026-11-10", "until": "2026-11-12"},
}


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's SQL and query plans")
def test_it_reads_filtered_pages_of_a_large_table_through_an_index(
    large: None, alice: User, dora: User
) -> None:
    plans, pages, slowest = {}, {}, 0.0
    for name, params in FILTERS.items():
        filters = Filters.parse(params)
        first = explorer.page("gateway", alice, filters)
        assert first.next_cursor is not None
        started = time.perf_counter()
        pages[name] = explorer.page("gateway", alice, filters, first.next_cursor)
        slowest = max(slowest, time.perf_counter() - started)
        query = explorer.page_query("gateway", alice, filters, first.next_cursor)
        plans[name] = str(query.explain())
    plans["own records"] = str(explorer.page_query("gateway", dora, Filters()).explain())

    assert {n: p for n, p in plans.items() if "USING" not in p or "INDEX" not in p} == {}
    assert {n: p for n, p in plans.items() if "TEMP B-TREE" in p} == {}
    assert {n: len(p.rows) for n, p in pages.items()} == dict.fromkeys(FILTERS, 50)
    assert slowest < 0.5


def test_it_filters_by_a_key_that_still_exists_through_its_id(
    alice_api: Client, dora: User
) -> None:
    key, _ = make_key(dora)
    store.current().append(
        "gateway",
        [
            gateway_record(1, api_key_id=key.pk, api_key_prefix=key.prefix),
            gateway_record(2, api_key_id=None, api_key_prefix=key.prefix),
        ],
    )

    body = alice_api.get("/api/logs/gateway", {"key": key.prefix}).json()

    assert [item["request_id"] for item in body["items"]] == ["req-1"]


@pytest.mark.parametrize("model", ["gatewaylog", "mcplog", "auditevent"])
def test_it_lists_each_log_in_the_admin_with_its_filters(
    mixed: dict[str, Any], alice: User, model: str
) -> None:
    McpLogFactory()
    AuditEvent.objects.create(action="update", object_type="accounts.team", object_id="1")
    console = Client()
    console.force_login(alice)

    response = console.get(f"/admin/audit/{model}/", {"q": "x"})

    assert response.status_code == 200
    assert response.context["cl"].has_filters


@pytest.mark.parametrize("tab", ["gateway", "mcp", "audit"])
def test_it_shows_each_tab_of_the_explorer(mixed: dict[str, Any], alice: User, tab: str) -> None:
    McpLogFactory()
    AuditEvent.objects.create(action="update", object_type="accounts.team", object_id="1")
    console = Client()
    console.force_login(alice)

    response = console.get("/admin/logs/", {"tab": tab})

    assert response.status_code == 200
    assert len(response.context["rows"]) >= 1
    assert b"<script>" not in response.content


def test_it_shows_an_audit_events_changes_side_by_side(alice: User) -> None:
    event = AuditEvent.objects.create(
        action="update",
        object_type="accounts.team",
        object_id="1",
        before={"name": "old", "description": ""},
        after={"name": "new", "description": "ours"},
    )
    console = Client()
    console.force_login(alice)

    response = console.get(f"/admin/logs/audit/{event.pk}/")

    assert response.context["changes"] == [("name", "old", "new"), ("description", "", "ours")]
