"""The log tables in ClickHouse: their names, the server features their DDL may use, and
how a record (as audit/chain.py seals it) becomes a row and comes back unchanged.

Exact round trips are what keep the chain verifiable: `chain.canonical` of a record read
back must give the bytes that were hashed when it was written. So every datetime is also
kept as whole microseconds since the epoch in `<name>_us` (DateTime has one-second
precision, and DateTime64 needs 20.1), decimals are quantized to their column's places
before they are sent, JSON travels as its text, addresses as text.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from django.db import models

from audit import chain
from audit.clickhouse import client

Record = dict[str, Any]

TABLES = {
    "gateway": "gateway_log",
    "mcp": "mcp_log",
    "admin": "admin_log",
    "access": "access_log",
}

# The releases that made each feature generally available (docs/audit.md).
CODECS_FROM = (19, 1)  # CODEC(Delta, ZSTD) per column
LOW_CARDINALITY_FROM = (19, 3)  # before, only behind allow_experimental_low_cardinality_type
SKIP_INDEXES_FROM = (20, 1)  # from 19.1 behind allow_experimental_data_skipping_indices

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Features:
    codecs: bool
    low_cardinality: bool
    skip_indexes: bool

    @classmethod
    def of(cls, version: tuple[int, ...]) -> "Features":
        return cls(
            codecs=version >= CODECS_FROM,
            low_cardinality=version >= LOW_CARDINALITY_FROM,
            skip_indexes=version >= SKIP_INDEXES_FROM,
        )


@dataclass(frozen=True)
class Col:
    """A column as a migration declares it; the DDL depends on the server's features."""

    name: str
    type: str
    low_cardinality: bool = False
    codec: str = ""

    def ddl(self, features: Features) -> str:
        kind = self.type
        if self.low_cardinality and features.low_cardinality:
            kind = f"LowCardinality({kind})"
        codec = f" CODEC({self.codec})" if self.codec and features.codecs else ""
        return f"{self.name} {kind}{codec}"


def add_missing_columns(
    database: str, features: Features, tables: dict[str, list[Col]]
) -> list[str]:
    """`ALTER TABLE ... ADD COLUMN` for each column not there yet. 18.16 has no `ADD COLUMN
    IF NOT EXISTS`: columns already present (a run interrupted after some of its
    statements) are left out when the statements are rendered, so a second run does the
    rest."""
    statements = []
    for name, columns in tables.items():
        present = {
            column
            for (column,) in client.execute(
                "SELECT name FROM system.columns WHERE database = %(database)s "
                "AND table = %(table)s",
                {"database": database, "table": name},
            )
        }
        statements += [
            f"ALTER TABLE {database}.{name} ADD COLUMN {column.ddl(features)}"
            for column in columns
            if column.name not in present
        ]
    return statements


def table(family: str) -> str:
    """`database.table` of a family (both names are ours or checked by settings.py)."""
    return f"{client.current().database}.{TABLES[family]}"


# --- records and rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # datetime, decimal, bool, json, ip, plain
    null: bool
    places: int = 0


def _field(f: models.Field) -> Field:
    if isinstance(f, models.DateTimeField):
        kind = "datetime"
    elif isinstance(f, models.DecimalField):
        kind = "decimal"
    elif isinstance(f, models.BooleanField):
        kind = "bool"
    elif isinstance(f, models.JSONField):
        kind = "json"
    elif isinstance(f, models.GenericIPAddressField):
        kind = "ip"
    else:
        kind = "plain"
    return Field(f.attname, kind, f.null, getattr(f, "decimal_places", 0) or 0)


@cache
def fields(family: str) -> tuple[Field, ...]:
    """The record's content columns (those audit.chain hashes), typed for conversion."""
    model = chain.FAMILIES[family]
    hashed = {c.name for c in chain.columns(family)}
    return tuple(_field(f) for f in model._meta.concrete_fields if f.attname in hashed)


@cache
def insert_columns(family: str) -> tuple[str, ...]:
    names = ["seq", "chain_hash"]
    for f in fields(family):
        names += [f.name, f"{f.name}_us"] if f.kind == "datetime" else [f.name]
    return tuple(names)


@cache
def select_columns(family: str) -> tuple[str, ...]:
    """What is read back: a datetime from its exact `_us` twin."""
    names = ["seq", "chain_hash"]
    names += [f"{f.name}_us" if f.kind == "datetime" else f.name for f in fields(family)]
    return tuple(names)


def micros(moment: datetime | str) -> int:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MICROSECOND


def moment(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def to_row(family: str, record: Record) -> list[Any]:
    """A sealed record as the values of `insert_columns(family)`."""
    row: list[Any] = [record["seq"], record["chain_hash"]]
    for f in fields(family):
        value = record.get(f.name)
        if f.kind == "json":
            row.append(None if value is None and f.null else _json_text(value))
            continue
        if value is None:
            if not f.null:
                raise ValueError(f"a {family} record needs a value for {f.name}")
            row += [None, None] if f.kind == "datetime" else [None]
        elif f.kind == "datetime":
            us = micros(value)
            row += [us // 1_000_000, us]
        elif f.kind == "decimal":
            row.append(Decimal(str(value)).quantize(Decimal(1).scaleb(-f.places)))
        elif f.kind == "bool":
            row.append(int(bool(value)))
        elif f.kind == "ip":
            row.append(str(value))
        else:
            row.append(value)
    return row


def from_row(family: str, row: tuple[Any, ...]) -> Record:
    """A row of `select_columns(family)` as a record `chain.canonical` gives the original
    bytes for, with JSON columns as Python values (as the ORM gives them)."""
    record: Record = {"seq": row[0], "chain_hash": row[1]}
    for f, value in zip(fields(family), row[2:], strict=True):
        if value is not None and f.kind == "json":
            value = orjson.loads(value)
        elif value is not None and f.kind == "datetime":
            value = moment(value)
        elif value is not None and f.kind == "bool":
            value = bool(value)
        record[f.name] = value
    return record


def chunks(rows: list[list[Any]], family: str, weeks: int = 90) -> Iterator[list[list[Any]]]:
    """Rows split so that no INSERT touches more than `weeks` weekly partitions (newer
    servers refuse a block spanning over 100: max_partitions_per_insert_block)."""
    at = insert_columns(family).index("created_at")
    chunk: list[list[Any]] = []
    seen: set[int] = set()
    for row in rows:
        week = (row[at] // 86_400 + 3) // 7  # days since the epoch's Monday, in weeks
        if week not in seen and len(seen) == weeks:
            yield chunk
            chunk, seen = [], set()
        seen.add(week)
        chunk.append(row)
    if chunk:
        yield chunk
