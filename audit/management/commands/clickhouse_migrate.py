"""Apply the ClickHouse schema migrations (audit/clickhouse/migrations/) to CLICKHOUSE_URL's
database, creating the database if it is missing."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.clickhouse import client, migrate


class Command(BaseCommand):
    help = (
        "Apply pending ClickHouse schema migrations. --status lists every migration and "
        "whether it is applied; --plan prints the statements a run would execute here."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true", help="List migrations and state.")
        group.add_argument("--plan", action="store_true", help="Print pending statements.")

    def handle(self, *args: Any, status: bool, plan: bool, **options: Any) -> None:
        if not settings.CLICKHOUSE_URL:
            raise CommandError("CLICKHOUSE_URL is not set: log records are kept in SQL.")
        version = ".".join(map(str, client.version()))
        features = migrate.features()
        self.stdout.write(
            f"ClickHouse {version}, database {client.current().database}: "
            f"codecs {_yes(features.codecs)}, LowCardinality {_yes(features.low_cardinality)}, "
            f"skip indexes {_yes(features.skip_indexes)}"
        )
        if status:
            for state in migrate.status():
                when = state.applied_at.isoformat() if state.applied_at else "pending"
                self.stdout.write(f"  {state.migration.label}: {when}")
        elif plan:
            pending = migrate.plan()
            for migration, statements in pending:
                self.stdout.write(f"-- {migration.label}")
                for statement in statements:
                    self.stdout.write(f"{statement};")
            if not pending:
                self.stdout.write("Nothing to apply.")
        else:
            done = migrate.apply(report=self.stdout.write)
            self.stdout.write(f"Applied {len(done)} migration(s)." if done else "Up to date.")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
