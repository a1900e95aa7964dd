"""Log records survive shutdown and database outages; config changes cross processes."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from audit.models import GatewayLog
from audit.writer import LogWriter, write_gateway_logs
from providers.models import Provider
from tests.factories import make_key
from tests.processes import Processes

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gateway_process(
    transactional_db: None, tmp_path: Path, openai_provider: Provider
) -> Iterator[Processes]:
    """The gateway as `make run` starts it (with the OpenAI provider configured), holding
    log records for 60 s before writing them."""
    processes = Processes(tmp_path, "gateway", THINKWATCH_AUDIT_FLUSH_SECONDS="60")
    processes.start(processes.gateway)
    yield processes
    processes.close()


def test_it_writes_every_queued_record_on_sigterm(gateway_process: Processes, bob_key: str) -> None:
    headers = {"Authorization": f"Bearer {bob_key}"}
    with httpx.Client(base_url=gateway_process.gateway, headers=headers, timeout=30) as client:
        statuses = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(30)]
        statuses += [
            client.post("/v1/chat/completions", json={**CHAT, "stream": True}).status_code
            for _ in range(20)
        ]
    assert GatewayLog.objects.count() == 0  # still queued: the flush interval is 60 s

    assert gateway_process.stop(signal.SIGTERM) == 0
    assert statuses == [200] * 50
    assert GatewayLog.objects.count() == 50


def test_it_refuses_a_key_revoked_by_another_process_within_a_second(
    gateway_process: Processes, bob: User, alice: User
) -> None:
    api_key, key = make_key(bob)
    headers = {"Authorization": f"Bearer {key}"}
    assert (
        httpx.post(
            f"{gateway_process.gateway}/v1/chat/completions", json=CHAT, headers=headers
        ).status_code
        == 200
    )

    api_key.revoke("compromised", by=alice)
    revoked_at = time.monotonic()

    status = 200
    while status == 200 and time.monotonic() - revoked_at < 5:
        status = httpx.post(
            f"{gateway_process.gateway}/v1/chat/completions", json=CHAT, headers=headers
        ).status_code
    assert status == 401
    assert time.monotonic() - revoked_at < 1.5


def record(**overrides: Any) -> dict[str, Any]:
    from datetime import UTC, datetime
    from decimal import Decimal

    return {
        "request_id": "r1",
        "created_at": datetime.now(UTC),
        "user_id": None,
        "team_id": None,
        "api_key_id": None,
        "api_key_prefix": "",
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "gpt-4o-mini",
        "provider_id": None,
        "provider": "",
        "upstream_model": "",
        "streamed": False,
        "input_tokens": 1,
        "output_tokens": 2,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "weighted_tokens": 3,
        "cost_usd": Decimal("0.0000012345"),
        "latency_ms": 1.5,
        "ttft_ms": None,
        "status_code": 200,
        "error_code": "",
        "error_message": "",
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "disconnected": False,
        "usage_estimated": False,
        **overrides,
    }


def failing_write(batch: list[dict[str, Any]]) -> None:
    raise ConnectionError("database down")


def test_it_spools_what_it_cannot_write_and_replays_it_on_start(transactional_db: None) -> None:
    down = LogWriter("durability-test", failing_write)
    down.start()
    for i in range(3):
        down.submit(record(request_id=f"r{i}"))
    down.stop(timeout=5)

    up = LogWriter("durability-test", write_gateway_logs)
    up.start()
    assert up.flush(10)
    up.stop()

    stored = GatewayLog.objects.order_by("request_id")
    assert [r.request_id for r in stored] == ["r0", "r1", "r2"]
    assert str(stored[0].cost_usd) == "0.0000012345"


def test_it_retries_a_batch_that_failed(transactional_db: None) -> None:
    attempts: list[int] = []

    def flaky(batch: list[dict[str, Any]]) -> None:
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        write_gateway_logs(batch)

    writer = LogWriter("retry-test", flaky)
    writer.start()
    writer.submit(record())

    assert writer.flush(10)
    writer.stop()
    assert attempts == [1, 1]
    assert GatewayLog.objects.count() == 1
