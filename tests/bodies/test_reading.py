"""Who may read captured bodies: audit:read_bodies, on a record the reader may see."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from audit import store
from audit.models import GatewayLog, McpLog
from tests.audit.test_log_explorer import api_for, gateway_record, person

pytestmark = pytest.mark.django_db

REQUEST = '{"messages": [{"role": "user", "content": "I am [EMAIL]"}]}'


@pytest.fixture
def frank(db: None) -> User:
    """Frank reads every record and its bodies."""
    return person("frank@example.com", "logs:read_all", "audit:read_bodies")


@pytest.fixture
def grace(db: None) -> User:
    """Grace may read bodies, but sees only her own records."""
    return person("grace@example.com", "logs:read_own", "audit:read_bodies")


@pytest.fixture
def eve(db: None) -> User:
    """Eve reads every record, but not bodies."""
    return person("eve@example.com", "logs:read_all")


@pytest.fixture
def captured(frank: User) -> GatewayLog:
    """A record of Frank's with its bodies inline."""
    fields: dict[str, Any] = {
        "user_id": frank.pk,
        "request_body": REQUEST,
        "response_body": '{"id": "x"}',
        "body_truncated": False,
        "body_redactions": {"email": 1},
    }
    store.current().append("gateway", [gateway_record(1, **fields)])
    return GatewayLog.objects.get()


def test_the_api_returns_inline_bodies_with_their_redaction_counts(
    captured: GatewayLog, frank: User
) -> None:
    response = api_for(frank).get(f"/api/logs/gateway/{captured.pk}/body")

    assert response.status_code == 200
    assert response.json() == {
        "family": "gateway",
        "id": captured.pk,
        "captured": True,
        "stored": "inline",
        "truncated": False,
        "redactions": {"email": 1},
        "sha256": "",
        "request_body": REQUEST,
        "response_body": '{"id": "x"}',
        "arguments": None,
        "result": None,
    }


def test_the_api_refuses_a_reader_without_audit_read_bodies(
    captured: GatewayLog, eve: User
) -> None:
    response = api_for(eve).get(f"/api/logs/gateway/{captured.pk}/body")

    assert response.status_code == 403
    assert "audit:read_bodies" in response.json()["detail"]


def test_the_api_hides_a_record_the_reader_may_not_see(captured: GatewayLog, grace: User) -> None:
    response = api_for(grace).get(f"/api/logs/gateway/{captured.pk}/body")

    assert response.status_code == 404


def test_the_api_says_when_nothing_was_captured(frank: User) -> None:
    store.current().append("mcp", [_mcp_record(frank)])
    record = McpLog.objects.get()

    found = api_for(frank).get(f"/api/logs/mcp/{record.pk}/body").json()

    assert (found["captured"], found["stored"], found["result"]) == (False, "", None)


def test_the_api_knows_only_the_gateway_and_mcp_logs(frank: User) -> None:
    assert api_for(frank).get("/api/logs/access/1/body").status_code == 404


def test_the_console_page_shows_the_bodies(captured: GatewayLog, frank: User) -> None:
    console = Client()
    console.force_login(frank)

    response = console.get(f"/admin/logs/gateway/{captured.pk}/body/")

    assert response.status_code == 200
    assert "I am [EMAIL]" in response.content.decode()
    assert response.context["redactions"] == [("email", 1)]


def test_the_console_page_refuses_a_reader_without_audit_read_bodies(
    captured: GatewayLog, eve: User
) -> None:
    console = Client()
    console.force_login(eve)

    response = console.get(f"/admin/logs/gateway/{captured.pk}/body/")

    assert response.status_code == 403
    assert "[EMAIL]" not in response.content.decode()


def _mcp_record(user: User) -> dict[str, Any]:
    return {
        "request_id": "r1",
        "created_at": timezone.now(),
        "user_id": user.pk,
        "team_id": None,
        "api_key_id": None,
        "api_key_prefix": "",
        "session_id": "",
        "protocol_version": "",
        "method": "tools/call",
        "server_id": None,
        "server": "fx",
        "name": "fx__echo",
        "upstream_name": "echo",
        "arguments": {"message": "x"},
        "status": "ok",
        "error_code": None,
        "error_message": "",
        "latency_ms": 1.0,
        "client_ip": None,
        "user_agent": "",
    }


def test_the_admin_record_page_hides_bodies_without_audit_read_bodies(
    captured: GatewayLog, eve: User
) -> None:
    console = Client()
    console.force_login(eve)

    response = console.get(f"/admin/audit/gatewaylog/{captured.pk}/change/")

    assert response.status_code == 200
    assert "I am [EMAIL]" not in response.content.decode()
    assert "Body redactions" not in response.content.decode()


def test_the_admin_record_page_shows_bodies_with_audit_read_bodies(
    captured: GatewayLog, frank: User
) -> None:
    console = Client()
    console.force_login(frank)

    response = console.get(f"/admin/audit/gatewaylog/{captured.pk}/change/")

    assert "I am [EMAIL]" in response.content.decode()
