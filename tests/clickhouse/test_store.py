"""ClickHouseStore: records written once, sealed into the family's chain under the SQL head
lock, read back byte for byte (the chain verifies), kept consistent when ClickHouse took a
batch the SQL commit then lost, and purged without breaking the chain."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, connection

from audit import chain, store
from audit.clickhouse import client, schema
from audit.clickhouse.store import ClickHouseStore, wait_for_mutations
from audit.models import AuditEvent, ChainHead
from tests.clickhouse.conftest import START, gateway_record, rows_in

UNICODE = "délai dépassé — 超时 🚦 \"quoted\" 'single' \\ back\nslash"


def mcp_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "uid": f"mcp-{n}",
        "request_id": f"mcp-req-{n}",
        "created_at": START + timedelta(seconds=n, microseconds=999_999 - n),
        "user_id": 7,
        "team_id": None,
        "api_key_id": 3,
        "api_key_prefix": "tw-1a2b3c4d",
        "session_id": "s-1",
        "protocol_version": "2025-06-18",
        "method": "tools/call",
        "server_id": 11,
        "server": "github",
        "name": "github__create_issue",
        "upstream_name": "create_issue",
        "arguments": {"title": UNICODE, "labels": ["a", "b"], "n": 1.5, "none": None},
        "status": "ok",
        "error_code": None,
        "error_message": "",
        "latency_ms": 0.1 + 0.2,
        "client_ip": "2001:db8::ff00:42:8329",
        "user_agent": UNICODE,
        **fields,
    }


def access_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "uid": f"acc-{n}",
        "created_at": START + timedelta(minutes=n, microseconds=1),
        "port": "console",
        "method": "GET",
        "path": f"/admin/logs/?q=naïve&n={n}",
        "status_code": 200,
        "latency_ms": 3.25,
        "client_ip": "::1",
        "user_agent": "curl/8",
        "user_id": None,
        "request_id": "",
        **fields,
    }


ODD_GATEWAY = {
    "cost_usd": Decimal("12345.1234567891"),
    "ttft_ms": 0.1 + 0.2,
    "error_message": UNICODE,
    "client_ip": "2001:0db8:0000:0000:0000:0000:0000:0001",
    "user_id": 2**62,
    "streamed": True,
}
RECORDS = {
    "gateway": lambda: [
        gateway_record(1, **ODD_GATEWAY),
        gateway_record(2, cost_usd=Decimal("0.0000000001"), client_ip=None),
        gateway_record(3, created_at=datetime(2026, 11, 2, 23, 59, 59, 999_999, tzinfo=UTC)),
    ],
    "mcp": lambda: [mcp_record(1), mcp_record(2, arguments=None, error_code=-32600)],
    "access": lambda: [access_record(1), access_record(2, client_ip=None, user_id=5)],
}


def verdict(family: str, first: int = 0, link: str = "") -> chain.Verdict:
    head = ChainHead.objects.get(family=family)
    rows = store.iterate(store.current(), family, after_seq=first)
    return chain.verify(family, rows, previous=(first, link), head=(head.seq, head.hash))


@pytest.mark.parametrize("family", list(RECORDS))
def test_it_reads_back_what_it_wrote_so_the_chain_verifies(ch: str, family: str) -> None:
    written = RECORDS[family]()

    assert store.current().append(family, written) == len(written)

    read = store.current().read(family)
    assert [chain.canonical(family, r) for r in read] == [
        chain.canonical(family, w) for w in written
    ]
    assert [(r["seq"], r["chain_hash"]) for r in read] == [
        (w["seq"], w["chain_hash"]) for w in written
    ]
    assert verdict(family).ok


def test_it_keeps_microseconds_decimals_and_nulls_exactly(ch: str) -> None:
    written = gateway_record(1, **ODD_GATEWAY) | {"ttft_ms": None}
    store.current().append("gateway", [written])

    (read,) = store.current().read("gateway")

    assert read["created_at"] == written["created_at"]
    assert read["created_at"].microsecond == 1
    assert read["cost_usd"] == Decimal("12345.1234567891")
    assert read["ttft_ms"] is None
    assert read["user_id"] == 2**62
    assert read["streamed"] is True
    assert read["error_message"] == UNICODE


def test_it_mirrors_the_admin_trail_so_it_verifies(ch: str) -> None:
    AuditEvent.objects.create(
        action="update",
        actor="alice@example.com",
        object_type="providers.provider",
        object_id="7",
        object_repr=UNICODE[:200],
        before={"name": "old", "weights": [1, 2.5]},
        after={"name": UNICODE},
        client_ip="2001:db8::1",
    )
    AuditEvent.objects.create(action="auth.sign_in", before=None, after=None)

    read = store.current().read("admin")

    events = AuditEvent.objects.order_by("seq").values()
    assert [r["seq"] for r in read] == [e["seq"] for e in events]
    assert [chain.canonical("admin", r) for r in read] == [
        chain.canonical("admin", e) for e in events
    ]
    assert verdict("admin").ok


def test_it_writes_admin_records_it_is_given_to_sql_first(ch: str) -> None:
    record = {
        "uid": "admin-1",
        "created_at": START,
        "action": "budget.threshold",
        "actor_id": None,
        "actor": "",
        "api_key_prefix": "",
        "object_type": "quotas.budget",
        "object_id": "4",
        "object_repr": "team budget",
        "before": None,
        "after": None,
        "detail": {"percent": 80},
        "client_ip": None,
        "user_agent": "",
        "via": "",
    }

    store.current().append("admin", [record])

    assert AuditEvent.objects.filter(uid="admin-1").exists()
    assert [r["uid"] for r in store.current().read("admin")] == ["admin-1"]


def test_it_skips_records_already_stored_when_the_batch_is_uncertain(ch: str) -> None:
    batch = [gateway_record(n) for n in range(20)]
    store.current().append("gateway", batch)
    again = [dict(r) for r in batch[10:]] + [gateway_record(n) for n in range(20, 25)]

    written = store.current().append("gateway", again, uncertain=True)

    assert written == 5
    assert rows_in("gateway") == 25
    assert verdict("gateway").ok


def test_it_looks_for_stored_uids_only_in_the_batchs_time_span(ch: str) -> None:
    """100,000 rows over 28 hours; the lookup for one minute's batch reads a few granules."""
    client.execute(
        f"INSERT INTO {schema.table('gateway')} (seq, uid, created_at, created_at_us) "  # noqa: S608
        "SELECT number + 1000000, concat('filler-', toString(number)), "
        "toDateTime(intDiv(%(start)s, 1000000) + number), %(start)s + number * 1000000 "
        "FROM system.numbers LIMIT 100000",
        {"start": schema.micros(START)},
    )
    batch = [gateway_record(n, created_at=START + timedelta(hours=5, seconds=n)) for n in range(5)]

    ClickHouseStore._unseen("gateway", batch)

    assert client.client().last_query.progress.rows <= 2 * 8192


