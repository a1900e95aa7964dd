import asyncio

import httpx
from celery import shared_task

from quotas import logic


@shared_task(
    ignore_result=True,
    autoretry_for=(httpx.HTTPError,),
    retry_backoff=30,
    retry_backoff_max=3600,
    max_retries=12,
)
def deliver_alert(alert_id: int) -> None:
    logic.deliver_alert(alert_id)


@shared_task(ignore_result=True)
def reconcile_budgets() -> int:
    """With Redis: restore budget spend the log knows of (after a Redis restart)."""
    from django.conf import settings

    from quotas.admission import counters
    from quotas.cache import load_quota_table

    if not settings.REDIS_URL:
        return 0  # embedded: the gateway process owns the counts and reconciles them itself
    return asyncio.run(logic.reconcile(counters(), load_quota_table()))
