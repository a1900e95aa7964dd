"""`manage.py check_ready`: the checks every process runs before it serves
(thinkwatch/startup.py), on demand. Exit code 0 when ready; 1, with one line naming the
problems, when not. For deployments: run it before starting a console or a worker by hand
(an init container, ExecStartPre=); the gateway and `python -m thinkwatch.run` run it
themselves."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from thinkwatch import startup


class Command(BaseCommand):
    help = (
        "Check that this configuration can serve: database reachable and migrated, Redis "
        "and ClickHouse reachable when configured, master key and secret key sound."
    )
    # It is a check itself: Django's system checks would stop it on unrelated findings.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            found = startup.problems()
        finally:
            connections.close_all()
        if found:
            raise CommandError(f"ThinkWatch cannot start: {'; '.join(found)}")
        checked = ["database migrated", "secrets sound"]
        if settings.REDIS_URL:
            checked.append("Redis answers")
        if settings.CLICKHOUSE_URL:
            checked.append("ClickHouse migrated")
        self.stdout.write(f"Ready: {', '.join(checked)}.")
