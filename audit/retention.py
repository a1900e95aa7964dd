"""Retention: each log family keeps its records for the days its runtime setting says
(`audit.retention_days.<family>`, 0 = forever), and the nightly job deletes the rest.

The store does the deleting (`Store.purge_before`): it removes the oldest stretch of the
family's chain and keeps the last removed link as the head's anchor, so what is left still
verifies. A run that removed something says so in the admin audit log; a run with nothing
to remove leaves no trace, so running the job twice changes nothing the second time.
"""

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

from accounts.runtime import setting
from audit import chain, store
from audit.models import AuditEvent

logger = logging.getLogger(__name__)


def cutoffs(now: datetime) -> dict[str, datetime]:
    """The instant before which each family's records go; families kept forever are absent."""
    found = {}
    for family in chain.FAMILIES:
        days = setting(f"audit.retention_days.{family}")
        if days:
            found[family] = now - timedelta(days=days)
    return found


def purge_logs() -> dict[str, int]:
    """Delete every family's records older than its retention; returns how many went."""
    limits = cutoffs(timezone.now())
    target = store.current()
    purged = {family: target.purge_before(family, cutoff) for family, cutoff in limits.items()}
    if any(purged.values()):
        AuditEvent.objects.create(
            action="audit.retention_purge",
            object_type="audit",
            object_repr=f"{sum(purged.values())} log records",
            detail={
                "store": target.name,
                "purged": purged,
                "before": {family: cutoff.isoformat() for family, cutoff in limits.items()},
            },
        )
    logger.info("audit.retention_purged", extra={"store": target.name, **purged})
    return purged


@shared_task(ignore_result=True)
def purge_expired_logs() -> dict[str, int]:
    return purge_logs()
