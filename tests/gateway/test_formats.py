"""Every client format against every provider type: the official SDKs on one side, each
provider's fake on the other, the gateway converting (or passing through) in between."""

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.conftest import LiveServer, logged
from tests.factories import AIModelFactory, RouteFactory
from tests.fakes.base import FakeServer, ToolCall
from tests.gateway.matrix import CLIENTS, PIXEL, PROVIDERS, Conversation, ProviderCase

MODEL = "team-model"
WEATHER_CALL = ToolCall("call_w1", "get_weather", {"city": "Paris"})
TIME_CALL = ToolCall("call_t2", "get_time", {"zone": "Europe/Paris", "format": "24h"})


@pytest.fixture(params=sorted(PROVIDERS))
def case(request: pytest.FixtureRequest) -> ProviderCase:
    return PROVIDERS[request.param]


@pytest.fixture
def fake(case: ProviderCase, fakes: dict[str, FakeServer]) -> Iterator[FakeServer]:
    fakes[case.type].reset()
    yield fakes[case.type]
    fakes[case.type].reset()


@pytest.fixture(params=sorted(CLIENTS))
def client(
    request: pytest.FixtureRequest,
    gateway: LiveServer,
    case: ProviderCase,
    fake: FakeServer,
    bob_key: str,
):  # type: ignore[no-untyped-def]
    """A client SDK calling MODEL, which routes to `case`'s provider (its fake)."""
    model = AIModelFactory(
        model_id=MODEL,
        input_price=Decimal("1"),
        output_price=Decimal("2"),
        cached_input_price=Decimal("0.1"),
    )
    RouteFactory(model=model, provider=case.provider(fake), upstream_model=case.upstream_model)
    return CLIENTS[request.param](gateway.url, bob_key)


def test_it_answers_plain_text(client, case: ProviderCase, fake: FakeServer) -> None:  # type: ignore[no-untyped-def]
    answer = client.ask(MODEL, Conversation())

    (record,) = logged()
    assert answer.text == fake.script_now.text
    assert (record.provider, record.upstream_model, record.status_code) == (
        f"{case.type}-provider",
        case.upstream_model,
        200,
    )
    assert record.ingress == client.name


def test_it_streams_text(client, fake: FakeServer) -> None:  # type: ignore[no-untyped-def]
    answer = client.ask_stream(MODEL, Conversation())

    script = fake.script_now
    assert answer.text == script.text
    assert answer.usage[:2] == (script.prompt_tokens, script.completion_tokens)
    assert logged()[0].streamed


@pytest.mark.parametrize("method", ["ask", "ask_stream"])
def test_it_returns_a_tool_call(client, case: ProviderCase, fake: FakeServer, method: str) -> None:  # type: ignore[no-untyped-def]
    fake.script(text="", tool_calls=(WEATHER_CALL,))

    answer = getattr(client, method)(MODEL, Conversation(tools=True))

    assert answer.tool_calls == [("call_w1", "get_weather", {"city": "Paris"})]
    assert case.tool_names(fake.requests[-1].body) == ["get_weather"]


@pytest.mark.parametrize("method", ["ask", "ask_stream"])
def test_it_returns_parallel_tool_calls(client, fake: FakeServer, method: str) -> None:  # type: ignore[no-untyped-def]
    fake.script(text="", tool_calls=(WEATHER_CALL, TIME_CALL))

    answer = getattr(client, method)(MODEL, Conversation(tools=True))

    assert answer.tool_calls == [
        ("call_w1", "get_weather", {"city": "Paris"}),
        ("call_t2", "get_time", {"zone": "Europe/Paris", "format": "24h"}),
    ]


def test_it_sends_a_tool_result_back_with_its_call(
    client, case: ProviderCase, fake: FakeServer
) -> None:  # type: ignore[no-untyped-def]
    conversation = Conversation(
        tools=True, tool_round=("call_w1", "get_weather", {"city": "Paris"}, "18C and sunny")
    )

    answer = client.ask(MODEL, conversation)

    body = fake.requests[-1].body
    assert case.tool_calls(body) == [("call_w1", "get_weather", {"city": "Paris"})]
    assert case.tool_results(body) == [("call_w1", "18C and sunny")]
    assert answer.text == fake.script_now.text


def test_it_passes_an_image(client, case: ProviderCase, fake: FakeServer) -> None:  # type: ignore[no-untyped-def]
    client.ask(MODEL, Conversation(text="What is in this picture?", image=("image/png", PIXEL)))

    assert case.images(fake.requests[-1].body) == [("image/png", PIXEL)]


@pytest.mark.parametrize("method", ["ask", "ask_stream"])
def test_it_reports_cached_and_reasoning_usage(
    client, case: ProviderCase, fake: FakeServer, method: str
) -> None:  # type: ignore[no-untyped-def]
    fake.script(prompt_tokens=100, cached_tokens=40, reasoning_tokens=5)

    answer = getattr(client, method)(MODEL, Conversation())

    output = fake.script_now.completion_tokens
    (record,) = logged()
    assert answer.usage == (100, output, 40)
    assert (record.input_tokens, record.cached_tokens, record.output_tokens) == (100, 40, output)
    assert record.reasoning_tokens == 5 * case.reports_reasoning
    assert float(record.cost_usd) == pytest.approx((60 * 1 + 40 * 0.1 + output * 2) / 1_000_000)


def test_it_answers_a_provider_failure_in_the_clients_format(client, fake: FakeServer) -> None:  # type: ignore[no-untyped-def]
    fake.script(status=500)

    with pytest.raises(client.api_error) as caught:
        client.ask(MODEL, Conversation())

    assert caught.value.status_code == 502
    assert [r.status_code for r in logged()] == [502]
