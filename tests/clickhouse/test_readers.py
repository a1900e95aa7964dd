"""The console's log explorer and usage reports reading from ClickHouse: the same filters,
pages, scoping and numbers as on SQL, and filter values that stay values."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Membership, Team
from audit import store
from audit.clickhouse import schema
from audit.models import AuditEvent
from audit.store import SqlStore
from quotas.models import QuotaReset
from tests.clickhouse.conftest import START, api_for, gateway_record, person, rows_in
from tests.factories import BudgetFactory, TeamFactory

HOSTILE = "o'brien\\\"); DROP TABLE gateway_log; --"


def newest_first(records: list[dict[str, Any]]) -> list[int]:
    keys = sorted(((schema.micros(r["created_at"]), r["seq"]) for r in records), reverse=True)
    return [seq for _, seq in keys]


def every_page(api: Client, path: str, **params: Any) -> list[list[int]]:
    pages, cursor = [], ""
    while True:
        body = api.get(path, {**params, "cursor": cursor}).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def signed_in(user: User) -> Client:
    console = Client()
    console.force_login(user)
    return console


@pytest.fixture
def dora(db: None) -> User:
    """Dora may read her own records only."""
    return person("dora@example.com", "logs:read_own")


@pytest.fixture
def eve(db: None) -> User:
    """Eve reads every gateway and MCP record, but neither the admin audit nor access log."""
    return person("eve@example.com", "logs:read_all")


@pytest.fixture
def frank(db: None) -> User:
    """Frank audits: the admin audit log and the access log."""
    return person("frank@example.com", "audit:read")


@pytest.fixture
def many(ch: str) -> list[int]:
    records = [gateway_record(n) for n in range(250)]
    store.current().append("gateway", records)
    return newest_first(records)


@pytest.fixture
def mixed(ch: str, dora: User) -> dict[str, Any]:
    team = TeamFactory(name="research")
    store.current().append(
        "gateway",
        [
            gateway_record(1, user_id=dora.pk, team_id=team.pk, api_key_prefix="tw-0000dora"),
            gateway_record(2, model="claude-sonnet-4", status_code=429),
            gateway_record(3, status_code=502, request_id="abc-123"),
            gateway_record(40, team_id=team.pk),
            gateway_record(80, model=HOSTILE),
        ],
    )
    return {"dora": dora, "team": team}


# --- the explorer ----------------------------------------------------------------------------


def test_it_pages_the_api_through_every_record_once_newest_first(
    alice: User, many: list[int]
) -> None:
    pages = every_page(api_for(alice), "/api/logs/gateway", limit=100)

    assert [len(p) for p in pages] == [100, 100, 50]
    assert [i for p in pages for i in p] == many


def test_it_pages_the_console_through_every_record_once_newest_first(
    alice: User, many: list[int]
) -> None:
    console, seen, query = signed_in(alice), [], "?tab=gateway"
    while query:
        response = console.get(f"/admin/logs/{query}")
        seen += [int(url.rstrip("/").rsplit("/", 1)[1]) for url, _ in response.context["rows"]]
        query = response.context["next_url"]

    assert seen == many


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
        ({"model": HOSTILE}, ["req-80"]),
        ({"request_id": "x' OR '1'='1"}, []),
        ({"key": "' OR 1=1 --"}, []),
    ],
)
def test_it_filters_gateway_records(
    alice: User, mixed: dict[str, Any], params: dict[str, str], expected: list[str]
) -> None:
    body = api_for(alice).get("/api/logs/gateway", params).json()

    assert [item["request_id"] for item in body["items"]] == expected


def test_it_treats_a_filter_value_as_data_not_sql(alice: User, mixed: dict[str, Any]) -> None:
    response = api_for(alice).get("/api/logs/gateway", {"model": f"{HOSTILE}' OR ''='"})

    assert response.json()["items"] == []
    assert rows_in("gateway") == 5


def test_it_shows_a_reader_of_their_own_records_only_those(
    mixed: dict[str, Any], dora: User
) -> None:
    body = api_for(dora).get("/api/logs/gateway").json()

    assert [item["user_id"] for item in body["items"]] == [dora.pk]


def test_it_shows_a_record_in_detail_to_someone_who_may_see_it(
    mixed: dict[str, Any], dora: User
) -> None:
    (own,) = api_for(dora).get("/api/logs/gateway").json()["items"]

    response = signed_in(dora).get(f"/admin/logs/gateway/{own['id']}/")

    assert response.status_code == 200
    assert ("request id", "req-1") in response.context["fields"]


def test_it_hides_the_detail_of_someone_elses_record(
    alice: User, mixed: dict[str, Any], dora: User
) -> None:
    items = api_for(alice).get("/api/logs/gateway", {"request_id": "abc-123"}).json()["items"]

    response = signed_in(dora).get(f"/admin/logs/gateway/{items[0]['id']}/")

    assert response.status_code == 404


def test_it_shows_the_admin_audit_log_as_mirrored(ch: str, frank: User) -> None:
    AuditEvent.objects.create(action="update", object_type="providers.provider", object_id="7")
    AuditEvent.objects.create(action="update", object_type="accounts.team", object_id="8")

    body = api_for(frank).get("/api/audit", {"object_type": "providers.provider"}).json()

    assert [(e["action"], e["object_id"]) for e in body["items"]] == [("update", "7")]


def test_it_shows_the_access_log_to_an_auditor(ch: str, frank: User) -> None:
    store.current().append(
        "access",
        [
            {
                "uid": f"a-{n}",
                "created_at": START + timedelta(seconds=n),
                "port": "gateway",
                "method": "POST",
                "path": f"/v1/chat/completions?n={n}",
                "status_code": status,
                "latency_ms": 5.0,
                "client_ip": "10.0.0.1",
                "user_agent": "sdk",
                "user_id": None,
                "request_id": f"r-{n}",
            }
            for n, status in enumerate([200, 401, 200])
        ],
    )

    body = api_for(frank).get("/api/logs/access", {"status": "error"}).json()

    assert [(i["request_id"], i["status_code"]) for i in body["items"]] == [("r-1", 401)]


def test_it_refuses_the_access_log_without_audit_read(ch: str, eve: User) -> None:
    assert api_for(eve).get("/api/logs/access").status_code == 403
    assert signed_in(eve).get("/admin/logs/?tab=access").status_code == 403


# --- usage and cost --------------------------------------------------------------------------


def at(day: int, month: int = 3) -> datetime:
    return datetime(2026, month, day, 12, 0, tzinfo=UTC)


@pytest.fixture
def bob_team(bob: User) -> Team:
    team = TeamFactory(name="platform")
    Membership.objects.create(team=team, user=bob)
    return team


@pytest.fixture
def march(ch: str, bob: User, bob_team: Team) -> None:
    """Bob's and someone else's traffic in March 2026, and some either side of it."""
    rows = [
        gateway_record(1, created_at=at(1), user_id=bob.pk, team_id=bob_team.pk, cost_usd=1),
        gateway_record(2, created_at=at(9), user_id=bob.pk, team_id=bob_team.pk, status_code=429),
        gateway_record(3, created_at=at(31), user_id=999, model="claude-x", cost_usd=2),
        gateway_record(4, created_at=at(28, month=2), user_id=bob.pk, cost_usd=50),
        gateway_record(5, created_at=at(1, month=4), user_id=999, cost_usd=50),
    ]
    store.current().append("gateway", rows)


def test_it_sums_usage_by_model_over_the_period(alice: User, march: None) -> None:
    body = api_for(alice).get("/api/usage?group_by=model&start=2026-03-01&end=2026-03-31").json()

    assert [
        (r["label"], r["requests"], r["errors"], Decimal(r["cost_usd"])) for r in body["rows"]
    ] == [
        ("claude-x", 1, 0, Decimal(2)),
        ("gpt-4o-mini", 2, 1, Decimal("1.0001")),
    ]
    totals = body["totals"]
    assert (totals["requests"], totals["input_tokens"], Decimal(totals["cost_usd"])) == (
        3,
        30,
        Decimal("3.0001"),
    )


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [("day", ["2026-03-01", "2026-03-09", "2026-03-31"]), ("team", [None, "*team*"])],
)
def test_it_groups_usage_by_what_was_asked(
    alice: User, march: None, bob_team: Team, group_by: str, keys: list[str | None]
) -> None:
    body = api_for(alice).get(f"/api/usage?group_by={group_by}&start=2026-03-01&end=2026-03-31")

    expected = [str(bob_team.pk) if k == "*team*" else k for k in keys]
    assert sorted((r["key"] for r in body.json()["rows"]), key=str) == sorted(expected, key=str)


def test_it_shows_a_developer_only_their_own_usage(bob: User, march: None) -> None:
    body = api_for(bob).get("/api/usage?group_by=user&start=2026-03-01&end=2026-03-31").json()

    assert [(r["key"], r["requests"]) for r in body["rows"]] == [(str(bob.pk), 2)]


def test_it_exports_usage_from_clickhouse_as_csv(alice: User, march: None) -> None:
    response = signed_in(alice).get(
        "/admin/usage/?group_by=model&start=2026-03-01&end=2026-03-31&format=csv"
    )

    assert list(csv.reader(io.StringIO(response.content.decode())))[1:] == [
        ["claude-x", "claude-x", "1", "0", "10", "20", "2.0000000000"],
        ["gpt-4o-mini", "gpt-4o-mini", "2", "1", "20", "40", "1.0001000000"],
        ["Total", "", "3", "1", "30", "60", "3.0001000000"],
    ]


def test_it_counts_a_budget_from_clickhouse_since_its_last_reset(
    alice: User, bob: User, ch: str
) -> None:
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=Decimal(10))
    store.current().append(
        "gateway", [gateway_record(1, created_at=at(2), user_id=bob.pk, cost_usd=3)]
    )
    with time_machine.travel(at(10), tick=False):
        QuotaReset.objects.create(subject_kind="user", subject_id=str(bob.pk), reason="new job")
    store.current().append(
        "gateway", [gateway_record(2, created_at=at(12), user_id=bob.pk, cost_usd=2)]
    )

    with time_machine.travel(at(20), tick=False):
        response = signed_in(alice).get("/admin/usage/")

    assert [(b.name, b.spent) for b in response.context["budgets"]] == [
        ("bob@example.com", Decimal(2))
    ]


def test_it_reads_usage_only_from_the_store_configured(alice: User, march: None) -> None:
    """The SQL table is empty: every number above came from ClickHouse."""
    from audit.models import GatewayLog

    assert GatewayLog.objects.count() == 0
    assert rows_in("gateway") == 5


# --- the same answers from either store ------------------------------------------------------


def traffic(team: Team, dora: User) -> list[dict[str, Any]]:
    return [
        gateway_record(1, user_id=dora.pk, team_id=team.pk, api_key_prefix="tw-0000dora"),
        gateway_record(2, model="claude-sonnet-4", status_code=429),
        gateway_record(3, status_code=502, request_id="abc-123"),
        gateway_record(40, team_id=team.pk),
        gateway_record(80, model=HOSTILE),
        # One instant for thirty records: pages must break the tie by id (seq) alike.
        *[gateway_record(100 + n, user_id=dora.pk, created_at=START) for n in range(30)],
    ]


def requests_in(sql: bool, url: str, settings: Any, viewer: User, path: str, **params: Any) -> Any:
    settings.CLICKHOUSE_URL = "" if sql else url
    pages, cursor = [], ""
    while True:
        body = api_for(viewer).get(path, {**params, "cursor": cursor, "limit": 7}).json()
        pages.append([i.get("request_id") for i in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"status": "error"},
        {"status": "ok"},
        {"model": HOSTILE},
        {"team": "research"},
        {"user": "dora@example.com"},
        {"since": "2026-11-01T00:00:05Z", "until": "2026-11-01T00:00:16Z"},
    ],
)
def test_it_answers_as_the_sql_store_does(
    settings: Any, ch: str, alice: User, dora: User, params: dict[str, str]
) -> None:
    team = TeamFactory(name="research")
    SqlStore().append("gateway", traffic(team, dora))
    store.current().append("gateway", traffic(team, dora))

    for user in (alice, dora):
        from_sql = requests_in(True, ch, settings, user, "/api/logs/gateway", **params)
        from_clickhouse = requests_in(False, ch, settings, user, "/api/logs/gateway", **params)
        assert from_clickhouse == from_sql


def test_it_shows_the_access_log_as_the_sql_store_does(settings: Any, ch: str, frank: User) -> None:
    def visits() -> list[dict[str, Any]]:
        return [
            {
                "uid": f"v-{n}",
                "created_at": START + timedelta(seconds=n // 3),
                "port": "console",
                "method": "GET",
                "path": "/admin/logs/" if n % 2 else "/api/usage",
                "status_code": 403 if n % 5 == 0 else 200,
                "latency_ms": 1.0,
                "client_ip": None,
                "user_agent": "",
                "user_id": None,
                "request_id": f"visit-{n}",
            }
            for n in range(20)
        ]

    SqlStore().append("access", visits())
    store.current().append("access", visits())

    for params in ({}, {"status": "error"}, {"request": "/admin/"}):
        from_sql = requests_in(True, ch, settings, frank, "/api/logs/access", **params)
        from_clickhouse = requests_in(False, ch, settings, frank, "/api/logs/access", **params)
        assert from_clickhouse == from_sql


def test_it_shows_the_access_tab_in_the_console(ch: str, frank: User) -> None:
    store.current().append(
        "access",
        [
            {
                "uid": "visit",
                "created_at": START,
                "port": "gateway",
                "method": "POST",
                "path": "/v1/messages",
                "status_code": 401,
                "latency_ms": 2.4,
                "client_ip": "2001:db8::7",
                "user_agent": "sdk",
                "user_id": None,
                "request_id": "r-1",
            }
        ],
    )

    response = signed_in(frank).get("/admin/logs/?tab=access")

    (url, cells), *_ = response.context["rows"]
    assert cells[1:] == ["gateway", "POST", "/v1/messages", 401, "2", "", "2001:db8::7"]
    assert signed_in(frank).get(url).status_code == 200
