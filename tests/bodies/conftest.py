"""Body capture: switched on through the runtime setting before the gateway starts (a
running gateway reloads settings only when its config revision moves), a real S3 endpoint
(moto's server on a loopback port) for offloading, and the MCP fixture server.

Fixtures that change settings must come before `gateway` / `client` in a test's
arguments: pytest sets fixtures up in that order."""

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.conf import settings as django_settings
from moto.server import ThreadedMotoServer

from accounts import runtime
from audit import bodies
from audit.models import GatewayLog, McpLog
from gateway import logs
from mcpgw import records
from tests.conftest import LiveServer, free_port
from tests.mcp.conftest import fixture_base, fixture_upstream, upstream_logs  # noqa: F401

S3_KEY_ID = "test-key-id"
S3_SECRET = "test-secret-key"  # moto accepts any


def switch_on(**changes: Any) -> Iterator[None]:
    runtime.update({"audit.capture_bodies": True, **changes})
    yield
    runtime.store.clear()


@pytest.fixture
def capturing(transactional_db: None) -> Iterator[None]:
    """Body capture on, with the default caps."""
    yield from switch_on()


@pytest.fixture
def small_cap(transactional_db: None) -> Iterator[None]:
    """Body capture on, keeping 1 KiB of a body in the record (the least allowed)."""
    yield from switch_on(**{"audit.body_max_bytes": 1024})


@pytest.fixture
def roomy_cap(transactional_db: None) -> Iterator[None]:
    """Body capture on, keeping 256 KiB of a body in the record: a large body is then
    redacted on the worker thread instead of the event loop."""
    yield from switch_on(**{"audit.body_max_bytes": 256 * 1024})


def gateway_logged() -> list[GatewayLog]:
    """Every gateway record, once the gateway, the redaction thread and the pipeline have
    all finished with them."""
    if LiveServer.running is not None:
        LiveServer.running.wait_idle()
    assert bodies.settle(10)
    assert logs.writer.flush(10)
    return list(GatewayLog.objects.order_by("id"))


def mcp_logged() -> list[McpLog]:
    assert bodies.settle(10)
    assert records.writer.flush(10)
    return list(McpLog.objects.order_by("id"))


def segment_bytes() -> bytes:
    """Everything the audit pipeline's segment files hold (the records as first written)."""
    directory = Path(django_settings.DATA_DIR) / "auditq"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.seg")))


# --- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(settings: Any, s3: Any, s3_endpoint: str) -> str:
    """A fresh bucket that bodies are offloaded to."""
    name = f"bodies-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    settings.BODY_S3_BUCKET = name
    settings.BODY_S3_ENDPOINT_URL = s3_endpoint
    settings.BODY_S3_REGION = "us-east-1"
    settings.BODY_S3_ACCESS_KEY_ID = S3_KEY_ID
    settings.BODY_S3_SECRET_ACCESS_KEY = S3_SECRET
    return name
