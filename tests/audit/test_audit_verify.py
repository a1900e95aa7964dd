"""`manage.py audit_verify`: the chain of each log family, and the first broken link."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit import store
from audit.models import AccessLog, AuditEvent, ChainHead, GatewayLog, McpLog
from tests.factories import gateway_log_record as record

pytestmark = pytest.mark.django_db


def verify(*args: str) -> str:
    out = StringIO()
    call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def broken(*args: str) -> str:
    out = StringIO()
    with pytest.raises(CommandError, match="broken"):
        call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def access(n: int) -> dict[str, Any]:
    return {
        "created_at": datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=n),
        "port": "console",
        "method": "GET",
        "path": f"/admin/{n}/",
        "status_code": 200,
        "latency_ms": 1.25,
        "client_ip": "2001:db8::1",
        "user_agent": "curl/8 ünïcode ✓",
        "user_id": None,
        "request_id": "",
    }


@pytest.fixture
def logs() -> None:
    store.current().append(
        "gateway", [record(request_id=f"r{n}", cost_usd=Decimal("0.1")) for n in range(10)]
    )
    store.current().append("access", [access(n) for n in range(4)])
    AuditEvent.objects.create(action="settings.update", actor="alice", after={"a": [1, 2.5]})
    AuditEvent.objects.create(action="key.revoke", actor="alice", detail={"why": "leak"})


def test_it_reports_every_family_intact(logs: None) -> None:
    out = verify()
    assert "gateway: ok, 10 records (1..10)" in out
    assert "access: ok, 4 records (1..4)" in out
    assert "admin: ok, 2 records (1..2)" in out
    assert "mcp: ok, 0 records (no records)" in out


def test_an_edited_field_is_caught_at_its_record(logs: None) -> None:
    GatewayLog.objects.filter(seq=7).update(output_tokens=99)
    out = broken("--family", "gateway")
    assert "gateway: BROKEN at record 7" in out
    assert "6 records verified before it" in out


def test_an_edited_admin_event_is_caught(logs: None) -> None:
    AuditEvent.objects.filter(seq=1).update(actor="mallory")
    assert "admin: BROKEN at record 1" in broken("--family", "admin")


def test_a_deleted_record_is_caught_as_a_gap(logs: None) -> None:
    AccessLog.objects.filter(seq=2).delete()
    assert "access: BROKEN at record 2: record 2 is missing" in broken("--family", "access")


def test_records_removed_from_the_end_are_caught(logs: None) -> None:
    GatewayLog.objects.filter(seq__gte=9).delete()
    assert "records 9..10 are missing" in broken("--family", "gateway")


def test_a_recomputed_hash_without_the_key_does_not_pass(logs: None) -> None:
    """Someone who edits a row and writes a plain SHA-256 of it as its link is still caught:
    links are keyed with a key derived from the master key."""
    import hashlib

    row = GatewayLog.objects.get(seq=4)
    GatewayLog.objects.filter(pk=row.pk).update(
        output_tokens=0, chain_hash=hashlib.sha256(b"forged").hexdigest()
    )
    assert "BROKEN at record 4" in broken("--family", "gateway")


def test_a_range_is_checked_from_its_predecessor(logs: None) -> None:
    GatewayLog.objects.filter(seq=2).update(output_tokens=99)
    assert "gateway: ok, 5 records (4..8)" in verify(
        "--family", "gateway", "--from", "4", "--to", "8"
    )
    assert "BROKEN at record 2" in broken("--family", "gateway", "--from", "1", "--to", "3")


def test_retention_leaves_an_anchor_the_rest_links_to(logs: None) -> None:
    store.current().purge_before("access", datetime(2026, 12, 1, 0, 0, 2, tzinfo=UTC))
    head = ChainHead.objects.get(family="access")
    assert head.anchor_seq == 2
    assert list(AccessLog.objects.order_by("seq").values_list("seq", flat=True)) == [3, 4]
    assert "access: ok, 2 records (3..4)" in verify("--family", "access")


def test_an_mcp_record_with_json_arguments_round_trips(db: None) -> None:
    store.current().append(
        "mcp",
        [
            {
                "request_id": "m1",
                "created_at": datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC),
                "user_id": 1,
                "team_id": None,
                "api_key_id": 1,
                "api_key_prefix": "tw-abc",
                "session_id": "s",
                "protocol_version": "2025-06-18",
                "method": "tools/call",
                "server_id": 1,
                "server": "github",
                "name": "github__search",
                "upstream_name": "search",
                "arguments": {"q": "naïve", "n": 1.5, "nested": {"b": [1, None, True]}},
                "status": "ok",
                "error_code": None,
                "error_message": "",
                "latency_ms": 12.5,
                "client_ip": "::ffff:127.0.0.1",
                "user_agent": "",
            }
        ],
    )
    assert McpLog.objects.get().seq == 1
    assert "mcp: ok, 1 records (1..1)" in verify("--family", "mcp")
