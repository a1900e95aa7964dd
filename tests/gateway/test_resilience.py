"""Failing providers: retries, failover, circuit breakers, strategies and affinity, and what
the log record says about each attempt."""

import time
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from django.contrib.auth.models import User

from accounts import runtime
from gateway import routing
from providers.models import AIModel, Provider
from tests.conftest import LiveServer, logged
from tests.factories import (
    AIModelFactory,
    ProviderFactory,
    RouteFactory,
    TeamFactory,
    make_key,
)
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def two_routes(openai_provider: Provider, backup: FakeOpenAI) -> AIModel:
    """`house` on the primary provider (weight 1000) and on the backup (weight 1): the
    primary is chosen first, almost always."""
    model = AIModelFactory(model_id="house")
    spare = ProviderFactory(name="backup", base_url=backup.url)
    RouteFactory(model=model, provider=openai_provider, upstream_model="main", weight=1000)
    RouteFactory(model=model, provider=spare, upstream_model="spare", weight=1)
    return model


def settings_(**values: Any) -> None:
    """Runtime settings, in force at once (a gateway's watcher reloads them within its poll
    interval; the in-process test gateway shares this process's copy)."""
    runtime.update({f"gateway.{key}": value for key, value in values.items()})
    runtime.store.reload()


def attempts(record: Any) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in record.routing["attempts"]]


