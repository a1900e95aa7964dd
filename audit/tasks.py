from celery import shared_task
from django.conf import settings

from audit import retention  # noqa: F401  (registers the retention task)


@shared_task(ignore_result=True)
def drain_streams() -> int:
    """Log records into the store: in production, from the Redis streams (embedded gateways
    deliver their own, audit/pipeline.py); with ClickHouse, also the admin events the SQL
    database holds that ClickHouse does not have yet."""
    written = 0
    if settings.REDIS_URL:
        from audit import pipeline

        written += pipeline.drain_streams()
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse.mirror import mirror_admin

        written += mirror_admin()
    return written
