"""Rate limits and budgets on the hot path: one atomic step before the upstream call,
one after. No SQL: the rules come from `quotas.cache`, the counts from the counters."""

import asyncio
import logging
import time
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from providers.pricing import Price, Usage
from quotas.cache import Subject, quotas
from quotas.counters import Cost, MemoryCounters, RedisCounters, Verdict

logger = logging.getLogger(__name__)

_backend: MemoryCounters | RedisCounters | None = None
_pending: set[asyncio.Task[None]] = set()
_UNAVAILABLE = (RedisError, OSError, TimeoutError)


class Stats:
    """Counts for the metrics endpoint; also rate-limits the unavailability warning."""

    def __init__(self) -> None:
        self.rejected = 0
        self.fail_open = 0
        self.fail_closed = 0
        self.last_warning = 0.0


stats = Stats()


def counters() -> MemoryCounters | RedisCounters:
    global _backend
    if _backend is None:
        from thinkwatch.lib import redis

        _backend = RedisCounters(redis.client) if settings.REDIS_URL else MemoryCounters()
    return _backend


def worst_case(price: Price, body_bytes: int, max_tokens: int | None) -> Cost:
    """What a request can cost at most: its input (4 bytes a token) and all the output it
    may ask for (the configured default when it does not say)."""
    output = settings.QUOTA_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    usage = Usage(input=body_bytes // 4, output=output)
    return Cost(tokens=price.weighted(usage), usd=price.cost(usage))


async def admit(call: Any, surface: str, others: tuple[Subject, ...], cost: Cost) -> Verdict | None:
    """Check and debit every rule and budget of the request, or raise a 429."""
    grant = call.grant
    table = await quotas.get()
    windows, budgets = table.checks(surface, grant.id, grant.owner_id, grant.team_id, others)
    if not windows and not budgets:
        return None
    try:
        verdict = await counters().admit(
            list(windows), list(budgets), cost, time.time(), settings.QUOTA_HOLD_SECONDS
        )
    except _UNAVAILABLE as exc:
        _unavailable(exc)  # raises when failing closed
        return None
    if not verdict.admitted:
        stats.rejected += 1
        raise refusal(verdict)
    call.quota = verdict
    return verdict


def _unavailable(exc: Exception) -> None:
    closed = settings.QUOTA_FAIL_CLOSED
    if closed:
        stats.fail_closed += 1
    else:
        stats.fail_open += 1
    now = time.monotonic()
    if now - stats.last_warning > 60:
        stats.last_warning = now
        logger.error(
            "quota.store_unavailable",
            extra={
                "error": type(exc).__name__,
                "fail_closed": closed,
                "fail_open_total": stats.fail_open,
            },
        )
    if closed:
        raise GatewayError(
            429,
            "rate_limit_error",
            "The rate limiter is unavailable, and this gateway refuses requests it cannot count.",
            "rate_limiter_unavailable",
            {"Retry-After": "5"},
        )


def refusal(verdict: Verdict) -> GatewayError:
    budget = ":budget/" in verdict.label
    what = "Budget exhausted" if budget else "Rate limit reached"
    return GatewayError(
        429,
        "rate_limit_error",
        f"{what}: {verdict.label}. Retry in {verdict.retry_after} s.",
        "budget_exceeded" if budget else "rate_limited",
        {
            "Retry-After": str(verdict.retry_after),
            "x-thinkwatch-limit": verdict.label,
            **headers(verdict),
        },
    )


def headers(verdict: Verdict | None) -> dict[str, str]:
    """`x-ratelimit-*` for the tightest rule of each metric."""
    if verdict is None:
        return {}
    out = {}
    for metric, (limit, remaining, reset) in verdict.limits.items():
        out[f"x-ratelimit-limit-{metric}"] = str(limit)
        out[f"x-ratelimit-remaining-{metric}"] = str(remaining)
        out[f"x-ratelimit-reset-{metric}"] = f"{reset}s"
    return out


def settle(call: Any) -> None:
    """Replace the request's reservations with what it really cost (in the background)."""
    verdict = call.quota
    if verdict is None or verdict.reservation is None:
        return
    tokens, usd = call.price.weighted(call.usage), call.cost()
    backend = counters()
    if isinstance(backend, MemoryCounters):
        crossings = backend.settle_now(verdict.reservation, tokens, usd, time.time())
        if crossings:
            _background(_alert(crossings))
        return
    _background(_settle(verdict.reservation, tokens, usd))


def _background(work: Any) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _alert(crossings: list[Any]) -> None:
    from quotas import logic

    await logic.record_crossings(crossings)


async def _settle(reservation: Any, tokens: float, usd: float) -> None:
    try:
        crossings = await counters().settle(reservation, tokens, usd, time.time())
    except _UNAVAILABLE as exc:
        logger.error("quota.settle_failed", extra={"error": type(exc).__name__})
        return
    if crossings:
        await _alert(crossings)


async def drain() -> None:
    """Wait for the settlements still running (shutdown)."""
    if _pending:
        await asyncio.gather(*_pending, return_exceptions=True)
