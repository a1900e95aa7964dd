"""Beat's forwarding entries (thinkwatch/celery.py): thin wrappers over jobs.py."""

from celery import shared_task

# How often beat starts a forwarding round; each forwarder's run is sent with this expiry,
# so runs queued behind a busy worker are dropped rather than piled up.
FORWARD_EVERY = 5.0
RETRY_OUTBOX_EVERY = 30.0


@shared_task(ignore_result=True)
def forward_logs() -> int:
    """Start a run for each forwarder that is due; returns how many were started."""
    from audit.forwarding import jobs

    due = jobs.due_forwarders()
    for forwarder_id in due:
        forward_to.apply_async((forwarder_id,), expires=FORWARD_EVERY)
    return len(due)


@shared_task(ignore_result=True)
def forward_to(forwarder_id: int) -> int:
    from audit.forwarding import jobs

    return jobs.forward(forwarder_id)


@shared_task(ignore_result=True)
def retry_outbox() -> int:
    from audit.forwarding import jobs

    return jobs.retry_outbox()
