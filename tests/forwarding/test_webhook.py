"""Webhooks to a real HTTP server on loopback: signatures, retries, the outbox."""

import hashlib
import hmac
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from audit.forwarding import jobs
from audit.forwarding.jobs import forward
from audit.models import Forwarder, ForwardOutbox
from tests.forwarding.conftest import FAST, WEBHOOK_SECRET, ForwarderFactory, append
from tests.forwarding.receivers import Answer, WebhookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def hook(siem: WebhookReceiver) -> Forwarder:
    return ForwarderFactory(
        type="webhook", destination=siem.url, secret=WEBHOOK_SECRET, families=["gateway"]
    )


def signed_correctly(header: str, body: bytes) -> bool:
    """The receiver's check, as docs/forwarding.md tells it, written independently."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


def test_it_posts_a_signed_batch(hook: Forwarder, siem: WebhookReceiver) -> None:
    seqs = append("gateway", 3)

    assert forward(hook.pk, FAST) == 3

    [request] = siem.received
    assert request.headers["content-type"] == "application/json"
    assert signed_correctly(request.headers["x-thinkwatch-signature"], request.body)
    assert len(request.headers["idempotency-key"]) == 32
    body = request.json()
    assert (body["family"], body["first_seq"], body["last_seq"], body["count"]) == (
        "gateway",
        seqs[0],
        seqs[-1],
        3,
    )
    assert [r["seq"] for r in body["records"]] == seqs


def test_it_sends_records_in_the_documented_format(hook: Forwarder, siem: WebhookReceiver) -> None:
    append("gateway", 1, client_ip="::ffff:10.1.2.3")

    forward(hook.pk, FAST)

    [record] = siem.received[0].json()["records"]
    assert record["created_at"] == "2026-11-01T12:00:00.000000Z"
    assert record["cost_usd"] == "0.0001234000"  # a string: no float rounding
    assert record["latency_ms"] == 12.5
    assert record["ttft_ms"] is None
    assert record["family"] == "gateway"
    assert len(record["chain_hash"]) == 64
    assert "id" not in record  # the store's row id is not part of the record


def test_a_signature_made_with_another_secret_does_not_verify(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    append("gateway", 1)
    forward(hook.pk, FAST)
    request = siem.received[0]

    tampered = request.body.replace(b'"req-0"', b'"req-X"')

    assert signed_correctly(request.headers["x-thinkwatch-signature"], request.body)
    assert not signed_correctly(request.headers["x-thinkwatch-signature"], tampered)


def test_it_retries_a_server_error_with_the_same_batch(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    siem.fail(Answer(503), Answer(500), Answer(408))
    append("gateway", 2)

    assert forward(hook.pk, FAST) == 2

    assert len(siem.received) == 4
    assert len({r.headers["idempotency-key"] for r in siem.received}) == 1
    assert len({r.body for r in siem.received}) == 1
    assert all(signed_correctly(r.headers["x-thinkwatch-signature"], r.body) for r in siem.received)
    hook.refresh_from_db()
    assert (hook.failures_total, hook.forwarded_total) == (3, 2)
    assert not ForwardOutbox.objects.exists()


def test_it_never_retries_a_client_error(hook: Forwarder, siem: WebhookReceiver) -> None:
    siem.fail(Answer(400, body=b'{"error": "bad schema"}'))
    append("gateway", 2)

    forward(hook.pk, FAST)

    assert len(siem.received) == 1
    [entry] = ForwardOutbox.objects.all()
    assert entry.attempts == 1
    assert entry.last_error == (
        f'webhook 127.0.0.1:{siem.port}: HTTP 400 {{"error": "bad schema"}}'
    )


def test_it_waits_as_long_as_retry_after_says(hook: Forwarder, siem: WebhookReceiver) -> None:
    siem.fail(Answer(429, headers={"Retry-After": "1"}))
    append("gateway", 1)

    forward(hook.pk, FAST)

    first, second = siem.received
    assert second.at - first.at >= 1.0
    assert not ForwardOutbox.objects.exists()


def test_it_sets_a_batch_aside_when_retry_after_is_beyond_the_run(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    siem.fail(Answer(503, headers={"Retry-After": "900"}))
    append("gateway", 1)
    before = timezone.now()

    forward(hook.pk, FAST)

    assert len(siem.received) == 1
    [entry] = ForwardOutbox.objects.all()
    assert entry.next_attempt_at >= before + timedelta(seconds=900)
    hook.refresh_from_db()
    assert hook.paused_until >= before + timedelta(seconds=900)


def test_it_times_out_a_receiver_that_does_not_answer(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    siem.fail(*[Answer(200, delay=3.0)] * 4)
    append("gateway", 1)
    started = time.monotonic()

    forward(hook.pk, FAST)

    assert time.monotonic() - started < FAST.budget + 1
    [entry] = ForwardOutbox.objects.all()
    assert entry.last_error == f"webhook 127.0.0.1:{siem.port}: timed out"


def test_it_dead_letters_a_batch_and_moves_on(hook: Forwarder, siem: WebhookReceiver) -> None:
    siem.fail(*[Answer(502)] * FAST.attempts)
    first = append("gateway", 2)

    forward(hook.pk, FAST)

    [entry] = ForwardOutbox.objects.all()
    assert (entry.first_seq, entry.last_seq, entry.attempts) == (first[0], first[-1], 4)
    assert hook.cursors.get().seq == first[-1]
    hook.refresh_from_db()
    assert hook.consecutive_failures == 1
    assert "HTTP 502" in hook.last_error


def test_it_pauses_new_records_after_a_batch_was_dead_lettered(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    siem.fail(*[Answer(502)] * FAST.attempts)
    append("gateway", 1)
    forward(hook.pk, FAST)
    append("gateway", 1, start=1)

    assert forward(hook.pk, FAST) == 0

    with time_machine.travel(timezone.now() + timedelta(seconds=6)):
        assert forward(hook.pk, FAST) == 1
    assert len(siem.received) == FAST.attempts + 1


def test_it_retries_the_outbox_with_growing_delays_until_it_goes_through(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    siem.fail(*[Answer(503)] * FAST.attempts)
    append("gateway", 2)
    before = timezone.now()
    forward(hook.pk, FAST)
    after = timezone.now()
    entry = ForwardOutbox.objects.get()
    key = siem.received[0].headers["idempotency-key"]
    # 4 failed tries: 30 s doubled three times, with equal jitter
    assert before + timedelta(seconds=120) <= entry.next_attempt_at
    assert entry.next_attempt_at <= after + timedelta(seconds=240)
    siem.fail(Answer(503), Answer(503))

    delays = []
    for _ in range(2):
        now = entry.next_attempt_at
        with time_machine.travel(now, tick=False):
            assert jobs.retry_outbox(FAST) == 0
        entry.refresh_from_db()
        delays.append((entry.next_attempt_at - now).total_seconds())
    with time_machine.travel(entry.next_attempt_at):
        assert jobs.retry_outbox(FAST) == 1
        last = siem.received[-1]
        assert signed_correctly(last.headers["x-thinkwatch-signature"], last.body)

    assert not ForwardOutbox.objects.exists()
    assert entry.attempts == FAST.attempts + 2
    # equal jitter: between half and all of 30 s doubled per failed attempt (5th, 6th)
    assert 240 <= delays[0] <= 480
    assert 480 <= delays[1] <= 960
    assert {r.headers["idempotency-key"] for r in siem.received} == {key}
    hook.refresh_from_db()
    assert (hook.forwarded_total, hook.consecutive_failures, hook.paused_until) == (2, 0, None)


def test_it_leaves_outbox_entries_that_are_not_due(hook: Forwarder, siem: WebhookReceiver) -> None:
    siem.fail(*[Answer(503)] * FAST.attempts)
    append("gateway", 1)
    forward(hook.pk, FAST)
    sent = len(siem.received)

    assert jobs.retry_outbox(FAST) == 0

    assert len(siem.received) == sent
    assert ForwardOutbox.objects.get().attempts == FAST.attempts


def test_it_stops_retrying_the_outbox_at_the_first_failure(
    hook: Forwarder, siem: WebhookReceiver
) -> None:
    for n in range(3):
        siem.fail(*[Answer(503)] * FAST.attempts)
        append("gateway", 1, start=n)
        Forwarder.objects.filter(pk=hook.pk).update(paused_until=None)
        forward(hook.pk, FAST)
    sent = len(siem.received)
    siem.fail(Answer(503))

    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        jobs.retry_outbox(FAST)

    assert len(siem.received) == sent + 1
    assert ForwardOutbox.objects.count() == 3
