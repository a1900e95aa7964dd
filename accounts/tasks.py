from celery import shared_task

from accounts import deletion, lifecycle, logic
from accounts.runtime import setting


@shared_task(ignore_result=True)
def purge_deleted_keys() -> int:
    return logic.purge_deleted_keys(setting("keys.deleted_purge_days"))


@shared_task(ignore_result=True)
def purge_deleted_users() -> list[int]:
    return deletion.purge_deleted_users(setting("accounts.deleted_purge_days"))


@shared_task(ignore_result=True)
def warn_expiring_keys() -> int:
    return lifecycle.warn_expiring_keys()


@shared_task(ignore_result=True)
def disable_inactive_keys() -> list[int]:
    return lifecycle.disable_inactive_keys(setting("keys.inactivity_disable_days"))
