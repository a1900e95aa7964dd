"""Where entries live: each process's memory (bounded in bytes, least recently used first),
or Redis, shared by every gateway process; and requests served when Redis is gone."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Team
from gateway import cache
from providers.pricing import Usage
from tests.cache.conftest import ANSWERS, ask, asked_and_stored, policy, said, stored
from tests.conftest import LiveServer, forget_quota_counts
from tests.factories import make_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes
from tests.quotas.test_instances import RedisServer

production = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
embedded = pytest.mark.skipif(bool(settings.REDIS_URL), reason="without REDIS_URL only")


def entry(body: bytes = b'{"answer": 1}', stored_at: float | None = None) -> cache.Entry:
    return cache.Entry(
        body, "application/json", Usage(11, 5, 2, 1), 0.0000123, "openai", stored_at or time.time()
    )


# --- entries in memory ---------------------------------------------------------------------


async def test_memory_drops_the_least_recently_used_entry_first(settings: Any) -> None:
    store = cache.MemoryStore()
    settings.CACHE_MEMORY_BYTES = 3 * (len(b'{"answer": 1}') + 250)
    for key in ("a", "b", "c"):
        await store.put(key, entry(), 60)

    await store.get("a")
    await store.put("d", entry(), 60)

    assert [await store.get(k) is not None for k in "abcd"] == [True, False, True, True]
    assert store.size <= settings.CACHE_MEMORY_BYTES


async def test_memory_does_not_keep_an_entry_larger_than_itself(settings: Any) -> None:
    store = cache.MemoryStore()
    settings.CACHE_MEMORY_BYTES = 100

    await store.put("a", entry(b"x" * 200), 60)

    assert await store.get("a") is None
    assert store.size == 0


async def test_memory_forgets_an_entry_once_its_ttl_has_passed() -> None:
    store = cache.MemoryStore()

    await store.put("a", entry(stored_at=time.time() - 61), 60)

    assert await store.get("a") is None
    assert store.size == 0


async def test_memory_forgets_what_was_stored_before_a_purge() -> None:
    store = cache.MemoryStore()
    await store.put("old", entry(stored_at=time.time() - 5), 60)
    await store.put("new", entry(stored_at=time.time() + 5), 60)

    store.forget_before(time.time())

    assert [await store.get("old"), await store.get("new") is not None] == [None, True]


def test_an_entry_reads_back_as_it_was_written() -> None:
    written = entry(b'data: {"x": "\\n"}\n\ndata: [DONE]\n\n')

    assert cache.Entry.decode(written.encode()) == written


# --- where a gateway keeps its entries ------------------------------------------------------


@embedded
def test_without_redis_a_gateway_keeps_answers_in_its_memory(
    gateway: LiveServer, priced: None, bob_red_key: str
) -> None:
    policy()

    asked_and_stored(gateway, bob_red_key)

    assert cache.memory.size > 0


@production
def test_with_redis_answers_are_kept_there_with_the_policys_ttl(
    gateway: LiveServer, priced: None, bob_red_key: str
) -> None:
    policy(ttl_seconds=120)

    asked_and_stored(gateway, bob_red_key)

    client = redis.Redis.from_url(settings.REDIS_URL)
    [name] = list(client.scan_iter(match=f"{cache.PREFIX}*"))
    assert 110 < client.ttl(name) <= 120
    assert cache.memory.size == 0
    client.close()


@pytest.fixture
def two_gateways(
    transactional_db: None, priced: None, red: Team, tmp_path: Path
) -> Iterator[list[Processes]]:
    policy()
    started = [Processes(tmp_path / name, "gateway").start_gateway() for name in ("a", "b")]
    yield started
    for processes in started:
        processes.close()


@production
def test_with_redis_every_gateway_process_serves_what_one_of_them_kept(
    two_gateways: list[Processes], upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    first, second = (g.gateway for g in two_gateways)

    kept = ask(first, bob_red_key)
    time.sleep(0.2)  # the first process writes the entry after answering
    served = ask(second, bob_red_key)

    assert served.headers["x-cache"] == "hit"
    assert served.content == kept.content
    assert len(upstream.requests) == 1


@embedded
def test_without_redis_each_gateway_process_keeps_its_own_answers(
    two_gateways: list[Processes], upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    first, second = (g.gateway for g in two_gateways)

    ask(first, bob_red_key)
    time.sleep(0.2)
    other = ask(second, bob_red_key)
    again = ask(first, bob_red_key)

    assert [other.headers["x-cache"], again.headers["x-cache"]] == ["miss", "hit"]
    assert said(other) == ANSWERS[1]


def test_a_purge_reaches_a_gateway_process_of_its_own(
    transactional_db: None,
    priced: None,
    upstream: FakeOpenAI,
    alice: User,
    bob: User,
    red: Team,
    tmp_path: Path,
) -> None:
    _, key = make_key(bob, team=red, name="bob red")
    _, console_key = make_key(alice, surfaces=["console"])
    policy()
    gateway = Processes(tmp_path / "gw", "gateway").start_gateway()
    try:
        ask(gateway.gateway, key)
        time.sleep(0.2)
        before = ask(gateway.gateway, key)
        Client(HTTP_AUTHORIZATION=f"Bearer {console_key}").delete("/api/cache")
        after = _first_miss(gateway.gateway, key, within=10)
    finally:
        gateway.close()

    assert before.headers["x-cache"] == "hit"
    assert after.headers["x-cache"] == "miss"


def _first_miss(url: str, key: str, within: float) -> Any:
    """The first answer not served from the cache: the process learns of the purge with
    its next config check (at most THINKWATCH_CONFIG_POLL_SECONDS without Redis)."""
    deadline = time.monotonic() + within
    while True:
        response = ask(url, key)
        if response.headers["x-cache"] == "miss" or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


# --- Redis gone ---------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def test_requests_are_answered_when_redis_is_gone(
    transactional_db: None,
    priced: None,
    upstream: FakeOpenAI,
    own_redis: RedisServer,
    bob: User,
    red: Team,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from thinkwatch.asgi import gateway as app

    settings.REDIS_URL = own_redis.url
    monkeypatch.setattr(cache, "_warnings", cache._Warnings())
    _, key = make_key(bob, team=red, name="bob red")
    policy()
    forget_quota_counts()
    with LiveServer(app) as gateway:
        asked_and_stored(gateway, key)
        hit = ask(gateway, key)
        own_redis.stop()
        served = ask(gateway, key)
        stored()

    assert hit.headers["x-cache"] == "hit"
    assert (served.status_code, served.headers["x-cache"]) == (200, "miss")
    assert len(upstream.requests) == 2
    assert "cache.unavailable" in caplog.messages


@production
def test_an_unreadable_entry_in_redis_is_a_miss(
    gateway: LiveServer,
    priced: None,
    upstream: FakeOpenAI,
    bob_red_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy()
    asked_and_stored(gateway, bob_red_key)
    client = redis.Redis.from_url(settings.REDIS_URL)
    for name in client.scan_iter(match=f"{cache.PREFIX}*"):
        client.set(name, b"not an entry")
    client.close()

    again = ask(gateway, bob_red_key)

    assert (again.status_code, again.headers["x-cache"]) == (200, "miss")
    assert len(upstream.requests) == 2
    assert "cache.unreadable_entry" in caplog.messages
