"""Several gateway processes sharing one database and one Redis, as several hosts would."""

import math
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from accounts.access import builtin_role
from accounts.models import RoleAssignment
from tests.factories import make_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes

MODEL = "gpt-4o-mini"

# Gateways on several hosts need a database and a Redis they all reach.
PRODUCTION = bool(settings.REDIS_URL) and connection.vendor == "postgresql"
production_only = pytest.mark.skipif(
    not PRODUCTION, reason="several gateway hosts share PostgreSQL and Redis (production mode)"
)

# This run's namespace on a shared Redis: its announcements are heard only by its own
# gateways, and the subscriptions a test cuts are theirs alone.
NAMESPACE = f"tw-scale-{secrets.token_hex(4)}:"


@pytest.fixture(autouse=True)
def _announce_in_this_runs_namespace(settings: Any) -> None:
    settings.AUDIT_STREAM_PREFIX = NAMESPACE


@pytest.fixture(autouse=True, scope="session")
def _forget_this_runs_keys() -> Iterator[None]:
    yield
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{NAMESPACE}*", count=1000):
            client.delete(key)
        client.close()


def start_gateways(data_dirs: list[Path], **env: str) -> list[Processes]:
    """Gateway processes (`python -m thinkwatch.run --only gateway`) on the test database,
    started side by side."""
    gateways = [
        Processes(data_dir, "gateway", THINKWATCH_AUDIT_STREAM_PREFIX=NAMESPACE, **env)
        for data_dir in data_dirs
    ]
    try:
        with ThreadPoolExecutor(len(gateways)) as pool:
            list(pool.map(Processes.start_gateway, gateways))
    except BaseException:
        stop_gateways(gateways)
        raise
    return gateways


def stop_gateways(gateways: list[Processes]) -> None:
    with ThreadPoolExecutor(len(gateways)) as pool:
        list(pool.map(Processes.close, gateways))


@pytest.fixture(scope="session")
def second_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def second_upstream(second_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    second_openai.reset()
    yield second_openai
    second_openai.reset()


@pytest.fixture
def console(alice: User) -> Client:
    """The management API as Alice's automation calls it (what the console's pages do)."""
    _, key = make_key(alice, name="console", surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def developer(user: User) -> None:
    # A transactional test empties the tables the built-in roles were seeded into.
    RoleAssignment.objects.get_or_create(user=user, role=builtin_role("developer"), team=None)


# One client for every request a test sends (a new one per request costs 50 ms, which
# would blur the timings measured here).
http = httpx.Client(timeout=10)


def chat(url: str, key: str) -> httpx.Response:
    return http.post(
        f"{url}/v1/chat/completions",
        json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )


def seconds_until(
    since: float, urls: list[str], holds: Callable[[str], bool], limit: float = 10
) -> list[float]:
    """For each gateway, how long after `since` (a monotonic time) `holds(url)` first came
    true, asking the gateways round robin without pause; inf for one that never did
    within `limit` seconds."""
    took = dict.fromkeys(urls, math.inf)
    pending = list(urls)
    while pending and time.monotonic() - since < limit:
        for url in list(pending):
            if holds(url):
                took[url] = time.monotonic() - since
                pending.remove(url)
    return [took[url] for url in urls]


def status_is(key: str, status: int) -> Callable[[str], bool]:
    return lambda url: chat(url, key).status_code == status


def serves_everywhere(urls: list[str], key: str) -> None:
    """Until every gateway has loaded what the test set up and answers the key."""
    took = seconds_until(time.monotonic(), urls, status_is(key, 200))
    assert max(took) < math.inf, "not every gateway serves the key"


def logs_from_now(gateways: list[Processes]) -> Callable[[str], str]:
    """What the gateway at a URL logs from now on."""
    marks = {gateway.gateway: (gateway, len(gateway.output())) for gateway in gateways}

    def logged(url: str) -> str:
        gateway, mark = marks[url]
        return gateway.output()[mark:]

    return logged
