"""Which provider serves a model, under which name, and what the caller sees."""

from collections import Counter
from decimal import Decimal

import openai
import pytest
from django.contrib.auth.models import User

from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory, make_key
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_it_routes_unregistered_openai_models_by_prefix(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    client.chat.completions.create(model="o3-mini", messages=MESSAGES)

    assert upstream.requests[0].body["model"] == "o3-mini"


def test_it_sends_the_routes_upstream_name_and_shows_the_callers(
    client: openai.OpenAI, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    RouteFactory(
        model=AIModelFactory(model_id="house-chat"),
        provider=openai_provider,
        upstream_model="gpt-4o-2024-08-06",
    )

    completion = client.chat.completions.create(model="house-chat", messages=MESSAGES)

    assert upstream.requests[0].body["model"] == "gpt-4o-2024-08-06"
    assert completion.model == "house-chat"
    assert logged()[0].upstream_model == "gpt-4o-2024-08-06"


def test_it_shows_the_callers_model_name_in_every_stream_chunk(
    client: openai.OpenAI, openai_provider: Provider
) -> None:
    RouteFactory(
        model=AIModelFactory(model_id="house-chat"),
        provider=openai_provider,
        upstream_model="gpt-4o-2024-08-06",
    )

    chunks = list(
        client.chat.completions.create(model="house-chat", messages=MESSAGES, stream=True)
    )

    assert {chunk.model for chunk in chunks} == {"house-chat"}


def test_it_prefers_a_registered_model_over_the_default_prefix(
    client: openai.OpenAI, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    compatible = ProviderFactory(
        name="vllm", type="openai_compatible", base_url=upstream.url, api_key=""
    )
    RouteFactory(model=AIModelFactory(model_id="gpt-oss-20b"), provider=compatible)

    response = client.chat.completions.with_raw_response.create(
        model="gpt-oss-20b", messages=MESSAGES
    )

    assert response.headers["x-thinkwatch-provider"] == "vllm"
    assert "authorization" not in upstream.requests[0].headers


def test_it_splits_traffic_by_route_weight(
    client: openai.OpenAI, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    model = AIModelFactory(model_id="split")
    RouteFactory(model=model, provider=openai_provider, upstream_model="heavy", weight=9)
    RouteFactory(model=model, provider=openai_provider, upstream_model="light", weight=1)

    for _ in range(200):
        client.chat.completions.create(model="split", messages=MESSAGES)

    counts = Counter(r.body["model"] for r in upstream.requests)
    assert 150 <= counts["heavy"] <= 195


def test_it_skips_disabled_providers(client: openai.OpenAI, openai_provider: Provider) -> None:
    openai_provider.enabled = False
    openai_provider.save()

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_it_lists_only_the_models_a_key_may_use(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    for name in ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4"):
        RouteFactory(model=AIModelFactory(model_id=name), provider=openai_provider)
    AIModelFactory(model_id="unrouted")
    _, key = make_key(bob, allowed_models=["gpt-4o*"])

    models = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0).models.list()

    assert sorted(m.id for m in models.data) == ["gpt-4o", "gpt-4o-mini"]


def test_it_weights_tokens_with_the_models_multipliers(
    client: openai.OpenAI, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    model = AIModelFactory(
        model_id="gpt-4o-mini", input_multiplier=Decimal("1"), output_multiplier=Decimal("4")
    )
    RouteFactory(model=model, provider=openai_provider)
    upstream.script(prompt_tokens=10)

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert logged()[0].weighted_tokens == 10 + 4 * len(upstream._script.words)
