"""The process's Redis client (redis.asyncio), when REDIS_URL is set."""

import asyncio

import redis.asyncio as aioredis
from django.conf import settings

_clients: dict[int, aioredis.Redis] = {}


def client() -> aioredis.Redis:
    """One client per event loop (a client's connections belong to the loop they were made on)."""
    loop_id = id(asyncio.get_running_loop())
    found = _clients.get(loop_id)
    if found is None:
        found = _clients[loop_id] = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
        )
    return found
