"""When announcements cannot be made or heard: a change is saved regardless, gateways
resubscribe after Redis restarts and apply what they missed, a lost announcement is made
up for by the fallback poll, and a connection that silently stopped answering is noticed.

These run against a Redis of their own (it is stopped and started), with the mode's
database: SQLite in embedded mode, PostgreSQL in production."""

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import F
from django.test import Client
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from accounts.models import ApiKey
from gateway.models import ConfigRevision
from providers.models import Provider
from tests.conftest import LiveServer, free_port
from tests.factories import make_key
from tests.processes import Processes
from tests.quotas.test_instances import RedisServer
from tests.scale.conftest import (
    logs_from_now,
    seconds_until,
    serves_everywhere,
    start_gateways,
    status_is,
    stop_gateways,
)
from thinkwatch.lib.redis import Subscription


@pytest.fixture
def own_redis(settings: Any) -> Iterator[RedisServer]:
    """A Redis this test may stop; this process announces there too."""
    server = RedisServer().start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def two_gateways(
    transactional_db: None, own_redis: RedisServer, openai_provider: Provider, tmp_path: Path
) -> Iterator[list[Processes]]:
    """Two gateway processes on that Redis, polling only every 30 s."""
    gateways = start_gateways(
        [tmp_path / "a", tmp_path / "b"],
        REDIS_URL=own_redis.url,
        THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS="30",
    )
    yield gateways
    stop_gateways(gateways)


def test_a_change_is_saved_and_the_failed_announcement_logged_when_redis_is_unreachable(
    transactional_db: None, settings: Any, bob: User, console: Client, caplog: Any
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    api_key, _ = make_key(bob)

    with caplog.at_level(logging.WARNING, logger="gateway.revision"):
        revoked = console.delete(f"/api/keys/{api_key.pk}?reason=compromised")

    assert revoked.status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert "config.announce_failed" in caplog.messages


def test_gateways_resubscribe_after_redis_restarts_and_apply_what_they_missed(
    two_gateways: list[Processes], own_redis: RedisServer, bob: User, console: Client
) -> None:
    urls = [gateway.gateway for gateway in two_gateways]
    api_key, key = make_key(bob)
    serves_everywhere(urls, key)
    logged = logs_from_now(two_gateways)

    own_redis.stop()
    revoked = console.delete(f"/api/keys/{api_key.pk}?reason=compromised")  # unannounced
    own_redis.start()
    took = seconds_until(time.monotonic(), urls, status_is(key, 401))
    # The key is refused as soon as the reload has dropped the key cache, before it logs.
    caught_up = seconds_until(time.monotonic(), urls, lambda url: "via=subscribed" in logged(url))

    assert revoked.status_code == 200
    # Reconnecting backs off to at most 5 s; the fallback poll would take 30 s.
    assert max(took) < 6, took
    assert max(caught_up) < math.inf
    assert all("config.subscription_lost" in logged(url) for url in urls)


def revoke_unannounced(api_key: ApiKey) -> None:
    """What another process leaves when its announcement is lost: the row and a new
    revision, and no message (nor a signal in this process)."""
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now(), revoked_reason="lost")
    ConfigRevision.objects.filter(pk=1).update(value=F("value") + 1, changed_at=timezone.now())


def test_a_change_whose_announcement_was_lost_arrives_with_the_fallback_poll(
    transactional_db: None,
    own_redis: RedisServer,
    settings: Any,
    openai_provider: Provider,
    bob: User,
) -> None:
    from thinkwatch.asgi import gateway as app

    settings.CONFIG_POLL_SECONDS = 30  # with Redis the fallback interval is the one that counts
    settings.CONFIG_FALLBACK_POLL_SECONDS = 0.5
    api_key, key = make_key(bob)
    with LiveServer(app) as gateway:
        serves_everywhere([gateway.url], key)
        started = time.monotonic()
        revoke_unannounced(api_key)
        took = seconds_until(started, [gateway.url], status_is(key, 401))

    assert took[0] < 0.5 + 0.5, took


class StallingProxy:
    """A TCP proxy to Redis that can stop forwarding without closing anything: what a host
    that vanished, or a cut network, looks like to a connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stalled = False
        self._pipes: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        self.server.close()
        for task in self._pipes:
            task.cancel()
        for writer in self._writers:
            writer.close()

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [client_out, redis_out]
        self._pipes += [
            asyncio.create_task(self._pipe(client_in, redis_out)),
            asyncio.create_task(self._pipe(redis_in, client_out)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (data := await reader.read(65536)) and not self.stalled:
            writer.write(data)
            await writer.drain()


async def test_a_subscription_whose_connection_stops_answering_counts_as_lost(
    own_redis: RedisServer, settings: Any
) -> None:
    proxy = StallingProxy(own_redis.port)
    settings.REDIS_URL = await proxy.start()
    async with Subscription("tw-scale:silence", heartbeat=0.2) as subscription:
        waiting = asyncio.create_task(subscription.next())
        await asyncio.sleep(0.6)  # idle for three heartbeats: pinged, and answered
        idle_but_alive = not waiting.done()
        proxy.stalled = True
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="no answer to PING"):
            await asyncio.wait_for(waiting, 2)
        noticed = time.monotonic() - started
    await proxy.stop()

    assert idle_but_alive
    assert noticed < 2 * 0.2 + 0.2
