"""Usage and spend from the gateway records in ClickHouse (audit/usage.py decides which
store answers and turns the sums into its report).

Every query is bounded by the time range, the table's sort key, and aggregated by
ClickHouse; the caller's access scope arrives as the same Q the SQL path filters by.
"""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q

from audit.clickhouse import client, query, schema

# The expression each grouping of the usage report groups by (our constants only).
GROUPS = {
    "user": "user_id",
    "team": "team_id",
    "key": "api_key_id",
    "model": "model",
    "provider": "provider",
    "day": "toDate(created_at)",
}
_NUMERIC = {"user_id", "team_id", "api_key_id", "provider_id"}
_MEASURES = {"cost_usd", "weighted_tokens"}


def _between(scope: Q, since: datetime, until: datetime) -> query.Where:
    return query.where("gateway", scope, Q(created_at__gte=since, created_at__lt=until))


def grouped(scope: Q, group_by: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Requests, errors, tokens and cost per group: dicts as the ORM's values() gives them
    (`group`, and `prefix`, the key's shown prefix, when grouping by key)."""
    where = _between(scope, since, until)
    rows = client.execute(
        f"SELECT {GROUPS[group_by]} AS grp, count(), countIf(status_code >= 400), "  # noqa: S608
        "sum(input_tokens), sum(output_tokens), sum(cost_usd), max(api_key_prefix) "
        f"FROM {schema.table('gateway')} WHERE {where.sql()} GROUP BY grp",
        where.params,
    )
    names = ("group", "requests", "errors", "input_tokens", "output_tokens", "cost_usd", "prefix")
    return [dict(zip(names, row, strict=True)) for row in rows]


def spent(
    column: str, measure: str, since: datetime, until: datetime, subjects: Iterable[str]
) -> dict[str, Decimal]:
    """The sum of `measure` (cost_usd or weighted_tokens) per subject, a value of `column`
    (user_id, team_id, api_key_id, provider_id or model), over [since, until)."""
    if measure not in _MEASURES or column not in _NUMERIC | {"model"}:
        raise ValueError(f"cannot sum {measure!r} by {column!r}")
    wanted: set[Any] = set(subjects)
    if column in _NUMERIC:
        wanted = {int(s) for s in wanted if str(s).isdigit()}
    where = _between(Q(), since, until)
    where.add(query.Translator("gateway", where).condition(Q(**{f"{column}__in": wanted})))
    rows = client.execute(
        f"SELECT {column}, sum({measure}) FROM {schema.table('gateway')} "  # noqa: S608
        f"WHERE {where.sql()} GROUP BY {column}",
        where.params,
    )
    return {str(subject): Decimal(total) for subject, total in rows}
