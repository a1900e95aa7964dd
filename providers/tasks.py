import logging
from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts.runtime import setting
from audit.models import AuditEvent
from providers.models import Provider

logger = logging.getLogger(__name__)


def purge_deleted_providers(older_than_days: int) -> list[int]:
    """Remove for good the providers deleted more than `older_than_days` ago; returns their
    ids. Log records name providers by id and name without a foreign key, so the trail
    keeps them; the purge itself is one admin audit event."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    purged: dict[int, str] = {}
    with transaction.atomic():
        for provider in Provider.all_objects.filter(deleted_at__lt=cutoff).order_by("pk"):
            pk = provider.pk
            try:
                provider.delete()
            except ProtectedError:
                # A route was added in the instant of the deletion. Routing ignores it (its
                # provider is gone); an admin removes it, then the next run purges.
                logger.warning("provider.purge_blocked", extra={"provider_id": pk})
                continue
            purged[pk] = provider.name
        if purged:
            AuditEvent.objects.create(
                action="provider.purge",
                object_type="providers.provider",
                object_repr=f"{len(purged)} deleted provider(s)",
                detail={"providers": [{"id": pk, "name": name} for pk, name in purged.items()]},
            )
    logger.info("provider.purged", extra={"providers": len(purged)})
    return list(purged)


@shared_task(ignore_result=True)
def purge_deleted() -> list[int]:
    return purge_deleted_providers(setting("providers.deleted_purge_days"))
