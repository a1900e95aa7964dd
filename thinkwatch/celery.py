"""The Celery app: worker and beat for background policy.

Embedded mode uses kombu's filesystem transport under the data directory (no server);
with REDIS_URL, Redis is the broker.
"""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkwatch.settings")

app = Celery("thinkwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_queue_folders(sender: Celery, **kwargs: object) -> None:
    # The filesystem transport (embedded mode) needs its folders to exist.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (sender.conf.broker_transport_options or {}).get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


app.conf.beat_schedule = {
    "purge-deleted-keys": {
        "task": "accounts.tasks.purge_deleted_keys",
        "schedule": crontab(minute=17, hour=3),
        "options": {"expires": 3600},
    },
    # Only does something with Redis: embedded gateways reconcile in-process.
    "reconcile-budgets": {
        "task": "quotas.tasks.reconcile_budgets",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 240},
    },
}
