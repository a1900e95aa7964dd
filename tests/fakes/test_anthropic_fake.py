"""The fake Anthropic API, checked with the official `anthropic` SDK: if the SDK reads the fake's
answers as it reads the real API's, the fake speaks the documented wire format."""

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.base import ToolCall

MODEL = "claude-fake-1"  # not a real model, so the SDK never warns it is deprecated
ASK = [{"role": "user", "content": "What is the weather in Paris and in Oslo?"}]
WEATHER = ToolCall("toolu_01A", "get_weather", {"city": "Paris", "unit": "celsius"})
TIME = ToolCall("toolu_01B", "get_time", {"zone": "Europe/Oslo", "note": 'Zürich → Oslo "ok"'})
THINKING = "The user wants the weather. I should call the tool for each city."


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(anthropic_upstream: FakeAnthropic) -> FakeAnthropic:
    anthropic_upstream.reset()
    return anthropic_upstream


@pytest.fixture
def sdk(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-x", max_retries=0)


def create(sdk: anthropic.Anthropic, **extra: Any) -> anthropic.types.Message:
    return sdk.messages.create(model=MODEL, max_tokens=256, messages=ASK, **extra)


def stream(sdk: anthropic.Anthropic, **extra: Any) -> anthropic.types.Message:
    with sdk.messages.stream(model=MODEL, max_tokens=256, messages=ASK, **extra) as events:
        return events.get_final_message()


Send = Callable[..., anthropic.types.Message]


def raw_events(fake: FakeAnthropic) -> list[tuple[str, dict[str, Any]]]:
    """The stream as (event name, data) pairs, read without the SDK."""
    response = httpx.post(
        f"{fake.url}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-x"},
        json={"model": MODEL, "max_tokens": 256, "messages": ASK, "stream": True},
    )
    pairs = []
    for chunk in response.text.strip().split("\n\n"):
        event_line, data_line = chunk.split("\n")
        pairs.append((event_line.removeprefix("event: "), json.loads(data_line[6:])))
    return pairs


def usage_of(message: anthropic.types.Message) -> tuple[int, int, int | None]:
    usage = message.usage
    return usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens


def test_it_answers_a_text_message(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    fake.script(text="Paris is sunny.", prompt_tokens=20, cached_tokens=5)

    message = create(sdk)

    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": "Paris is sunny.", "citations": None}
    ]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert usage_of(message) == (15, 3, 5)
    assert message.usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize(
    "script",
    [
        {"text": "Paris is sunny today.", "prompt_tokens": 30, "cached_tokens": 12},
        {"text": ""},
        {"text": "Let me check.", "tool_calls": (WEATHER,)},
        {"text": "", "tool_calls": (WEATHER, TIME)},
        {"thinking": THINKING, "text": "Checking.", "tool_calls": (WEATHER,)},
        {"thinking": THINKING, "signature": "EqQBsig==", "text": "Sunny.", "stop": "max_tokens"},
    ],
    ids=["text", "empty", "one-tool", "two-tools", "thinking-and-tool", "thinking-max-tokens"],
)
def test_it_streams_the_same_message_it_answers_whole(
    fake: FakeAnthropic, sdk: anthropic.Anthropic, script: dict[str, Any]
) -> None:
    fake.script(**script)
    whole = create(sdk)

    streamed = stream(sdk)

    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in whole.content]
    assert streamed.stop_reason == whole.stop_reason
    assert streamed.stop_sequence is None
    assert usage_of(streamed) == usage_of(whole)
    assert streamed.model == MODEL


