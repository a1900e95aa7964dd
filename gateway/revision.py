"""Keeping every gateway process's in-memory config current.

A change to anything the gateway caches bumps one counter row in the same transaction.
The process that made the change drops its caches when the transaction commits; every
other process notices the new revision within THINKWATCH_CONFIG_POLL_SECONDS (one small
query per interval, never on a request) and reloads.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts import runtime as runtime_settings
from accounts.cache import keys
from gateway.models import ConfigRevision
from mcpgw import credentials as mcp_credentials
from mcpgw.registry import registry as mcp_registry
from providers.cache import routes
from quotas.cache import quotas
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

Revision = tuple[int, object]


def bump() -> None:
    updated = ConfigRevision.objects.filter(pk=1).update(
        value=F("value") + 1, changed_at=timezone.now()
    )
    if not updated:
        ConfigRevision.objects.get_or_create(pk=1, defaults={"value": 1})
    transaction.on_commit(invalidate_local)


def invalidate_local() -> None:
    keys.clear()
    routes.clear()
    quotas.clear()
    mcp_registry.clear()
    mcp_credentials.clear()
    runtime_settings.store.clear()


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


async def watch(
    seen: Revision, interval: float, on_change: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Reload when the revision moves; runs for the life of a gateway process."""
    while True:
        await asyncio.sleep(interval)
        try:
            revision = await _current()
            if revision != seen:
                keys.clear()
                quotas.clear()
                mcp_registry.clear()
                mcp_credentials.clear()
                runtime_settings.store.clear()
                await routes.reload()
                await _reload_settings()
                if on_change is not None:
                    await on_change()
                seen = revision
                logger.info("config.reloaded", extra={"revision": revision[0]})
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("config.poll_failed")
