"""Three gateway processes, one PostgreSQL, one Redis: a change made through the management
API (or the model layer, as the console's pages save) is in force on every gateway within
a second, and MCP sessions belong to the fleet, not to one process.

The gateways' fallback poll is 30 s: what reaches them within a second was announced."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from gateway import revision
from providers.models import AIModel, Route
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory, make_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes
from tests.scale.conftest import (
    MODEL,
    chat,
    developer,
    http,
    logs_from_now,
    production_only,
    seconds_until,
    serves_everywhere,
    start_gateways,
    status_is,
    stop_gateways,
)

pytestmark = production_only

HEAVY = 1_000_000_000  # against a weight of 1: one request in a billion goes elsewhere


@pytest.fixture(scope="module")
def fleet(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Processes]]:
    gateways = start_gateways(
        [tmp_path_factory.mktemp(f"gateway-{n}") for n in range(3)],
        THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS="30",
    )
    yield gateways
    stop_gateways(gateways)


@pytest.fixture
def urls(transactional_db: None, fleet: list[Processes]) -> list[str]:
    return [gateway.gateway for gateway in fleet]


@pytest.fixture
def two_routes(
    transactional_db: None, upstream: FakeOpenAI, second_upstream: FakeOpenAI
) -> tuple[Route, Route]:
    """The model served by two providers; all its traffic goes to the first."""
    model = AIModelFactory(model_id=MODEL)
    first = ProviderFactory(name="first", base_url=upstream.url)
    second = ProviderFactory(name="second", base_url=second_upstream.url)
    return (
        RouteFactory(model=model, provider=first, weight=HEAVY),
        RouteFactory(model=model, provider=second, weight=1),
    )


def lands_on(fake: FakeOpenAI, key: str) -> Callable[[str], bool]:
    def holds(url: str) -> bool:
        before = len(fake.requests)
        assert chat(url, key).status_code == 200
        return len(fake.requests) > before

    return holds


def spread(urls: list[str], key: str, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> list[int]:
    """Ten requests to each gateway: how many each upstream received."""
    before = [len(fake.requests) for fake in fakes]
    statuses = {chat(url, key).status_code for url in urls for _ in range(10)}
    assert statuses == {200}
    return [len(fake.requests) - count for fake, count in zip(fakes, before, strict=True)]


def test_a_key_revoked_through_the_api_is_refused_by_every_gateway_within_a_second(
    urls: list[str], two_routes: tuple[Route, Route], bob: User, console: Client
) -> None:
    api_key, key = make_key(bob)
    serves_everywhere(urls, key)

    started = time.monotonic()
    revoked = console.delete(f"/api/keys/{api_key.pk}?reason=compromised")
    took = seconds_until(started, urls, status_is(key, 401))

    assert revoked.status_code == 200
    assert max(took) < 1.0, took


def test_a_weight_change_moves_the_traffic_of_every_gateway_within_a_second(
    urls: list[str],
    two_routes: tuple[Route, Route],
    bob_key: str,
    upstream: FakeOpenAI,
    second_upstream: FakeOpenAI,
) -> None:
    first, second = two_routes
    serves_everywhere(urls, bob_key)
    before = spread(urls, bob_key, (upstream, second_upstream))

    started = time.monotonic()
    with transaction.atomic():  # as the model's page saves its routes
        first.weight, second.weight = 1, HEAVY
        first.save()
        second.save()
    took = seconds_until(started, urls, lands_on(second_upstream, bob_key))
    after = spread(urls, bob_key, (upstream, second_upstream))

    assert before == [30, 0]
    assert max(took) < 1.0, took
    assert after == [0, 30]


def test_a_disabled_route_is_avoided_by_every_gateway_within_a_second(
    urls: list[str],
    two_routes: tuple[Route, Route],
    bob_key: str,
    console: Client,
    upstream: FakeOpenAI,
    second_upstream: FakeOpenAI,
) -> None:
    first, _ = two_routes
    serves_everywhere(urls, bob_key)

    started = time.monotonic()
    disabled = console.patch(
        f"/api/models/{first.model_id}/routes/{first.pk}",
        {"enabled": False},
        content_type="application/json",
    )
    took = seconds_until(started, urls, lands_on(second_upstream, bob_key))
    after = spread(urls, bob_key, (upstream, second_upstream))

    assert disabled.status_code == 200
    assert max(took) < 1.0, took
    assert after == [0, 30]


def test_a_disabled_model_is_refused_by_every_gateway_within_a_second(
    urls: list[str], two_routes: tuple[Route, Route], bob_key: str, console: Client
) -> None:
    model = AIModel.objects.get(model_id=MODEL)
    serves_everywhere(urls, bob_key)

    started = time.monotonic()
    killed = console.patch(
        f"/api/models/{model.pk}", {"enabled": False}, content_type="application/json"
    )
    took = seconds_until(started, urls, status_is(bob_key, 403))
    codes = {chat(url, bob_key).json()["error"]["code"] for url in urls}

    assert killed.status_code == 200
    assert max(took) < 1.0, took
    assert codes == {"model_disabled"}


def test_every_gateway_hears_the_announcement_instead_of_waiting_for_its_poll(
    fleet: list[Processes], urls: list[str], two_routes: tuple[Route, Route], console: Client
) -> None:
    model = AIModel.objects.get(model_id=MODEL)
    logged = logs_from_now(fleet)

    started = time.monotonic()
    console.patch(
        f"/api/models/{model.pk}", {"display_name": "Mini"}, content_type="application/json"
    )
    line = f"config.reloaded revision={revision.current()[0]} via=announced"
    took = seconds_until(started, urls, lambda url: line in logged(url))

    assert max(took) < 1.0, took


def subscribers(client: redis.Redis) -> list[dict[str, Any]]:
    """This run's gateways' subscriptions: their connections are named after the channel."""
    return [c for c in client.client_list(_type="pubsub") if c["name"] == revision.channel()]


def wait_for(value: Callable[[], int], wanted: int, within: float) -> int:
    """`value()` once it equals `wanted`, or its last reading after `within` seconds."""
    deadline = time.monotonic() + within
    while (found := value()) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_gateways_whose_subscriptions_are_cut_reconnect_and_still_apply_a_change_in_a_second(
    fleet: list[Processes],
    urls: list[str],
    two_routes: tuple[Route, Route],
    bob: User,
    console: Client,
) -> None:
    api_key, key = make_key(bob)
    serves_everywhere(urls, key)
    logged = logs_from_now(fleet)
    client = redis.Redis.from_url(settings.REDIS_URL)
    cut = [client.client_kill_filter(_id=c["id"]) for c in subscribers(client)]

    started = time.monotonic()
    revoked = console.delete(f"/api/keys/{api_key.pk}?reason=compromised")
    took = seconds_until(started, urls, status_is(key, 401))
    resubscribed = wait_for(lambda: len(subscribers(client)), 3, within=2.0)
    logs = [logged(url) for url in urls]
    client.close()

    assert cut == [1, 1, 1]
    assert revoked.status_code == 200
    assert max(took) < 1.0, took
    assert resubscribed == 3
    assert all("config.subscription_lost" in log for log in logs)
    assert all("config.subscription_restored" in log for log in logs)


# --- MCP sessions ----------------------------------------------------------------------


def mcp(url: str, key: str, body: dict[str, Any], session: str | None = None) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return http.post(f"{url}/mcp", json=body, headers=headers)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "scale", "version": "1"},
    },
}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@pytest.fixture
def mcp_key(transactional_db: None, bob: User) -> str:
    developer(bob)
    return make_key(bob, name="mcp", surfaces=["mcp_gateway"])[1]


def test_an_mcp_session_started_on_one_gateway_is_served_by_the_others(
    urls: list[str], mcp_key: str
) -> None:
    session = mcp(urls[0], mcp_key, INITIALIZE).headers["mcp-session-id"]

    pinged = [mcp(url, mcp_key, PING, session) for url in urls[1:]]
    listed = mcp(urls[2], mcp_key, TOOLS, session)

    assert [r.json()["result"] for r in pinged] == [{}, {}]
    assert listed.json()["result"]["tools"] == []


def test_an_mcp_session_ended_on_one_gateway_is_unknown_to_all(
    urls: list[str], mcp_key: str
) -> None:
    session = mcp(urls[0], mcp_key, INITIALIZE).headers["mcp-session-id"]

    ended = http.delete(
        f"{urls[1]}/mcp", headers={"Authorization": f"Bearer {mcp_key}", "Mcp-Session-Id": session}
    )
    statuses = [mcp(url, mcp_key, PING, session).status_code for url in urls]

    assert ended.status_code == 204
    assert statuses == [404, 404, 404]


def test_a_session_id_unknown_to_the_store_gets_404_so_the_client_initialises_again(
    urls: list[str], mcp_key: str
) -> None:
    unknown = [mcp(url, mcp_key, PING, "f" * 64) for url in urls]
    fresh = mcp(urls[1], mcp_key, INITIALIZE)

    assert [r.status_code for r in unknown] == [404, 404, 404]
    assert fresh.status_code == 200
    assert mcp(urls[2], mcp_key, PING, fresh.headers["mcp-session-id"]).json()["result"] == {}
