"""Log records survive shutdown and database outages; config changes cross processes."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, models

from audit import chain, pipeline, store
from audit.models import AccessLog, ChainHead, GatewayLog
from providers.models import Provider
from tests.factories import gateway_log_record, make_key
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
    assert stored(GatewayLog, 50) == 50


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


def stored(model: type[models.Model], expected: int, timeout: float = 20) -> int:
    """How many rows `model` holds once `expected` arrived (or the timeout passed). In
    production mode the records wait in Redis streams: drain them here, as Celery would."""
    deadline = time.monotonic() + timeout
    while True:
        if settings.REDIS_URL:
            pipeline.drain_streams(max_seconds=1)
        count = model.objects.count()
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def assert_chain_intact(family: str) -> None:
    head = ChainHead.objects.get(family=family)
    verdict = chain.verify(
        family,
        store.iterate(store.current(), family, after_seq=head.anchor_seq),
        previous=(head.anchor_seq, head.anchor_hash),
        head=(head.seq, head.hash),
    )
    assert verdict.ok, verdict.reason
    assert verdict.checked == head.seq - head.anchor_seq


def chat_traffic(base_url: str, key: str) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        statuses = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(30)]
        for _ in range(20):
            with client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                assert b"[DONE]" in response.read()
                statuses.append(response.status_code)
    return statuses


def test_a_killed_gateway_loses_no_acknowledged_record(
    transactional_db: None, tmp_path: Path, openai_provider: Provider, bob_key: str
) -> None:
    # Records wait in the queue (a 60 s flush interval): SIGKILL finds them undelivered.
    doomed = Processes(tmp_path, "gateway", THINKWATCH_AUDIT_FLUSH_SECONDS="60")
    doomed.start(doomed.gateway)
    try:
        statuses = chat_traffic(doomed.gateway, bob_key)
    finally:
        doomed.kill()
    assert statuses == [200] * 50
    assert GatewayLog.objects.count() == 0

    # The next gateway on the same data directory adopts the dead one's segment.
    again = Processes(tmp_path, "gateway")
    again.start(again.gateway)
    try:
        assert stored(GatewayLog, 50) == 50
        assert stored(AccessLog, 50) >= 50
    finally:
        again.close()
    requests = list(GatewayLog.objects.values_list("streamed", flat=True))
    assert sorted(requests) == [False] * 30 + [True] * 20
    assert_chain_intact("gateway")
    assert_chain_intact("access")


def test_a_store_outage_loses_nothing_and_the_chain_stays_whole(
    transactional_db: None, tmp_path: Path, openai_provider: Provider, bob_key: str
) -> None:
    """The gateway keeps answering while the log table is gone (the store refuses every
    write) for a minute; once it is back, every record arrives, once, in one chain."""
    table = GatewayLog._meta.db_table
    gateway = Processes(tmp_path, "gateway", THINKWATCH_AUDIT_FLUSH_SECONDS="0.2")
    gateway.start(gateway.gateway)
    headers = {"Authorization": f"Bearer {bob_key}"}
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            statuses = []
            outage_ends = time.monotonic() + 60
            with httpx.Client(base_url=gateway.gateway, headers=headers, timeout=30) as client:
                while time.monotonic() < outage_ends:
                    statuses.append(client.post("/v1/chat/completions", json=CHAT).status_code)
                    time.sleep(2)
                    if settings.REDIS_URL:  # Celery's drain fails too, and keeps the entries
                        with pytest.raises(Exception, match=table):
                            pipeline.drain_streams(max_seconds=1)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        assert statuses == [200] * len(statuses) and len(statuses) >= 25
        assert stored(GatewayLog, len(statuses), timeout=30) == len(statuses)
    finally:
        gateway.close()
    assert GatewayLog.objects.values("uid").distinct().count() == len(statuses)
    assert_chain_intact("gateway")


def test_a_batch_delivered_again_after_a_crash_is_stored_once(transactional_db: None) -> None:
    """A process that died after the store wrote its batch but before its cursor moved:
    the next process delivers the batch again, and the store recognises it."""
    first = pipeline.Pipeline()
    for n in range(3):
        first.submit("gateway", gateway_log_record(request_id=f"r{n}"))
    assert first.flush(10)
    assert stored(GatewayLog, 3) == 3
    segment = first._segment
    assert segment is not None and segment.cursor == segment.size
    segment.save_cursor(0)  # as if it died before moving the cursor
    segment.close()  # its lock goes with the process

    second = pipeline.Pipeline()
    second.start()
    try:
        assert second.flush(10)
        time.sleep(0.2)
        assert stored(GatewayLog, 4, timeout=2) == 3
    finally:
        second.stop()
    assert not segment.path.exists()  # delivered, so removed
    assert [r.request_id for r in GatewayLog.objects.order_by("seq")] == ["r0", "r1", "r2"]
    assert_chain_intact("gateway")


def test_an_edited_record_breaks_the_chain_at_that_record(transactional_db: None) -> None:
    store.current().append("gateway", [gateway_log_record(request_id=f"r{n}") for n in range(5)])
    assert_chain_intact("gateway")
    GatewayLog.objects.filter(seq=3).update(cost_usd="0")
    head = ChainHead.objects.get(family="gateway")
    verdict = chain.verify(
        "gateway",
        store.iterate(store.current(), "gateway", after_seq=0),
        previous=(0, ""),
        head=(head.seq, head.hash),
    )
    assert not verdict.ok
    assert verdict.broken_seq == 3
    assert verdict.checked == 2


def test_a_record_the_store_refuses_is_set_aside_and_does_not_hold_back_others(
    transactional_db: None,
) -> None:
    pipe = pipeline.Pipeline()
    pipe.submit("gateway", gateway_log_record(request_id="before"))
    pipe.submit("gateway", gateway_log_record(request_id="poison", status_code=None))  # NOT NULL
    pipe.submit("gateway", gateway_log_record(request_id="after"))
    assert pipe.flush(10)
    if settings.REDIS_URL:
        stored(GatewayLog, 2)
    assert sorted(GatewayLog.objects.values_list("request_id", flat=True)) == ["after", "before"]
    refused = (Path(settings.DATA_DIR) / "auditq" / "refused" / "gateway.jsonl").read_bytes()
    assert b'"poison"' in refused and b"IntegrityError" in refused
    assert_chain_intact("gateway")
