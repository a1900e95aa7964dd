"""The live dashboard's numbers from ClickHouse (audit/live.py decides which store answers
and shapes the snapshot).

Each number is aggregated by ClickHouse under the same scope Q the SQL path filters by,
over the window's slice of the table's sort key. Percentiles are nearest-rank, as on SQL:
the latency values of the window sorted, the ceil(p·n)-th taken (ClickHouse arrays count
from 1), so both stores show the same figure for the same records.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q

from audit.clickhouse import client, query, schema

_MINUTE_US = 60_000_000
_TOKENS = "sum(input_tokens + output_tokens)"


def _nearest_rank(level: float) -> str:
    return f"arrayElement(arraySort(groupArray(latency_ms)), toUInt64(ceil({level} * count())))"


def _since(family: str, scope: Q, after: datetime) -> query.Where:
    return query.where(family, scope, Q(created_at__gt=after))


def totals(scope: Q, after: datetime) -> dict[str, Any]:
    """Requests, errors, tokens, cost and the p50/p95 latency of the gateway records."""
    where = _since("gateway", scope, after)
    [row] = client.execute(
        f"SELECT count(), countIf(status_code >= 400), {_TOKENS}, sum(cost_usd), "  # noqa: S608
        f"{_nearest_rank(0.5)}, {_nearest_rank(0.95)} "
        f"FROM {schema.table('gateway')} WHERE {where.sql()}",
        where.params,
    )
    requests, errors, tokens, cost, p50, p95 = row
    return {
        "requests": requests,
        "errors": errors,
        "tokens": tokens or 0,
        "cost": Decimal(cost or 0),
        "p50": p50 if requests else None,
        "p95": p95 if requests else None,
    }


def mcp_totals(scope: Q, after: datetime) -> dict[str, int]:
    where = _since("mcp", scope, after)
    [(calls, errors)] = client.execute(
        f"SELECT count(), countIf(status != 'ok') FROM {schema.table('mcp')} "  # noqa: S608
        f"WHERE {where.sql()}",
        where.params,
    )
    return {"calls": calls, "errors": errors}


def per_minute(scope: Q, first: datetime) -> dict[datetime, dict[str, Any]]:
    """Requests, errors, tokens and cost per UTC minute from `first` on."""
    where = query.where("gateway", scope, Q(created_at__gte=first))
    rows = client.execute(
        f"SELECT intDiv(created_at_us, {_MINUTE_US}) AS minute, count(), "  # noqa: S608
        f"countIf(status_code >= 400), {_TOKENS}, sum(cost_usd) "
        f"FROM {schema.table('gateway')} WHERE {where.sql()} GROUP BY minute",
        where.params,
    )
    return {
        datetime.fromtimestamp(minute * 60, UTC): {
            "requests": requests,
            "errors": errors,
            "tokens": tokens,
            "cost": cost,
        }
        for minute, requests, errors, tokens, cost in rows
    }


# The columns the dashboard ranks by (our constants only: they go into SQL).
RANKED = frozenset({"model", "user_id"})
_ORDERS = {"requests": "requests", "cost": "cost"}


def top(scope: Q, after: datetime, field: str, order: str, limit: int) -> list[dict[str, Any]]:
    """The `limit` values of `field` with the most requests (or cost), ties by value."""
    if field not in RANKED or order not in _ORDERS:
        raise ValueError(f"cannot rank {field!r} by {order!r}")
    where = _since("gateway", scope, after)
    rows = client.execute(
        f"SELECT {field}, count() AS requests, sum(cost_usd) AS cost "  # noqa: S608
        f"FROM {schema.table('gateway')} WHERE {where.sql()} GROUP BY {field} "
        f"ORDER BY {_ORDERS[order]} DESC, {field} LIMIT %(limit)s",
        {**where.params, "limit": limit},
    )
    return [{field: value, "requests": n, "cost": cost} for value, n, cost in rows]
