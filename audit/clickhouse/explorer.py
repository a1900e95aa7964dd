"""The log explorer's reads from ClickHouse (audit/explorer.py builds the conditions).

A page is found in two steps: first the keys of the newest rows that match, reading only
the columns the conditions name plus (created_at_us, seq); then those rows in full, by
their keys, which the sort key finds in a few granules. Reading every column of every
matching row only to keep fifty would cost as much as the whole time range.

Rows come back as unsaved instances of the Django model, whose id is the record's seq, so
the views, templates and API schemas show them as they show SQL rows.
"""

from typing import Any

from django.db.models import Model, Q

from audit import chain
from audit.clickhouse import client, query, schema


def newest(family: str, condition: Q, limit: int) -> list[Model]:
    """The newest `limit` records meeting `condition`, newest first (ties: higher seq)."""
    where = query.where(family, condition)
    keys = client.execute(
        f"SELECT created_at_us, seq FROM {schema.table(family)} "  # noqa: S608
        f"WHERE {where.sql()} ORDER BY created_at_us DESC, seq DESC LIMIT %(limit)s",
        {**where.params, "limit": limit},
    )
    if not keys:
        return []
    rows = client.execute(
        f"SELECT {', '.join(schema.select_columns(family))} "  # noqa: S608
        f"FROM {schema.table(family)} "
        "WHERE created_at_us >= %(lo)s AND created_at_us <= %(hi)s AND seq IN %(seqs)s",
        {
            "lo": min(us for us, _ in keys),
            "hi": max(us for us, _ in keys),
            "seqs": tuple(seq for _, seq in keys),
        },
    )
    by_seq = {row[0]: row for row in rows}
    return [instance(family, by_seq[seq]) for _, seq in keys if seq in by_seq]


def one(family: str, condition: Q) -> Model | None:
    where = query.where(family, condition)
    rows = client.execute(
        f"SELECT {', '.join(schema.select_columns(family))} "  # noqa: S608
        f"FROM {schema.table(family)} WHERE {where.sql()} LIMIT 1",
        where.params,
    )
    return instance(family, rows[0]) if rows else None


def instance(family: str, row: tuple[Any, ...]) -> Model:
    record = schema.from_row(family, row)
    return chain.FAMILIES[family](id=record["seq"], **record)
