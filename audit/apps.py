from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit logs"

    def ready(self) -> None:
        from audit import changes

        changes.connect()