def test_it_streams_text_word_by_word(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    fake.script(text="One two three.")

    with sdk.messages.stream(model=MODEL, max_tokens=256, messages=ASK) as events:
        pieces = list(events.text_stream)

    assert pieces == ["One", " two", " three."]


def test_it_sends_the_documented_event_sequence(fake: FakeAnthropic) -> None:
    fake.script(thinking="Hmm, weather.", text="On it.", tool_calls=(WEATHER,), prompt_tokens=9)

    events = raw_events(fake)

    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    assert start["usage"]["input_tokens"] == 9
    assert start["usage"]["output_tokens"] == 1
    assert [data["index"] for name, data in events if name == "content_block_start"] == [0, 1, 2]
    assert [data["delta"]["type"] for _, data in events[3:6]] == [
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
    ]
    assert events[11][1]["content_block"] == {
        "type": "tool_use",
        "id": WEATHER.id,
        "name": WEATHER.name,
        "input": {},
    }
    partial = "".join(data["delta"]["partial_json"] for _, data in events[12:15])
    assert json.loads(partial) == WEATHER.arguments
    assert events[16][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[16][1]["usage"] == {"output_tokens": 2 + 7}


@pytest.mark.parametrize("send", [create, stream], ids=["whole", "stream"])
@pytest.mark.parametrize("calls", [(WEATHER,), (WEATHER, TIME)], ids=["one", "two"])
def test_it_calls_tools(
    fake: FakeAnthropic, sdk: anthropic.Anthropic, calls: tuple[ToolCall, ...], send: Send
) -> None:
    fake.script(text="", tool_calls=calls)
    tools = [{"name": c.name, "input_schema": {"type": "object"}} for c in calls]

    message = send(sdk, tools=tools)

    assert message.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", c.id, c.name, c.arguments) for c in calls
    ]


@pytest.mark.parametrize("send", [create, stream], ids=["whole", "stream"])
def test_it_puts_thinking_first_with_its_signature(
    fake: FakeAnthropic, sdk: anthropic.Anthropic, send: Send
) -> None:
    fake.script(thinking=THINKING, signature="EqQBCkYsig", text="Sunny.")

    message = send(sdk, thinking={"type": "enabled", "budget_tokens": 1024})

    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING
    assert message.content[0].signature == "EqQBCkYsig"


@pytest.mark.parametrize("send", [create, stream], ids=["whole", "stream"])
def test_it_stops_at_max_tokens(fake: FakeAnthropic, sdk: anthropic.Anthropic, send: Send) -> None:
    fake.script(stop="max_tokens")

    message = send(sdk)

    assert message.stop_reason == "max_tokens"


def test_it_counts_tokens(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    chars = (
        len("Be brief.") + len(ASK[0]["content"]) + len(json.dumps(tools, separators=(",", ":")))
    )

    counted = sdk.messages.count_tokens(model=MODEL, system="Be brief.", messages=ASK, tools=tools)

    assert counted.input_tokens == chars // 4
    assert fake.requests[-1].path == "/v1/messages/count_tokens"
    assert fake.requests[-1].body["system"] == "Be brief."


@pytest.mark.parametrize(
    ("content", "tokens"),
    [([{"type": "text", "text": "12345678"}], 2), ("hi", 1)],
    ids=["text-block", "at-least-one"],
)
def test_it_counts_text_blocks_and_at_least_one_token(
    sdk: anthropic.Anthropic, content: Any, tokens: int
) -> None:
    counted = sdk.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": content}]
    )

    assert counted.input_tokens == tokens


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("send", [create, stream], ids=["whole", "stream"])
def test_it_fails_as_scripted(
    fake: FakeAnthropic,
    sdk: anthropic.Anthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
    send: Send,
) -> None:
    fake.script(status=status, headers={"retry-after": "7"})

    with pytest.raises(error_class) as raised:
        send(sdk)

    assert raised.value.status_code == status
    assert raised.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": "The fake provider failed."},
    }
    assert raised.value.response.headers["retry-after"] == "7"


def test_it_answers_an_overload_with_the_sdks_internal_server_error_family(
    fake: FakeAnthropic, sdk: anthropic.Anthropic
) -> None:
    fake.script(status=529)

    with pytest.raises(anthropic.InternalServerError):
        create(sdk)


def test_it_fails_with_the_scripted_error_body(
    fake: FakeAnthropic, sdk: anthropic.Anthropic
) -> None:
    fake.script(status=529, error={"type": "overloaded_error", "message": "Overloaded"})

    with pytest.raises(anthropic.OverloadedError) as raised:
        create(sdk)

    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


