from celery import shared_task
from django.conf import settings

from accounts import logic


@shared_task(ignore_result=True)
def purge_deleted_keys() -> int:
    return logic.purge_deleted_keys(settings.DELETED_KEY_PURGE_DAYS)
