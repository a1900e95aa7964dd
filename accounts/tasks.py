from celery import shared_task

from accounts import logic
from accounts.runtime import setting


@shared_task(ignore_result=True)
def purge_deleted_keys() -> int:
    return logic.purge_deleted_keys(setting("keys.deleted_purge_days"))