@pytest.mark.parametrize("endpoint", ["create", "count"])
def test_it_refuses_a_key_it_does_not_expect(
    fake: FakeAnthropic, sdk: anthropic.Anthropic, endpoint: str
) -> None:
    fake.script(expected_key="sk-ant-right")
    calls = {
        "create": lambda: create(sdk),
        "count": lambda: sdk.messages.count_tokens(model=MODEL, messages=ASK),
    }

    with pytest.raises(anthropic.AuthenticationError) as raised:
        calls[endpoint]()

    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }


@pytest.mark.parametrize(
    "credential",
    [{"x-api-key": "sk-ant-right"}, {"authorization": "Bearer sk-ant-right"}],
    ids=["x-api-key", "bearer"],
)
def test_it_accepts_the_key_it_expects_in_either_header(
    fake: FakeAnthropic, credential: dict[str, str]
) -> None:
    fake.script(expected_key="sk-ant-right", text="Welcome.")

    response = httpx.post(
        f"{fake.url}/v1/messages",
        headers={"anthropic-version": "2023-06-01", **credential},
        json={"model": MODEL, "max_tokens": 10, "messages": ASK},
    )

    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": "Welcome."}]
    assert credential.items() <= fake.requests[-1].headers.items()


def test_it_accepts_the_key_the_sdk_presents(fake: FakeAnthropic) -> None:
    fake.script(expected_key="sk-ant-right", text="Welcome.")
    sdk = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-right", max_retries=0)

    assert create(sdk).content[0].text == "Welcome."


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_it_requires_the_anthropic_version_header(fake: FakeAnthropic, path: str) -> None:
    response = httpx.post(
        fake.url + path,
        headers={"x-api-key": "sk-ant-x"},
        json={"model": MODEL, "max_tokens": 10, "messages": ASK},
    )

    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        },
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL, "messages": ASK}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 10, "messages": []}, "messages: at least one"),
        ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
        ({"max_tokens": 10, "messages": ASK}, "model: Field required"),
    ],
    ids=["no-max-tokens", "no-messages", "messages-missing", "no-model"],
)
def test_it_refuses_a_request_the_real_api_would_refuse(
    fake: FakeAnthropic, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(
        f"{fake.url}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-x"},
        json=body,
    )

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith(message)


def test_it_answers_canned_bytes(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    fake.script(body=b"<html>bad gateway</html>", status=502, content_type="text/html")

    with pytest.raises(anthropic.InternalServerError) as raised:
        create(sdk)

    assert raised.value.status_code == 502
    assert raised.value.body == "<html>bad gateway</html>"


def test_it_records_the_request_and_its_headers(
    fake: FakeAnthropic, sdk: anthropic.Anthropic
) -> None:
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}

    create(sdk, system="Be brief.", extra_headers=beta)

    seen = fake.requests[-1]
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", seen.headers["anthropic-version"])
    # the SDK presents its API key as a bearer token; `x-api-key` is covered with raw requests
    assert seen.headers["authorization"] == "Bearer sk-ant-x"
    assert seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert seen.body == {"model": MODEL, "max_tokens": 256, "messages": ASK, "system": "Be brief."}


def test_it_records_an_x_api_key_and_beta_header(fake: FakeAnthropic) -> None:
    headers = {
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-x",
        "anthropic-beta": "prompt-caching-2024-07-31,token-counting-2024-11-01",
    }

    httpx.post(
        f"{fake.url}/v1/messages/count_tokens",
        headers=headers,
        json={"model": MODEL, "messages": ASK},
    )

    assert fake.requests[-1].path == "/v1/messages/count_tokens"
    assert headers.items() <= fake.requests[-1].headers.items()


def test_it_honours_the_scripted_stream_cut(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    fake.script(text="One two three four.", cut_after=4)

    with pytest.raises(httpx2.RemoteProtocolError):
        stream(sdk)

    assert fake.cut_streams == 1
