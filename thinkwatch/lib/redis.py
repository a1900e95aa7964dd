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
        # A burst waits for a free connection instead of failing at the pool's size.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
        )
        found = per_loop[url] = aioredis.Redis(connection_pool=pool)
    return found
