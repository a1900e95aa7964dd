"""Personas and helpers of the response cache's tests.

Bob (conftest) is a developer of team Red; Dave is a developer of team Red too; Carol is
a developer of team Blue. Every one of them sends the same question."""

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from accounts.models import Membership, Team
from gateway import cache
from gateway.models import CachePolicy
from providers.models import Provider
from tests.conftest import LiveServer
from tests.factories import AIModelFactory, RouteFactory, TeamFactory, UserFactory, make_key
from tests.gateway.test_hot_path import queries  # noqa: F401 (the SQL recorder, a fixture)

MODEL = "gpt-4o-mini"
OTHER_MODEL = "o3-mini"
QUESTION = "What is the capital of France?"
ANSWERS = ("Paris, first answer.", "Paris, second answer.", "Paris, third answer.")


def forget_cached_answers() -> None:
    """No entry of an earlier test: its keys and teams have the same ids as this one's."""
    import asyncio

    import redis

    asyncio.run(cache.memory.purge())
    cache.memory.purged_at = 0.0
    cache.policies.clear()
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{cache.PREFIX}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture(autouse=True)
def _no_cached_answers() -> Iterator[None]:
    forget_cached_answers()
    yield
    forget_cached_answers()


@pytest.fixture
def priced(openai_provider: Provider) -> None:
    """Two models on the OpenAI fake, at $1 per 1M input and $2 per 1M output tokens."""
    for model_id in (MODEL, OTHER_MODEL):
        model = AIModelFactory(
            model_id=model_id, input_price=Decimal("1"), output_price=Decimal("2")
        )
        RouteFactory(model=model, provider=openai_provider)


@pytest.fixture
def red(bob: User) -> Team:
    team = cast(Team, TeamFactory(name="red"))
    Membership.objects.create(team=team, user=bob)
    return team


@pytest.fixture
def blue(db: None) -> Team:
    return cast(Team, TeamFactory(name="blue"))


@pytest.fixture
def dave(red: Team) -> User:
    """Dave is Bob's teammate in team Red."""
    user = cast(User, UserFactory(username="dave@example.com"))
    Membership.objects.create(team=red, user=user)
    return user


@pytest.fixture
def carol(blue: Team) -> User:
    """Carol is a developer of team Blue."""
    user = cast(User, UserFactory(username="carol@example.com"))
    Membership.objects.create(team=blue, user=user)
    return user


@pytest.fixture
def bob_red_key(bob: User, red: Team) -> str:
    return make_key(bob, team=red, name="bob red")[1]


@pytest.fixture
def dave_red_key(dave: User, red: Team) -> str:
    return make_key(dave, team=red, name="dave red")[1]


@pytest.fixture
def carol_blue_key(carol: User, blue: Team) -> str:
    return make_key(carol, team=blue, name="carol blue")[1]


def policy(**fields: Any) -> CachePolicy:
    fields.setdefault("name", "answers")
    return CachePolicy.objects.create(**fields)


def ask(
    gateway: LiveServer | str,
    key: str,
    headers: dict[str, str] | None = None,
    **changes: Any,
) -> httpx.Response:
    """The question in OpenAI's Chat Completions format, with `changes` to its body, to a
    gateway in this process or at a URL."""
    url = gateway if isinstance(gateway, str) else gateway.url
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], **changes}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def said(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def stored() -> None:
    """Until the gateway has finished its requests and written the answers it keeps (it
    writes them after answering)."""
    if LiveServer.running is not None:
        LiveServer.running.wait_idle()
    deadline = time.monotonic() + 10
    while cache.writes_in_flight() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not cache.writes_in_flight()


def asked_and_stored(gateway: LiveServer, key: str, **changes: Any) -> httpx.Response:
    response = ask(gateway, key, **changes)
    stored()
    return response
