"""Applying the numbered migrations in audit/clickhouse/migrations/ and recording them in
the database's `schema_migrations` table.

A migration is recorded after all its statements ran; each statement is idempotent, so a
run interrupted half-way (or two runs at once) ends in the same schema. The DDL is
rendered for the server at hand: the features a table gets are decided when it is created.
"""

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from audit.clickhouse import client
from audit.clickhouse.schema import Features

_PACKAGE = "audit.clickhouse.migrations"
_NAME = re.compile(r"^(\d{4})_(\w+)$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    operations: Callable[[str, Features], list[str]]

    @property
    def label(self) -> str:
        return f"{self.number:04d}_{self.name}"


@dataclass(frozen=True)
class State:
    migration: Migration
    applied_at: datetime | None


@cache
def migrations() -> tuple[Migration, ...]:
    package = importlib.import_module(_PACKAGE)
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        match = _NAME.match(module.name)
        if match:
            loaded = importlib.import_module(f"{_PACKAGE}.{module.name}")
            found.append(Migration(int(match[1]), match[2], loaded.operations))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two ClickHouse migrations share a number: {numbers}")
    return tuple(found)


def features() -> Features:
    return Features.of(client.version())


def _ledger() -> str:
    database = client.current().database
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations ("
        "number UInt32, name String, applied_at DateTime('UTC'), server_version String"
        ") ENGINE = ReplacingMergeTree ORDER BY number"
    )


def status() -> list[State]:
    database = client.current().database
    client.execute(_ledger())
    rows = client.execute(
        f"SELECT number, min(applied_at) FROM {database}.schema_migrations "  # noqa: S608
        "GROUP BY number"
    )
    applied = {number: at.replace(tzinfo=UTC) for number, at in rows}
    return [State(m, applied.get(m.number)) for m in migrations()]


def plan() -> list[tuple[Migration, list[str]]]:
    """The migrations not applied yet, with the statements they would run here."""
    database, rendered = client.current().database, features()
    return [
        (state.migration, state.migration.operations(database, rendered))
        for state in status()
        if state.applied_at is None
    ]


def apply(report: Callable[[str], None] = lambda line: None) -> list[Migration]:
    database = client.current().database
    version = ".".join(map(str, client.version()))
    done = []
    for migration, statements in plan():
        report(f"applying {migration.label}")
        for statement in statements:
            client.execute(statement)
        client.execute(
            f"INSERT INTO {database}.schema_migrations "
            "(number, name, applied_at, server_version) VALUES",
            [(migration.number, migration.name, int(datetime.now(UTC).timestamp()), version)],
        )
        done.append(migration)
    return done
