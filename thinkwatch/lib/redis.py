"""The process's Redis client (redis.asyncio), when REDIS_URL is set."""

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

# A client's connections belong to the event loop they were opened on.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]" = (
    weakref.WeakKeyDictionary()
)


def client() -> aioredis.Redis:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    url = settings.REDIS_URL
    found = per_loop.get(url)
    if found is None:
        found = per_loop[url] = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5
        )
    return found
