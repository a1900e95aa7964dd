"""The Celery app: worker and beat for background policy.

Embedded mode uses kombu's filesystem transport under the data directory (no server);
with REDIS_URL, Redis is the broker.
"""

import os

from celery import Celery, signals
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkwatch.settings")

app = Celery("thinkwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["audit.forwarding"])  # audit/forwarding/tasks.py


@app.on_after_configure.connect
def _make_queue_folders(sender: Celery, **kwargs: object) -> None:
    # The filesystem transport (embedded mode) needs its folders to exist.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (sender.conf.broker_transport_options or {}).get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_to_start_unready(**kwargs: object) -> None:
    from thinkwatch import startup

    startup.exit_unless_ready()  # thinkwatch/startup.py: one line and exit code 1


app.conf.beat_schedule = {
    # Production (REDIS_URL): log records from the Redis streams into the store; with
    # ClickHouse, admin events mirrored there. Otherwise it has nothing to do.
    "drain-audit-streams": {
        "task": "audit.tasks.drain_streams",
        "schedule": 2.0,
        "options": {"expires": 2},
    },
    "purge-deleted-keys": {
        "task": "accounts.tasks.purge_deleted_keys",
        "schedule": crontab(minute=17, hour=3),
        "options": {"expires": 3600},
    },
    "purge-deleted-providers": {
        "task": "providers.tasks.purge_deleted",
        "schedule": crontab(minute=27, hour=3),
        "options": {"expires": 3600},
    },
    "purge-deleted-users": {
        "task": "accounts.tasks.purge_deleted_users",
        "schedule": crontab(minute=37, hour=3),
        "options": {"expires": 3600},
    },
    # Retention per log family (audit/retention.py).
    "purge-expired-logs": {
        "task": "audit.retention.purge_expired_logs",
        "schedule": crontab(minute=43, hour=2),
        "options": {"expires": 3 * 3600},
    },
    # Hourly: a warning is due within the hour its threshold is reached.
    "warn-expiring-keys": {
        "task": "accounts.tasks.warn_expiring_keys",
        "schedule": crontab(minute=7),
        "options": {"expires": 1800},
    },
    "disable-inactive-keys": {
        "task": "accounts.tasks.disable_inactive_keys",
        "schedule": crontab(minute=37),
        "options": {"expires": 1800},
    },
    # Only does something with Redis: embedded gateways reconcile in-process.
    "reconcile-budgets": {
        "task": "quotas.tasks.reconcile_budgets",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 240},
    },
    # SIEM forwarding (audit/forwarding/): new records every few seconds, the outbox of
    # batches that failed on its own backoff schedule.
    "forward-logs": {
        "task": "audit.forwarding.tasks.forward_logs",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
    "retry-forward-outbox": {
        "task": "audit.forwarding.tasks.retry_outbox",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
}
