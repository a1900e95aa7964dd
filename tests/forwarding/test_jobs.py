"""The forwarding job: cursors, leases, families, the beat tasks, the figures."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit import forwarding
from audit.forwarding import jobs, tasks
from audit.forwarding.jobs import forward, sync_cursors
from audit.models import Forwarder, ForwardOutbox
from tests.forwarding.conftest import FAST, WEBHOOK_SECRET, ForwarderFactory, append
from tests.forwarding.receivers import Answer, WebhookReceiver
from thinkwatch.celery import app


def hook_for(siem: WebhookReceiver, **fields: object) -> Forwarder:
    return ForwarderFactory(type="webhook", destination=siem.url, secret=WEBHOOK_SECRET, **fields)


def sent_seqs(siem: WebhookReceiver, family: str = "gateway") -> list[int]:
    return [
        record["seq"]
        for request in siem.received
        for record in request.json()["records"]
        if record["family"] == family
    ]


@pytest.mark.django_db
def test_it_sends_each_record_once_across_runs(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem)
    first = append("gateway", 5)
    forward(fwd.pk, FAST)
    second = append("gateway", 7, start=5)

    forward(fwd.pk, FAST)
    forward(fwd.pk, FAST)

    assert sent_seqs(siem) == first + second
    assert fwd.cursors.get().seq == second[-1]


@pytest.mark.django_db
def test_it_starts_at_the_head_of_each_family(siem: WebhookReceiver) -> None:
    append("gateway", 3)
    fwd = hook_for(siem)
    later = append("gateway", 2, start=3)

    forward(fwd.pk, FAST)

    assert sent_seqs(siem) == later


@pytest.mark.django_db
def test_it_sends_history_in_batches_when_asked_to_start_from_the_beginning(
    siem: WebhookReceiver,
) -> None:
    old = append("gateway", 120)
    fwd = hook_for(siem, from_beginning=True)

    assert forward(fwd.pk, FAST) == 120

    assert [r.json()["count"] for r in siem.received] == [50, 50, 20]
    assert sent_seqs(siem) == old


@pytest.mark.django_db
def test_it_sends_every_family_it_is_given_and_no_other(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem, families=["gateway", "mcp", "access"])
    gateway = append("gateway", 2)
    mcp = append("mcp", 3)
    append("admin", 1)

    forward(fwd.pk, FAST)

    families = Counter(r.json()["family"] for r in siem.received)
    assert families == Counter({"gateway": 1, "mcp": 1})
    assert (sent_seqs(siem, "gateway"), sent_seqs(siem, "mcp")) == (gateway, mcp)


@pytest.mark.django_db
def test_a_family_added_later_starts_at_its_head(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem, families=["gateway"])
    append("mcp", 3)
    fwd.families = ["gateway", "mcp"]
    fwd.save()
    sync_cursors(fwd)
    new = append("mcp", 1, start=3)

    forward(fwd.pk, FAST)

    assert sent_seqs(siem, "mcp") == new


@pytest.mark.django_db
def test_a_disabled_forwarder_sends_nothing(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem, enabled=False)
    append("gateway", 2)

    assert forward(fwd.pk, FAST) == 0

    assert siem.received == []
    assert jobs.due_forwarders() == []


@pytest.mark.django_db
def test_a_disabled_forwarder_retries_nothing_from_its_outbox(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem)
    siem.fail(*[Answer(503)] * FAST.attempts)
    append("gateway", 1)
    forward(fwd.pk, FAST)
    sent = len(siem.received)
    Forwarder.objects.filter(pk=fwd.pk).update(enabled=False)
    ForwardOutbox.objects.update(next_attempt_at=timezone.now())

    assert jobs.retry_outbox(FAST) == 0

    assert len(siem.received) == sent


@pytest.mark.django_db
def test_it_skips_a_forwarder_another_run_holds(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem)
    Forwarder.objects.filter(pk=fwd.pk).update(
        lease_owner="other", lease_until=timezone.now() + timedelta(seconds=30)
    )
    append("gateway", 1)

    assert forward(fwd.pk, FAST) == 0
    assert siem.received == []


@pytest.mark.django_db
def test_it_takes_over_a_lease_whose_run_died(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem)
    Forwarder.objects.filter(pk=fwd.pk).update(
        lease_owner="dead", lease_until=timezone.now() - timedelta(seconds=1)
    )
    append("gateway", 1)

    assert forward(fwd.pk, FAST) == 1
    fwd.refresh_from_db()
    assert (fwd.lease_owner, fwd.lease_until) == ("", None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_never_send_a_record_twice(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem)
    seqs = append("gateway", 130)
    siem.fail(*[Answer(200, delay=0.2)] * 10)  # slow answers: the runs overlap
    gate = threading.Barrier(4)

    def run() -> None:
        gate.wait()
        try:
            forward(fwd.pk, FAST)
        finally:
            connection.close()

    fwd.cursors.update(seq=0)
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    forward(fwd.pk, FAST)

    assert sent_seqs(siem) == seqs
    assert Counter(r.headers["idempotency-key"] for r in siem.received).most_common(1)[0][1] == 1


@pytest.mark.django_db
def test_the_beat_task_runs_every_due_forwarder(siem: WebhookReceiver) -> None:
    hook_for(siem)
    hook_for(siem, families=["mcp"])
    hook_for(siem, enabled=False)
    append("gateway", 1)
    append("mcp", 1)

    assert tasks.forward_logs.delay().get() == 2

    assert sorted(r.json()["family"] for r in siem.received) == ["gateway", "mcp"]


def test_the_beat_schedule_runs_forwarding_often_with_short_expiries() -> None:
    schedule = app.conf.beat_schedule
    forwarding_entries = [schedule["forward-logs"], schedule["retry-forward-outbox"]]

    assert [entry["task"] in app.tasks for entry in forwarding_entries] == [True, True]
    assert [entry["schedule"] for entry in forwarding_entries] == [5.0, 30.0]
    assert [entry["options"]["expires"] for entry in forwarding_entries] == [5, 30]


@pytest.mark.django_db
def test_it_reports_each_forwarders_figures(siem: WebhookReceiver) -> None:
    fwd = hook_for(siem, name="splunk")
    siem.fail(Answer(503), *[Answer(503)] * FAST.attempts)
    append("gateway", 3)
    forward(fwd.pk, FAST)

    [row] = forwarding.stats()

    assert {k: row[k] for k in ("name", "type", "failures_total", "outbox_depth")} == {
        "name": "splunk",
        "type": "webhook",
        "failures_total": FAST.attempts,
        "outbox_depth": 3,
    }
    assert row["last_success_at"] is None
