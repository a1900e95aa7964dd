"""The process's Redis clients, when REDIS_URL is set: the shared redis.asyncio client,
a publisher for synchronous code and subscriptions of their own."""

import asyncio
import contextlib
import threading
import weakref

import redis as syncredis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry as SyncRetry

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


def database() -> int:
    """The database number REDIS_URL selects (pub/sub channels ignore it)."""
    return int(parse_url(settings.REDIS_URL).get("db", 0))


_sync = threading.local()


def publish(channel: str, message: str) -> None:
    """Publish from synchronous code (a console view, a Celery task). One client per thread,
    with short timeouts and one retry: an unreachable Redis holds the caller up about two
    seconds at most; the caller decides what a failure means."""
    found = getattr(_sync, "client", None)
    if found is None or _sync.url != settings.REDIS_URL:
        found = syncredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=SyncRetry(NoBackoff(), 1),
        )
        _sync.client, _sync.url = found, settings.REDIS_URL
    found.publish(channel, message)


class Subscription:
    """The messages of one channel, on a connection of its own (a subscribed connection can
    do nothing else), named after the channel in CLIENT LIST.

    Connection errors surface at once instead of being retried inside redis-py: the caller
    must know when it may have missed messages. A connection silent for `heartbeat` seconds
    is pinged, and one that does not answer within as long again counts as lost (a half-open
    TCP connection would otherwise wait forever).
    """

    def __init__(self, channel: str, heartbeat: float = 10.0) -> None:
        self.channel = channel
        self.heartbeat = heartbeat
        self._client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            client_name=channel,
        )
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    async def __aenter__(self) -> "Subscription":
        try:
            await self._pubsub.subscribe(self.channel)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()

    async def next(self) -> bytes:
        """Wait for a message; what arrived in the meantime counts as one (the newest)."""
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        while True:
            message = await self._pubsub.get_message(timeout=self.heartbeat)
            if message is None:
                if loop.time() - heard < self.heartbeat:
                    continue  # a subscription's confirmation, which is not passed on
                if pinged:
                    raise RedisConnectionError(f"no answer to PING within {self.heartbeat} s")
                await self._pubsub.ping()
                pinged = True
                continue
            heard, pinged = loop.time(), False
            if message["type"] == "message":
                latest: bytes = message["data"]
                while (more := await self._pubsub.get_message(timeout=0)) is not None:
                    if more["type"] == "message":
                        latest = more["data"]
                return latest