def post(gateway: LiveServer, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "house", "messages": MESSAGES, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


# --- failover and retries -------------------------------------------------------------------


def test_it_fails_over_to_the_next_route_when_the_provider_fails(
    client: openai.OpenAI, upstream: FakeOpenAI, backup: FakeOpenAI, two_routes: AIModel
) -> None:
    upstream.script(status=503)

    response = client.chat.completions.with_raw_response.create(model="house", messages=MESSAGES)

    assert response.headers["x-thinkwatch-provider"] == "backup"
    assert response.parse().model == "house"
    [record] = logged()
    assert attempts(record) == [("openai", "http_503"), ("backup", "ok")]
    assert record.routing["attempts"][1]["reason"].startswith("failover after http_503")
    assert (record.provider, record.status_code) == ("backup", 200)


def test_it_fails_over_when_the_provider_cannot_be_reached(
    client: openai.OpenAI, backup: FakeOpenAI, two_routes: AIModel, openai_provider: Provider
) -> None:
    openai_provider.base_url = "http://127.0.0.1:9/v1"  # nothing listens there
    openai_provider.save()

    client.chat.completions.create(model="house", messages=MESSAGES)

    [record] = logged()
    assert attempts(record) == [("openai", "connect_error"), ("backup", "ok")]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_it_never_retries_the_callers_own_errors(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
    status: int,
) -> None:
    upstream.script(status=status)

    response = post(gateway, bob_key)

    assert response.status_code == status
    assert len(upstream.requests) == 1
    assert backup.requests == []


def test_it_waits_as_long_as_the_providers_retry_after_says(
    gateway: LiveServer, bob_key: str, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    RouteFactory(model=AIModelFactory(model_id="house"), provider=openai_provider)
    upstream.script(status=429, fail_times=1, headers={"Retry-After": "1"})

    started = time.monotonic()
    response = post(gateway, bob_key)

    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0
    [record] = logged()
    assert attempts(record) == [("openai", "http_429"), ("openai", "ok")]
    assert "waited 1.00 s" in record.routing["attempts"][1]["reason"]


def test_it_does_not_wait_longer_than_allowed(
    gateway: LiveServer, bob_key: str, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    RouteFactory(model=AIModelFactory(model_id="house"), provider=openai_provider)
    upstream.script(status=429, headers={"Retry-After": "120"})

    started = time.monotonic()
    response = post(gateway, bob_key)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "120"
    assert time.monotonic() - started < 2
    assert len(upstream.requests) == 1


def test_it_backs_off_between_attempts_and_stops_at_the_limit(
    gateway: LiveServer, bob_key: str, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    RouteFactory(model=AIModelFactory(model_id="house"), provider=openai_provider)
    settings_(retry_attempts=4, retry_backoff_ms=100)
    upstream.script(status=500)

    response = post(gateway, bob_key)

    assert response.status_code == 502
    assert len(upstream.requests) == 4
    [record] = logged()
    reasons = [a["reason"] for a in record.routing["attempts"]]
    assert [r.split(",")[0] for r in reasons[1:]] == ["retry after http_500"] * 3
    waits = [float(r.split("waited ")[1].split(" s")[0]) for r in reasons[1:]]
    assert all(0 <= w <= 0.1 * 2**n for n, w in enumerate(waits))


def test_it_fails_a_stream_over_before_its_first_byte(
    client: openai.OpenAI, upstream: FakeOpenAI, backup: FakeOpenAI, two_routes: AIModel
) -> None:
    upstream.script(cut_after=0)  # headers, then the connection closes

    chunks = list(client.chat.completions.create(model="house", messages=MESSAGES, stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake provider, streamed word by word."
    [record] = logged()
    assert attempts(record) == [("openai", "connection_error"), ("backup", "ok")]
    assert (record.streamed, record.provider) == (True, "backup")


def test_it_keeps_a_stream_that_broke_after_its_first_byte_on_its_route(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    upstream.script(cut_after=2)

    response = post(gateway, bob_key, stream=True)

    assert response.status_code == 200
    assert "upstream_connection_error" in response.text
    assert backup.requests == []
    [record] = logged()
    assert attempts(record) == [("openai", "ok")]
    assert record.error_code == "upstream_connection_error"
    route_id = record.routing["attempts"][0]["route_id"]
    assert routing.health(f"r{route_id}").failure_rate > 0


# --- circuit breakers -------------------------------------------------------------------------


def test_an_open_breaker_takes_the_failing_route_out_until_a_trial_call(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    settings_(breaker_failures=2, breaker_open_seconds=1)
    upstream.script(status=503)

    for _ in range(2):
        assert post(gateway, bob_key).status_code == 200  # served by the backup
    upstream.requests.clear()
    assert post(gateway, bob_key).status_code == 200

    assert upstream.requests == []  # open: not even tried
    third = logged()[-1]
    assert third.routing["skipped"] == [
        {
            "route_id": third.routing["skipped"][0]["route_id"],
            "provider": "openai",
            "reason": "circuit open",
        }
    ]
    upstream.script()  # healthy again
    time.sleep(1.1)
    post(gateway, bob_key)
    trial = logged()[-1]
    assert trial.routing["attempts"][0]["trial"] is True
    assert attempts(trial) == [("openai", "ok")]
    post(gateway, bob_key)
    assert "skipped" not in logged()[-1].routing


def test_a_failed_trial_call_opens_the_breaker_again(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    settings_(breaker_failures=1, breaker_open_seconds=1)
    upstream.script(status=503)
    post(gateway, bob_key)
    time.sleep(1.1)

    post(gateway, bob_key)  # the trial fails, the backup answers
    upstream.requests.clear()
    post(gateway, bob_key)

    assert upstream.requests == []


def test_it_answers_503_with_retry_after_when_every_route_is_open(
    gateway: LiveServer, bob_key: str, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    RouteFactory(model=AIModelFactory(model_id="house"), provider=openai_provider)
    settings_(breaker_failures=1, breaker_open_seconds=30, retry_attempts=1)
    upstream.script(status=500)
    post(gateway, bob_key)

    response = post(gateway, bob_key)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_healthy_route"
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert len(upstream.requests) == 1


def test_the_breaker_state_is_a_metric(
    settings: Any,
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    settings.METRICS_BEARER_TOKEN = "metrics-token-for-tests"
    settings_(breaker_failures=1)
    upstream.script(status=503)
    post(gateway, bob_key)

    metrics = httpx.get(
        f"{gateway.url}/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"}
    ).text

    assert (
        'thinkwatch_circuit_breaker_state{surface="ai_gateway",target="openai/main"} 2.0' in metrics
    )
    assert (
        'thinkwatch_circuit_breaker_state{surface="ai_gateway",target="backup/spare"} 0.0'
        in metrics
    )


# --- strategies -----------------------------------------------------------------------------


def test_the_latency_strategy_prefers_the_faster_route(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    two_routes.routing_strategy = "latency"
    two_routes.save()
    upstream.script(delay=0.2)

    for _ in range(12):
        post(gateway, bob_key)

    assert len(upstream.requests) <= 2  # measured once (or twice), then left
    last = logged()[-1].routing
    assert last["strategy"] == "latency"
    assert last["attempts"][0]["reason"].startswith("lowest latency (EWMA")


def test_the_healthiest_strategy_avoids_the_route_that_failed(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    settings_(routing_strategy="healthiest")
    upstream.script(status=503, fail_times=1)

    for _ in range(5):
        post(gateway, bob_key)

    assert len(upstream.requests) == 1
    assert {a["provider"] for r in logged()[1:] for a in r.routing["attempts"]} == {"backup"}


def test_the_cheapest_strategy_takes_the_cheaper_route_and_prices_it(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    two_routes.routing_strategy = "cheapest"
    two_routes.save()
    spare = two_routes.routes.get(upstream_model="spare")
    spare.input_price, spare.output_price = Decimal("0.01"), Decimal("0.02")
    spare.save()

    response = post(gateway, bob_key)

    assert response.headers["x-thinkwatch-provider"] == "backup"
    [record] = logged()
    assert record.routing["attempts"][0]["reason"] == "cheapest ($0.03 per 1M tokens)"
    expected = (11 * Decimal("0.01") + record.output_tokens * Decimal("0.02")) / 1_000_000
    assert record.cost_usd == expected.quantize(Decimal("1e-10"))


def test_the_global_default_strategy_applies_to_models_without_one(
    gateway: LiveServer, bob_key: str, backup: FakeOpenAI, two_routes: AIModel
) -> None:
    settings_(routing_strategy="cheapest")

    post(gateway, bob_key)

    assert logged()[0].routing["strategy"] == "cheapest"


def test_affinity_keeps_a_caller_on_the_route_that_served_them(
    gateway: LiveServer,
    bob: User,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    for route in two_routes.routes.all():
        route.weight = 1
        route.save()
    two_routes.affinity_seconds = 60
    two_routes.save()

    for _ in range(20):
        post(gateway, bob_key)

    served = Counter(r.provider for r in logged())
    assert len(served) == 1
    assert logged()[-1].routing["attempts"][0]["reason"].startswith("affinity")


def test_affinity_gives_way_when_the_route_fails(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    two_routes.affinity_seconds = 60
    two_routes.save()
    post(gateway, bob_key)  # the primary serves Bob (weight 1000 to 1)
    upstream.script(status=503)

    response = post(gateway, bob_key)

    assert response.headers["x-thinkwatch-provider"] == "backup"


def test_a_disabled_route_is_never_used(
    gateway: LiveServer,
    bob_key: str,
    upstream: FakeOpenAI,
    backup: FakeOpenAI,
    two_routes: AIModel,
) -> None:
    main = two_routes.routes.get(upstream_model="main")
    main.enabled = False
    main.save()

    for _ in range(5):
        post(gateway, bob_key)

    assert upstream.requests == []


def test_routing_settings_are_checked(alice: User) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        settings_(routing_strategy="fastest")
    with pytest.raises(ValidationError):
        settings_(retry_attempts=0)


def test_a_service_key_has_affinity_of_its_own(
    gateway: LiveServer, upstream: FakeOpenAI, backup: FakeOpenAI, two_routes: AIModel
) -> None:
    for route in two_routes.routes.all():
        route.weight = 1
        route.save()
    two_routes.affinity_seconds = 60
    two_routes.save()
    _, service_key = make_key(None, name="ci", team=TeamFactory())

    for _ in range(10):
        post(gateway, service_key)

    assert len({r.provider for r in logged()}) == 1


def test_models_served_by_prefix_share_their_providers_breaker(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    settings_(breaker_failures=2, retry_attempts=1)
    upstream.script(status=503)

    for model in ("gpt-invented-1", "gpt-invented-2"):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=model, messages=MESSAGES)
    upstream.requests.clear()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-invented-3", messages=MESSAGES)

    assert refused.value.status_code == 503
    assert upstream.requests == []
    assert set(routing.names.values()) == {"openai/*"}
