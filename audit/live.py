"""The live dashboard's numbers, and the feeds that push them to open websockets.

Numbers come from the log store, aggregated by it (SQL, or ClickHouse with CLICKHOUSE_URL:
audit/clickhouse/live.py): the console cannot see the gateway process's memory, and the log
is what every other report counts. A feed computes one
scope's numbers once a tick (a scope is what `accounts.access.log_filter` lets a user
see) and pushes the same result to every socket watching that scope, so ten admins with
the dashboard open cost one computation a tick, not ten.
"""

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from audit.models import GatewayLog, McpLog

# The headline numbers and the top lists cover this window; the charts show each minute
# of the longer one.
WINDOW = timedelta(minutes=5)
SERIES_MINUTES = 15
TOP = 5
TOP_ORDERS = ("requests", "cost")
TICK_SECONDS = 2.0

logger = logging.getLogger(__name__)

Push = Callable[[dict[str, Any]], Awaitable[None]]

_TOKENS = F("input_tokens") + F("output_tokens")
_FAILED = Q(status_code__gte=400)


def _usd(value: Decimal | None) -> float:
    return round(float(value or 0), 6)


def _percentile(rows: QuerySet[GatewayLog], count: int, percent: int) -> float | None:
    """Nearest-rank percentile of latency, found by the database (one row comes back)."""
    if count == 0:
        return None
    rank = math.ceil(percent / 100 * count)
    ordered = rows.order_by("latency_ms").values_list("latency_ms", flat=True)
    return float(ordered[rank - 1])


def _rounded(latency: float | None) -> float | None:
    return None if latency is None else round(latency, 1)


def _per_minute(scope: Q, first: datetime) -> dict[datetime, Mapping[str, Any]]:
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse import live

        return dict(live.per_minute(scope, first))
    return {
        row["minute"]: row
        for row in GatewayLog.objects.filter(scope, created_at__gte=first)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=_FAILED),
            tokens=Sum(_TOKENS),
            cost=Sum("cost_usd"),
        )
        .order_by()
    }


def _series(scope: Q, now: datetime) -> list[dict[str, Any]]:
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=SERIES_MINUTES - 1)
    found = _per_minute(scope, first)
    points = []
    for step in range(SERIES_MINUTES):
        minute = first + timedelta(minutes=step)
        row = found.get(minute, {})
        points.append(
            {
                "minute": minute.isoformat(),
                "requests": row.get("requests", 0),
                "errors": row.get("errors", 0),
                "tokens": row.get("tokens") or 0,
                "cost_usd": _usd(row.get("cost")),
            }
        )
    return points


def _model_names(models: set[Any]) -> dict[Any, str]:
    return {model: model or "(no model)" for model in models}


def _user_names(ids: set[Any]) -> dict[Any, str]:
    users = get_user_model().objects.filter(pk__in=ids - {None})
    known = dict(users.values_list("pk", "username"))
    return {i: known.get(i, f"user {i}") if i is not None else "(no user)" for i in ids}


def _ranked(scope: Q, after: datetime, field: str) -> dict[str, list[dict[str, Any]]]:
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse import live

        return {order: live.top(scope, after, field, order, TOP) for order in TOP_ORDERS}
    rows = GatewayLog.objects.filter(scope, created_at__gt=after)
    grouped = rows.values(field).annotate(requests=Count("id"), cost=Sum("cost_usd"))
    return {order: list(grouped.order_by(f"-{order}", field)[:TOP]) for order in TOP_ORDERS}


def _tops(
    scope: Q, after: datetime, field: str, names: Callable[[set[Any]], dict[Any, str]]
) -> dict[str, list[dict[str, Any]]]:
    """The TOP values of `field` by requests and by cost, with readable names."""
    found = _ranked(scope, after, field)
    named = names({row[field] for ranked in found.values() for row in ranked})
    return {
        f"by_{order}": [
            {"name": named[row[field]], "requests": row["requests"], "cost_usd": _usd(row["cost"])}
            for row in ranked
        ]
        for order, ranked in found.items()
    }


def _totals(scope: Q, after: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The window's gateway totals (with p50/p95 latency) and MCP totals."""
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse import live

        return live.totals(scope, after), live.mcp_totals(scope, after)
    recent = GatewayLog.objects.filter(scope, created_at__gt=after)
    totals = recent.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=_FAILED),
        tokens=Sum(_TOKENS),
        cost=Sum("cost_usd"),
    )
    totals["p50"] = _percentile(recent, totals["requests"], 50)
    totals["p95"] = _percentile(recent, totals["requests"], 95)
    mcp = McpLog.objects.filter(scope, created_at__gt=after).aggregate(
        calls=Count("id"), errors=Count("id", filter=~Q(status="ok"))
    )
    return totals, mcp


def snapshot(scope: Q, now: datetime | None = None) -> dict[str, Any]:
    """What the dashboard shows for the log records `scope` admits."""
    now = now or timezone.now()
    after = now - WINDOW
    totals, mcp = _totals(scope, after)
    seconds = WINDOW.total_seconds()
    requests, tokens = totals["requests"], totals["tokens"] or 0
    return {
        "at": now.isoformat(),
        "window_seconds": int(seconds),
        "requests": requests,
        "requests_per_second": round(requests / seconds, 3),
        "errors": totals["errors"],
        "error_rate": round(totals["errors"] / requests, 4) if requests else 0.0,
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "cost_usd": _usd(totals["cost"]),
        "latency_ms": {
            "p50": _rounded(totals["p50"]),
            "p95": _rounded(totals["p95"]),
        },
        "mcp_calls": mcp["calls"],
        "mcp_errors": mcp["errors"],
        "series": _series(scope, now),
        "top_models": _tops(scope, after, "model", _model_names),
        "top_users": _tops(scope, after, "user_id", _user_names),
    }


class Feed:
    """One scope's numbers, computed once a tick and pushed to every socket watching it."""

    def __init__(self, scope: Q) -> None:
        self.scope = scope
        self.sockets: set[Push] = set()
        self.latest: dict[str, Any] | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        compute = database_sync_to_async(snapshot)
        while True:
            try:
                self.latest = await compute(self.scope)
            except Exception:
                logger.exception("dashboard.snapshot_failed")
            else:
                pushes = [push(self.latest) for push in list(self.sockets)]
                await asyncio.gather(*pushes, return_exceptions=True)
            await asyncio.sleep(TICK_SECONDS)


class Hub:
    """The feeds of this console process, one per scope with at least one socket."""

    def __init__(self) -> None:
        self.feeds: dict[Q, Feed] = {}

    async def join(self, scope: Q, push: Push) -> None:
        feed = self.feeds.get(scope)
        if feed is None or feed.task.done():
            feed = self.feeds[scope] = Feed(scope)
        elif feed.latest is not None:
            await push(feed.latest)  # a new socket need not wait for the next tick
        feed.sockets.add(push)

    def leave(self, scope: Q, push: Push) -> None:
        feed = self.feeds.get(scope)
        if feed is None:
            return
        feed.sockets.discard(push)
        if not feed.sockets:
            feed.task.cancel()
            del self.feeds[scope]


hub = Hub()
