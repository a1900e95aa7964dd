from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit logs"

    def ready(self) -> None:
        # Importing `bodies` registers the pipeline hook that offloads large bodies,
        # wherever records are stored: the gateway, or Celery draining the Redis streams.
        from audit import bodies, changes  # noqa: F401

        changes.connect()
