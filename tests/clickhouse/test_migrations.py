"""The ClickHouse schema: numbered migrations applied once, in order, recorded, safe to run
again; and tables that hold every column of their Django model."""

import io
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from audit import chain
from audit.clickhouse import client, migrate, schema


@pytest.fixture
def empty_database(settings: Any, clickhouse_url: str) -> Iterator[str]:
    """CLICKHOUSE_URL naming a database that does not exist yet."""
    settings.CLICKHOUSE_URL = f"{clickhouse_url}_fresh_{secrets.token_hex(3)}"
    yield settings.CLICKHOUSE_URL
    where = client.current()
    client.execute(f"DROP DATABASE IF EXISTS {where.database}")
    client.forget_database(where)


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("clickhouse_migrate", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_database_and_applies_every_migration(empty_database: str) -> None:
    before = command("--status")

    output = command()

    assert "0001_log_tables: pending" in before
    assert "applying 0001_log_tables" in output
    assert all(state.applied_at is not None for state in migrate.status())
    tables = {name for (name,) in client.execute(f"SHOW TABLES FROM {client.current().database}")}
    assert tables == {*schema.TABLES.values(), "schema_migrations"}


def test_it_applies_nothing_the_second_time(empty_database: str) -> None:
    command()

    again = command()

    assert "Up to date." in again
    assert "Nothing to apply." in command("--plan")
    ledger = f"{client.current().database}.schema_migrations"
    recorded = client.execute(f"SELECT count() FROM {ledger}")  # noqa: S608
    assert recorded == [(len(migrate.migrations()),)]


def test_it_survives_a_migration_interrupted_after_its_statements(empty_database: str) -> None:
    """Statements ran but the migration was not recorded: the next run repeats them."""
    database, features = client.current().database, migrate.features()
    for statement in migrate.migrations()[0].operations(database, features):
        client.execute(statement)

    command()

    assert all(state.applied_at is not None for state in migrate.status())


def test_it_plans_ddl_rendered_for_the_server(empty_database: str) -> None:
    plan = command("--plan")

    assert "CREATE TABLE IF NOT EXISTS" in plan
    assert ("LowCardinality(" in plan) == migrate.features().low_cardinality
    assert ("CODEC(" in plan) == migrate.features().codecs
    assert ("TYPE bloom_filter" in plan) == migrate.features().skip_indexes


@pytest.mark.parametrize("family", list(chain.FAMILIES))
def test_it_gives_each_table_every_column_of_its_model(ch: str, family: str) -> None:
    found = {
        name
        for (name,) in client.execute(
            "SELECT name FROM system.columns WHERE database = %(database)s AND table = %(table)s",
            {"database": client.current().database, "table": schema.TABLES[family]},
        )
    }

    assert found >= {c.name for c in chain.columns(family)} | {"seq", "chain_hash"}
    assert set(schema.insert_columns(family)) <= found


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((18, 16, 1), (False, False, False)),
        ((19, 1, 6), (True, False, False)),
        ((19, 3, 3), (True, True, False)),
        ((20, 1, 2), (True, True, True)),
        ((24, 8, 1), (True, True, True)),
    ],
)
def test_it_uses_a_feature_only_from_the_release_that_made_it_available(
    version: tuple[int, ...], expected: tuple[bool, bool, bool]
) -> None:
    features = schema.Features.of(version)

    assert (features.codecs, features.low_cardinality, features.skip_indexes) == expected


def test_it_refuses_to_run_without_clickhouse(settings: Any) -> None:
    settings.CLICKHOUSE_URL = ""

    with pytest.raises(Exception, match="CLICKHOUSE_URL is not set"):
        command()


@pytest.mark.parametrize(
    "url",
    [
        "postgres://default:s3cret@127.0.0.1:19000/thinkwatch",
        "clickhouse://default:s3cret@127.0.0.1:19000/think-watch",
        "clickhouse://default:s3cret@127.0.0.1:19000/tw;DROP",
        "clickhouse://default:s3cret@127.0.0.1:port/thinkwatch",
        "clickhouse://default:s3cret@/thinkwatch",
    ],
)
def test_it_refuses_a_malformed_url_without_showing_its_password(url: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from thinkwatch.settings import _check_clickhouse_url

    with pytest.raises(ImproperlyConfigured, match="CLICKHOUSE_URL") as refused:
        _check_clickhouse_url(url)

    assert "s3cret" not in str(refused.value)
