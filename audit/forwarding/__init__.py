"""Forwarding log records to SIEMs: syslog (RFC 5424) over UDP and TCP, HMAC-signed HTTP
webhooks, Kafka. docs/forwarding.md says how to set one up and how a receiver checks what
it gets.

Each `Forwarder` (audit/models.py) follows the families it sends with a cursor per family
and copies what the store holds past it (jobs.py), from Celery beat every few seconds; the
request path never waits on a SIEM. A batch that cannot be delivered after its retries
goes to the `ForwardOutbox`, retried with backoff until it goes through or an admin
discards it, and the cursor moves on.
"""

from typing import Any


def stats() -> list[dict[str, Any]]:
    """Each forwarder's figures, for the metrics endpoint (thinkwatch/metrics.py):
    failures_total counts every failed attempt, outbox_depth the records waiting in the
    outbox."""
    from django.db.models import Sum

    from audit.models import Forwarder, ForwardOutbox

    per_forwarder = ForwardOutbox.objects.order_by().values_list("forwarder_id")
    waiting = dict(per_forwarder.annotate(records=Sum("count")))
    return [
        {
            "name": forwarder.name,
            "type": forwarder.type,
            "enabled": forwarder.enabled,
            "failures_total": forwarder.failures_total,
            "forwarded_total": forwarder.forwarded_total,
            "outbox_depth": int(waiting.get(forwarder.pk) or 0),
            "last_success_at": forwarder.last_success_at,
        }
        for forwarder in Forwarder.objects.order_by("name")
    ]
