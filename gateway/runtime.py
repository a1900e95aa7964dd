"""Start and stop of a gateway process (ASGI lifespan)."""

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

from audit import bodies
from gateway import logs, revision
from mcpgw import records as mcp_records
from mcpgw import upstream as mcp_upstream
from quotas import admission, logic
from quotas.cache import quotas
from quotas.counters import MemoryCounters
from quotas.models import QuotaReset
from thinkwatch import startup
from thinkwatch.lib import http
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

_tasks: list[asyncio.Task[None]] = []
RECONCILE_SECONDS = 300


class EmbeddedQuotas:
    """In embedded mode this process owns the quota counters: it restores budget spend
    from the log at start and every few minutes, applies resets made in the console, and
    writes the counts to a file the console reads."""

    def __init__(self, counters: MemoryCounters) -> None:
        self.counters = counters
        self.resets_seen = datetime.now(UTC)

    async def start(self) -> None:
        restored = await logic.reconcile(self.counters, await quotas.get())
        logger.info("quota.restored", extra={"budget_counters": restored})
        _tasks.append(asyncio.create_task(self._every(RECONCILE_SECONDS, self._reconcile)))
        _tasks.append(asyncio.create_task(self._every(1.0, self.write_snapshot)))

    async def _every(self, seconds: float, work: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                logger.exception("quota.housekeeping_failed")

    async def _reconcile(self) -> None:
        await logic.reconcile(self.counters, await quotas.get())

    async def apply_resets(self) -> None:
        resets = await off_loop(_resets_since)(self.resets_seen)
        for kind, ident, at in resets:
            await self.counters.reset(f"{kind}:{ident}")
            self.resets_seen = max(self.resets_seen, at)
        if resets:
            await self._reconcile()

    async def write_snapshot(self) -> None:
        if not self.counters.changed:
            return
        self.counters.changed = False
        data = orjson.dumps(self.counters.dump())
        await asyncio.to_thread(_write_atomically, logic.snapshot_path(), data)


def _resets_since(moment: datetime) -> list[tuple[str, str, datetime]]:
    return list(
        QuotaReset.objects.filter(at__gt=moment)
        .order_by("at")
        .values_list("subject_kind", "subject_id", "at")
    )


def _write_atomically(path: Any, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


_embedded: EmbeddedQuotas | None = None


async def start() -> None:
    global _embedded
    await off_loop(startup.require)()  # raises startup.NotReady: uvicorn exits with code 3
    logs.writer.start()
    mcp_records.writer.start()
    revision.invalidate_local()  # a fresh process, or a test restarting the server
    seen = await revision.load()
    counters = admission.counters()
    on_change = None
    if isinstance(counters, MemoryCounters):
        _embedded = EmbeddedQuotas(counters)
        await _embedded.start()
        on_change = _embedded.apply_resets
    # Polls, and with REDIS_URL also listens for announced changes (gateway/revision.py).
    _tasks.append(asyncio.create_task(revision.watch(seen, revision.poll_seconds(), on_change)))
    http.session()
    logger.info("gateway.started", extra={"revision": seen[0]})


async def stop() -> None:
    for task in _tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _tasks.clear()
    await admission.drain()
    if _embedded is not None:
        await _embedded.write_snapshot()
    await http.close()
    for pool in mcp_upstream.pools():
        await pool.close()
    # Records whose bodies are still being redacted are submitted first; then what is
    # queued is delivered (the segment keeps what cannot be) before the process exits.
    await asyncio.to_thread(bodies.settle)
    await asyncio.to_thread(logs.writer.stop)
    await asyncio.to_thread(mcp_records.writer.stop)
    logger.info("gateway.stopped")


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await start()
            except startup.NotReady as exc:  # one line, no traceback: uvicorn logs it
                failed = f"ThinkWatch cannot start: {exc}"
                await send({"type": "lifespan.startup.failed", "message": failed})
                return
            except Exception as exc:
                logger.exception("gateway.start_failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
