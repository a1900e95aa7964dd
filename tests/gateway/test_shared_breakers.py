"""With Redis, every gateway instance agrees on each route's breaker: opened by one
instance's failures, it is open on the others within a second; closed by one's successful
trial, closed everywhere."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts import runtime
from providers.models import AIModel, Provider
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes

pytestmark = pytest.mark.skipif(
    not settings.REDIS_URL, reason="shared breakers need Redis (the production pass)"
)
BODY = {"model": "house", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def house(transactional_db: None, openai_provider: Provider, backup: FakeOpenAI) -> AIModel:
    model = AIModelFactory(model_id="house")
    spare = ProviderFactory(name="backup", base_url=backup.url)
    RouteFactory(model=model, provider=openai_provider, upstream_model="main", weight=1000)
    RouteFactory(model=model, provider=spare, upstream_model="spare", weight=1)
    runtime.update({"gateway.breaker_failures": 2, "gateway.breaker_open_seconds": 2})
    return model


@pytest.fixture
def two_gateways(house: AIModel, tmp_path: Path) -> Iterator[tuple[Processes, Processes]]:
    first = Processes(tmp_path / "one", "gateway").start_gateway()
    second = Processes(tmp_path / "two", "gateway").start_gateway()
    yield first, second
    first.close()
    second.close()


def post(gateway: Processes, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.gateway}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_a_breaker_opened_by_one_instance_is_open_on_the_others(
    two_gateways: tuple[Processes, Processes], upstream: FakeOpenAI, bob_key: str
) -> None:
    first, second = two_gateways
    assert post(second, bob_key).status_code == 200  # the second knows the route
    upstream.script(status=503)

    for _ in range(2):
        assert post(first, bob_key).status_code == 200  # the backup answers
    opened = time.monotonic()
    upstream.requests.clear()
    time.sleep(1.0)  # a second: the other instance reads the open set twice a second
    responses = [post(second, bob_key) for _ in range(5)]

    assert [r.headers["x-thinkwatch-provider"] for r in responses] == ["backup"] * 5
    assert upstream.requests == []
    assert time.monotonic() - opened < 2  # still inside the open period


def test_a_successful_trial_on_one_instance_closes_the_breaker_everywhere(
    two_gateways: tuple[Processes, Processes], upstream: FakeOpenAI, bob_key: str
) -> None:
    first, second = two_gateways
    upstream.script(status=503)
    for _ in range(2):
        post(first, bob_key)
    upstream.script()  # healthy again
    time.sleep(2.1)  # the open period passes

    trial = post(first, bob_key)  # the first instance's trial call succeeds
    time.sleep(1.0)
    after = [post(second, bob_key).headers["x-thinkwatch-provider"] for _ in range(3)]

    assert trial.headers["x-thinkwatch-provider"] == "openai"
    assert after == ["openai"] * 3
