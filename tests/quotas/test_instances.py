"""Limits across gateway processes, and what happens when the quota store goes away."""

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from audit.models import GatewayLog
from providers.models import Provider
from tests.conftest import LiveServer, free_port
from tests.factories import (
    AIModelFactory,
    BudgetFactory,
    RateLimitRuleFactory,
    RouteFactory,
    make_key,
)
from tests.processes import Processes
from tests.quotas.test_enforcement import burst, statuses

MODEL = "gpt-4o-mini"


class RedisServer:
    """A Redis of the test's own, so it can be stopped."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def priced(openai_provider: Provider) -> None:
    RouteFactory(model=AIModelFactory(model_id=MODEL), provider=openai_provider)


@pytest.fixture
def two_gateways(
    transactional_db: None, priced: None, own_redis: RedisServer, tmp_path: Path
) -> Iterator[list[Processes]]:
    started = [
        Processes(tmp_path / name, "gateway", REDIS_URL=own_redis.url).start_gateway()
        for name in ("a", "b")
    ]
    yield started
    for processes in started:
        processes.close()


def burst_across(urls: list[str], key: str, n: int) -> list[httpx.Response]:
    import asyncio

    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            body = json.dumps(
                {"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
            )
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            sends = [
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions", content=body, headers=headers
                )
                for i in range(n)
            ]
            return list(await asyncio.gather(*sends))

    return asyncio.run(all_at_once())


def test_it_holds_a_limit_exactly_across_two_gateway_processes(
    two_gateways: list[Processes], bob: User
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=100, window=60)
    time.sleep(1.5)  # both processes see the new rule (config poll)
    urls = [g.gateway for g in two_gateways]
    burst_across(urls, make_key(bob, name="warm-up")[1], 4)  # both processes have warm caches

    responses = burst_across(urls, key, 400)

    assert statuses(responses) == {200: 100, 429: 300}


@pytest.mark.parametrize(
    ("fail_closed", "status", "code"), [(False, 200, None), (True, 429, "rate_limiter_unavailable")]
)
def test_it_fails_open_or_closed_when_redis_is_gone(
    transactional_db: None,
    priced: None,
    own_redis: RedisServer,
    bob: User,
    fail_closed: bool,
    status: int,
    code: str | None,
    settings: Any,
) -> None:
    from tests.conftest import forget_quota_counts
    from thinkwatch.asgi import gateway as app

    settings.REDIS_URL = own_redis.url
    settings.QUOTA_FAIL_CLOSED = fail_closed
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=1, window=3600)
    forget_quota_counts()
    with LiveServer(app) as gateway:
        counted = [r.status_code for r in (burst(gateway.url, key, 1) + burst(gateway.url, key, 1))]
        own_redis.stop()
        unavailable = burst(gateway.url, key, 1)[0]

    assert counted == [200, 429]
    assert unavailable.status_code == status
    assert unavailable.json().get("error", {}).get("code") == code


@pytest.mark.skipif(
    bool(settings.REDIS_URL), reason="with Redis the worker reconciles (quotas.tasks)"
)
def test_it_restores_budget_spend_from_the_log_when_it_starts(
    transactional_db: None, priced: None, bob: User, tmp_path: Path
) -> None:
    api_key, key = make_key(bob)
    GatewayLog.objects.create(
        request_id="before-restart",
        created_at=timezone.now(),
        user_id=bob.pk,
        api_key_id=api_key.pk,
        surface="ai_gateway",
        ingress="openai_chat",
        model=MODEL,
        status_code=200,
        cost_usd=Decimal("5"),
    )
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), period="month", limit=Decimal("5"))
    processes = Processes(tmp_path, "gateway").start_gateway()
    try:
        response = httpx.post(
            f"{processes.gateway}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
    finally:
        processes.close()

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "budget_exceeded"
