"""Start and stop of a gateway process (ASGI lifespan)."""

import asyncio
import contextlib
import logging
from typing import Any

from django.conf import settings

from gateway import logs, revision
from thinkwatch.lib import http

logger = logging.getLogger(__name__)

_tasks: list[asyncio.Task[None]] = []


async def start() -> None:
    logs.writer.start()
    seen = await revision.load()
    _tasks.append(asyncio.create_task(revision.watch(seen, settings.CONFIG_POLL_SECONDS)))
    http.session()
    logger.info("gateway.started", extra={"revision": seen[0]})


async def stop() -> None:
    for task in _tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _tasks.clear()
    await http.close()
    # Blocking: writes what is still queued (or spools it) before the process exits.
    await asyncio.to_thread(logs.writer.stop)
    logger.info("gateway.stopped")


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await start()
            except Exception as exc:
                logger.exception("gateway.start_failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
