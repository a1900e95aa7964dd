"""The nightly retention job: each log family loses what is older than its setting, and
what is left still verifies."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts import runtime
from audit import chain, store
from audit.models import AuditEvent, ChainHead, new_uid
from audit.retention import purge_expired_logs
from tests.factories import gateway_log_record

pytestmark = pytest.mark.django_db

DEFAULT_DAYS = {"gateway": 90, "mcp": 90, "admin": 365, "access": 30}


def gateway_record(at: datetime) -> dict[str, Any]:
    return gateway_log_record(
        created_at=at,
        user_id=7,
        api_key_id=3,
        api_key_prefix="tw-1234abcd",
        provider_id=1,
        provider="openai",
        upstream_model="gpt-4o-mini",
    )


def mcp_record(at: datetime) -> dict[str, Any]:
    return {
        "request_id": "m1",
        "created_at": at,
        "user_id": 7,
        "team_id": None,
        "api_key_id": 3,
        "api_key_prefix": "tw-1234abcd",
        "session_id": "s1",
        "protocol_version": "2025-06-18",
        "method": "tools/call",
        "server_id": 2,
        "server": "github",
        "name": "github__create_issue",
        "upstream_name": "create_issue",
        "arguments": {"title": "hello"},
        "status": "ok",
        "error_code": None,
        "error_message": "",
        "latency_ms": 12.0,
        "client_ip": "127.0.0.1",
        "user_agent": "test",
    }


def admin_record(at: datetime) -> dict[str, Any]:
    return {
        "created_at": at,
        "action": "update",
        "actor_id": 1,
        "actor": "alice@example.com",
        "api_key_prefix": "",
        "object_type": "providers.provider",
        "object_id": "1",
        "object_repr": "openai",
        "before": {"enabled": True},
        "after": {"enabled": False},
        "detail": {},
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "via": "console",
    }


def access_record(at: datetime) -> dict[str, Any]:
    return {
        "created_at": at,
        "port": "gateway",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status_code": 200,
        "latency_ms": 3.0,
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "user_id": 7,
        "request_id": "r1",
    }


RECORDS = {
    "gateway": gateway_record,
    "mcp": mcp_record,
    "admin": admin_record,
    "access": access_record,
}


def append(family: str, *ages_in_days: float) -> list[str]:
    """Store one record of `family` per age (oldest first, as they would arrive); their uids."""
    now = timezone.now()
    records = [
        {**RECORDS[family](now - timedelta(days=age)), "uid": new_uid()} for age in ages_in_days
    ]
    store.current().append(family, records)
    return [record["uid"] for record in records]


def kept(family: str, uids: list[str]) -> int:
    return chain.FAMILIES[family].objects.filter(uid__in=uids).count()


def assert_chain_verifies(family: str) -> None:
    head = ChainHead.objects.get(family=family)
    verdict = chain.verify(
        family,
        store.iterate(store.current(), family, after_seq=head.anchor_seq),
        previous=(head.anchor_seq, head.anchor_hash),
        head=(head.seq, head.hash),
    )
    assert verdict.ok, verdict.reason
    assert verdict.checked == head.seq - head.anchor_seq


def purge_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="audit.retention_purge"))


@pytest.mark.parametrize("family", list(RECORDS))
def test_it_deletes_only_records_older_than_the_family_retention(family: str) -> None:
    days = DEFAULT_DAYS[family]
    old = append(family, days + 30, days + 2, days + 1)
    young = append(family, days - 1, 0)

    purge_expired_logs()

    assert (kept(family, old), kept(family, young)) == (0, 2)


@pytest.mark.parametrize("family", list(RECORDS))
def test_what_is_left_of_a_family_still_verifies(family: str) -> None:
    days = DEFAULT_DAYS[family]
    append(family, days + 5, days + 1)
    append(family, days - 1, 1)

    purge_expired_logs()

    assert ChainHead.objects.get(family=family).anchor_seq == 2
    assert_chain_verifies(family)


def test_it_leaves_the_other_families_alone_when_one_is_purged() -> None:
    gateway = append("gateway", 100)
    mcp = append("mcp", 80)
    access = append("access", 20)

    purge_expired_logs()

    assert (kept("gateway", gateway), kept("mcp", mcp), kept("access", access)) == (0, 1, 1)


def test_it_follows_the_runtime_setting() -> None:
    runtime.update({"audit.retention_days.access": 7})
    gone = append("access", 8)
    stays = append("access", 6)

    purge_expired_logs()

    assert (kept("access", gone), kept("access", stays)) == (0, 1)


def test_it_keeps_a_family_forever_when_its_retention_is_zero() -> None:
    runtime.update({"audit.retention_days.gateway": 0})
    ancient = append("gateway", 3650)

    purged = purge_expired_logs()

    assert kept("gateway", ancient) == 1
    assert "gateway" not in purged


def test_it_records_what_it_purged_in_the_admin_audit_log() -> None:
    append("gateway", 200, 100)
    append("access", 31)

    purge_expired_logs()

    [event] = purge_events()
    assert event.detail["purged"] == {"gateway": 2, "mcp": 0, "admin": 0, "access": 1}
    assert event.via == ""
    assert_chain_verifies("admin")


def test_it_changes_nothing_when_run_again() -> None:
    append("gateway", 100, 1)
    first = purge_expired_logs()
    head = ChainHead.objects.values().get(family="gateway")

    second = purge_expired_logs()

    assert (first["gateway"], second["gateway"]) == (1, 0)
    assert ChainHead.objects.values().get(family="gateway") == head
    assert len(purge_events()) == 1


def test_it_records_nothing_when_nothing_was_old_enough() -> None:
    append("gateway", 1)

    purge_expired_logs()

    assert purge_events() == []
