"""Keeping every gateway process's in-memory config current.

A change to anything the gateway caches bumps one counter row in the same transaction.
When the transaction commits, the process that made the change drops its own caches and,
with REDIS_URL, announces the new revision on a Redis channel; every gateway process is
subscribed and reloads as soon as it hears (milliseconds). Pub/sub delivers at most once,
so each gateway process also polls the row (one small query per interval, never on a
request): every THINKWATCH_CONFIG_POLL_SECONDS without Redis, and every
THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS with it, where it only bounds how late a lost
announcement can make a change. After (re)subscribing a process checks at once, for what
was announced while it was not listening.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts import runtime as runtime_settings
from accounts.cache import keys
from gateway import cache, guardrails
from gateway.models import ConfigRevision
from mcpgw import credentials as mcp_credentials
from mcpgw.registry import registry as mcp_registry
from providers.cache import routes
from quotas.cache import quotas
from thinkwatch.lib import redis
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

Revision = tuple[int, datetime | None]

# Reconnecting after the subscription is lost: 0.1 s, doubling up to 5 s, with jitter so
# that a fleet does not reconnect in step after a Redis restart.
_RETRY_FIRST_SECONDS = 0.1
_RETRY_MAX_SECONDS = 5.0


# The newest revision committed by this process itself. Its caches were dropped at that
# commit, so hearing of it again (its own announcement, or the poll) reloads nothing.
_committed_here: Revision | None = None


def bump() -> None:
    updated = ConfigRevision.objects.filter(pk=1).update(
        value=F("value") + 1, changed_at=timezone.now()
    )
    if not updated:
        ConfigRevision.objects.get_or_create(pk=1, defaults={"value": 1})
    value, changed_at = ConfigRevision.objects.values_list("value", "changed_at").get(pk=1)
    transaction.on_commit(lambda: _committed((value, changed_at)))


def _committed(revision: Revision) -> None:
    global _committed_here
    invalidate_local()
    _committed_here = revision
    if settings.REDIS_URL:
        announce(revision[0])


def invalidate_local() -> None:
    keys.clear()
    routes.clear()
    guardrails.rules.clear()
    cache.policies.clear()
    quotas.clear()
    mcp_registry.clear()
    mcp_credentials.clear()
    runtime_settings.store.clear()


def channel() -> str:
    # Pub/sub ignores database numbers: installations sharing a Redis server on different
    # databases stay apart only if the channel names the database.
    return f"{settings.AUDIT_STREAM_PREFIX}config:{redis.database()}"


def announce(value: int) -> None:
    """Tell every gateway process that the revision moved. The change is committed already:
    a failure is logged and left to the fallback poll, never raised to whoever saved."""
    try:
        redis.publish(channel(), str(value))
    except Exception as exc:
        logger.warning(
            "config.announce_failed",
            extra={"revision": value, "error": type(exc).__name__, "detail": str(exc)},
        )


def poll_seconds() -> float:
    return (
        settings.CONFIG_FALLBACK_POLL_SECONDS
        if settings.REDIS_URL
        else settings.CONFIG_POLL_SECONDS
    )


def current() -> Revision:
    row = ConfigRevision.objects.filter(pk=1).values_list("value", "changed_at").first()
    return (row[0], row[1]) if row else (0, None)


_current = off_loop(current)
_reload_settings = off_loop(runtime_settings.store.reload)


async def load() -> Revision:
    """Load the route table and the runtime settings; returns the revision they are at
    least as new as."""
    revision = await _current()
    await routes.reload()
    await _reload_settings()
    return revision


class Follower:
    """This process's revision: whoever notices a change first (the poll or an
    announcement) brings the caches up to date, one reload at a time."""

    def __init__(
        self, seen: Revision, on_change: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.seen = seen
        self.on_change = on_change
        self._lock = asyncio.Lock()

    async def catch_up(self, via: str) -> None:
        """Reload if the revision moved. Failures are logged; the next poll tries again."""
        try:
            async with self._lock:
                revision = await _current()
                if revision == self.seen:
                    return
                if revision != _committed_here:
                    await self._reload()
                if self.on_change is not None:
                    await self.on_change()
                self.seen = revision
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("config.reload_failed", extra={"via": via})
            return
        logger.info(
            "config.reloaded",
            extra={"revision": revision[0], "via": via, "lag_ms": _lag_ms(revision)},
        )

    async def _reload(self) -> None:
        keys.clear()
        quotas.clear()
        mcp_registry.clear()
        mcp_credentials.clear()
        runtime_settings.store.clear()
        guardrails.rules.clear()
        cache.policies.clear()
        await routes.reload()
        await _reload_settings()


def _lag_ms(revision: Revision) -> int | None:
    """How long after the change this process reloaded (across hosts: plus clock skew)."""
    changed_at = revision[1]
    if changed_at is None:
        return None
    return round((timezone.now() - changed_at).total_seconds() * 1000)


async def watch(
    seen: Revision, interval: float, on_change: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Follow the revision for the life of a gateway process: poll every `interval`, and
    with REDIS_URL listen for announcements too."""
    follower = Follower(seen, on_change)
    async with asyncio.TaskGroup() as group:
        group.create_task(poll(follower, interval))
        if settings.REDIS_URL:
            group.create_task(listen(follower))


async def poll(follower: Follower, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await follower.catch_up("poll")


async def listen(follower: Follower) -> None:
    """Reload on every announcement. A lost connection (Redis restarted, the client killed,
    the network cut) is logged and reconnected with backoff; it never ends the loop."""
    failures = 0
    while True:
        try:
            async with redis.Subscription(channel()) as subscription:
                if failures:
                    logger.info("config.subscription_restored", extra={"failures": failures})
                failures = 0
                await follower.catch_up("subscribed")
                while True:
                    await subscription.next()
                    await follower.catch_up("announced")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            # The first retry is immediate (a killed connection or a failover is usually
            # over at once); later ones back off with jitter, so that many gateways do not
            # reconnect in step to a Redis that is still down.
            delay = 0.0
            if failures > 1:
                delay = min(_RETRY_MAX_SECONDS, _RETRY_FIRST_SECONDS * 2 ** min(failures - 2, 10))
                delay *= random.uniform(0.5, 1.0)
            logger.warning(
                "config.subscription_lost",
                extra={
                    "error": type(exc).__name__,
                    "detail": str(exc),
                    "failures": failures,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            await asyncio.sleep(delay)