def test_it_does_not_duplicate_a_batch_whose_sql_commit_failed(
    ch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.current().append("gateway", [gateway_record(n) for n in range(3)])
    batch = [gateway_record(n) for n in range(3, 8)]

    def lost(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(ChainHead, "save", lost)
        with pytest.raises(DatabaseError):
            store.current().append("gateway", batch)
    assert ChainHead.objects.get(family="gateway").seq == 3  # SQL lost the batch
    assert rows_in("gateway") == 8  # ClickHouse kept it

    written = store.current().append("gateway", [dict(r) for r in batch], uncertain=True)

    head = ChainHead.objects.get(family="gateway")
    assert (written, rows_in("gateway"), head.seq) == (0, 8, 8)
    assert verdict("gateway").ok


def test_it_continues_the_chain_after_a_lost_commit_whatever_comes_next(
    ch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ChainHead.objects.create(family="gateway")

    def lost(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(ChainHead, "save", lost)
        with pytest.raises(DatabaseError):
            store.current().append("gateway", [gateway_record(n) for n in range(4)])

    store.current().append("gateway", [gateway_record(n) for n in range(4, 6)])

    assert [r["seq"] for r in store.current().read("gateway")] == [1, 2, 3, 4, 5, 6]
    assert verdict("gateway").ok


def test_it_purges_the_oldest_records_and_verifies_from_the_anchor(ch: str) -> None:
    old = [gateway_record(n, created_at=START + timedelta(days=n)) for n in range(10)]
    store.current().append("gateway", old)
    cutoff = START + timedelta(days=6)

    gone = store.current().purge_before("gateway", cutoff)

    head = ChainHead.objects.get(family="gateway")
    assert (gone, head.anchor_seq, head.anchor_hash) == (6, 6, old[5]["chain_hash"])
    assert [r["seq"] for r in store.current().read("gateway")] == [7, 8, 9, 10]
    assert verdict("gateway", head.anchor_seq, head.anchor_hash).ok
    assert store.current().purge_before("gateway", cutoff) == 0


def test_it_purges_in_chain_order_up_to_the_first_young_record(ch: str) -> None:
    """A record sealed late but created long ago stays: what is kept is one stretch."""
    records = [
        gateway_record(1, created_at=START),
        gateway_record(2, created_at=START + timedelta(days=30)),
        gateway_record(3, created_at=START - timedelta(days=60)),
    ]
    store.current().append("gateway", records)

    gone = store.current().purge_before("gateway", START + timedelta(days=1))

    assert gone == 1
    assert [r["seq"] for r in store.current().read("gateway")] == [2, 3]
    head = ChainHead.objects.get(family="gateway")
    assert verdict("gateway", head.anchor_seq, head.anchor_hash).ok


def test_it_purges_the_admin_trail_in_sql_and_clickhouse(ch: str) -> None:
    for n in range(4):
        AuditEvent.objects.create(action=f"test.{n}", created_at=START + timedelta(days=n))
    store.current().read("admin")  # mirrored

    gone = store.current().purge_before("admin", START + timedelta(days=2))

    head = ChainHead.objects.get(family="admin")
    remaining = [r["action"] for r in store.current().read("admin")]
    assert gone == 2
    assert remaining == ["test.2", "test.3"]
    assert list(AuditEvent.objects.order_by("seq").values_list("action", flat=True)) == remaining
    assert verdict("admin", head.anchor_seq, head.anchor_hash).ok


def test_it_reads_on_past_a_gap_in_the_sequence(ch: str) -> None:
    store.current().append("gateway", [gateway_record(n) for n in range(6)])
    client.execute(f"ALTER TABLE {schema.table('gateway')} DELETE WHERE seq IN (2, 3)")
    wait_for_mutations("gateway")

    read = store.current().read("gateway", after_seq=0, limit=3)

    assert [r["seq"] for r in read] == [1, 4, 5]
    assert verdict("gateway").broken_seq == 2


def test_it_answers_a_ping(ch: str) -> None:
    store.current().ping()


@pytest.mark.django_db(transaction=True)
def test_it_lets_several_writers_extend_one_chain(settings: Any, clickhouse_url: str) -> None:
    settings.CLICKHOUSE_URL = clickhouse_url
    for family in schema.TABLES:
        client.execute(f"TRUNCATE TABLE {schema.table(family)}")
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(5):
                records = [gateway_record(worker * 1000 + batch * 10 + n) for n in range(10)]
                store.current().append("gateway", records)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert failures == []
    assert [r["seq"] for r in store.current().read("gateway", limit=500)] == list(range(1, 201))
    assert verdict("gateway").ok


def test_it_splits_a_batch_spanning_years_into_inserts_of_at_most_90_weeks(ch: str) -> None:
    """Newer servers refuse an INSERT touching over 100 partitions (one per week here)."""
    records = [gateway_record(n, created_at=START + timedelta(weeks=n)) for n in range(150)]

    store.current().append("gateway", records)

    rows = [schema.to_row("gateway", r) for r in records]
    assert [len(chunk) for chunk in schema.chunks(rows, "gateway")] == [90, 60]
    assert rows_in("gateway") == 150
    assert verdict("gateway").ok
