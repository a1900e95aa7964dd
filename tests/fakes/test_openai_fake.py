"""The fake OpenAI API and the fake Azure OpenAI resource, checked against OpenAI's own
`openai` SDK: what the SDK sends reaches the fake, and what the fake answers the SDK reads
back as OpenAI's (or Azure's)."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCallFunction
from openai.types.responses import Response

from tests.fakes.base import ToolCall, embedding
from tests.fakes.openai_upstream import FakeAzureOpenAI, FakeOpenAI

MODEL = "gpt-4o-mini"
DEPLOYMENT = "my-gpt-4o"
API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Say hello."}]
WEATHER = ToolCall("call_weather_1", "get_weather", {"city": "Paris", "unit": "celsius"})
TIME = ToolCall("call_time_2", "get_time", {})


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azure_server() -> Iterator[FakeAzureOpenAI]:
    server = FakeAzureOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    openai_server.reset()
    yield openai_server
    openai_server.reset()


@pytest.fixture
def azure(azure_server: FakeAzureOpenAI) -> Iterator[FakeAzureOpenAI]:
    azure_server.reset()
    yield azure_server
    azure_server.reset()


@pytest.fixture
def sdk(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url, api_key="sk-x", max_retries=0, timeout=10)


@pytest.fixture
def azure_sdk(azure: FakeAzureOpenAI) -> openai.AzureOpenAI:
    return azure_client(azure, key="k")


def azure_client(azure: FakeAzureOpenAI, key: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=azure.root, api_key=key, api_version=API_VERSION, max_retries=0, timeout=10
    )


# Two ways to get one chat answer: whole, or streamed and put together by the SDK's helper.


def chat_once(client: openai.OpenAI, model: str = MODEL, **kwargs: Any) -> ChatCompletion:
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


def chat_streamed(client: openai.OpenAI, model: str = MODEL, **kwargs: Any) -> ChatCompletion:
    with client.chat.completions.stream(model=model, messages=MESSAGES, **kwargs) as stream:
        return stream.get_final_completion()


CHAT_BOTH_WAYS = pytest.mark.parametrize(
    "chat", [chat_once, chat_streamed], ids=["completion", "stream"]
)
Chat = Callable[..., ChatCompletion]


def chunks(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    return list(
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs)
    )


# Two ways to get one response: whole, or streamed and put together by the SDK's helper.


def respond_once(client: openai.OpenAI, **kwargs: Any) -> Response:
    return client.responses.create(model=MODEL, input="Say hello.", **kwargs)


def respond_streamed(client: openai.OpenAI, **kwargs: Any) -> Response:
    with client.responses.stream(model=MODEL, input="Say hello.", **kwargs) as stream:
        return stream.get_final_response()


RESPOND_BOTH_WAYS = pytest.mark.parametrize(
    "respond", [respond_once, respond_streamed], ids=["response", "stream"]
)
Respond = Callable[..., Response]


def response_events(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    return list(client.responses.create(model=MODEL, input="Say hello.", stream=True, **kwargs))


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == f"response.{kind}"]


def tool_calls_of(message: ChatCompletionMessage) -> list[ToolCall]:
    return [
        ToolCall(c.id, c.function.name, json.loads(c.function.arguments))
        for c in message.tool_calls or []
        if c.type == "function"
    ]


def function_calls_of(response: Response) -> list[ToolCall]:
    return [
        ToolCall(item.call_id, item.name, json.loads(item.arguments))
        for item in response.output
        if item.type == "function_call"
    ]


# Chat Completions


@CHAT_BOTH_WAYS
def test_it_answers_a_chat_completion_with_the_scripted_text(
    fake: FakeOpenAI, sdk: openai.OpenAI, chat: Chat
) -> None:
    completion = chat(sdk)

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == fake._script.text
    assert choice.finish_reason == "stop"


def test_it_records_what_the_sdk_sent(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    chat_once(sdk, temperature=0.2)

    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer sk-x"
    assert seen.body == {"model": MODEL, "messages": MESSAGES, "temperature": 0.2}


def test_it_streams_the_text_one_word_per_chunk(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    fake.script(text="one two three four")

    received = chunks(sdk)

    *words, last = received
    assert [c.choices[0].delta.content for c in words] == ["one", " two", " three", " four"]
    assert [c.choices[0].delta.role for c in words] == ["assistant", None, None, None]
    assert (last.choices[0].delta.content, last.choices[0].finish_reason) == (None, "stop")
    assert {(c.object, c.id, c.model, c.created) for c in received} == {
        ("chat.completion.chunk", received[0].id, MODEL, received[0].created)
    }


@CHAT_BOTH_WAYS
@pytest.mark.parametrize("calls", [(WEATHER,), (WEATHER, TIME)], ids=["one", "parallel"])
def test_it_returns_tool_calls(
    fake: FakeOpenAI, sdk: openai.OpenAI, chat: Chat, calls: tuple[ToolCall, ...]
) -> None:
    fake.script(text="", tool_calls=calls)

    completion = chat(sdk)

    (choice,) = completion.choices
    assert tool_calls_of(choice.message) == list(calls)
    assert choice.message.content is None
    assert choice.finish_reason == "tool_calls"


def test_it_streams_each_tool_call_as_an_opening_then_argument_fragments(
    fake: FakeOpenAI, sdk: openai.OpenAI
) -> None:
    fake.script(text="", tool_calls=(WEATHER, TIME))

    deltas = [c.choices[0].delta for c in chunks(sdk)[:-1]]

    # {"city": ..., "unit": ...} comes in three fragments, {} in two.
    assert [d.role for d in deltas] == ["assistant"] + [None] * 6
    pieces = [(d.tool_calls or [])[0] for d in deltas]
    assert [p.index for p in pieces] == [0, 0, 0, 0, 1, 1, 1]
    assert [p.id for p in pieces] == [WEATHER.id, None, None, None, TIME.id, None, None]
    assert [p.type for p in pieces] == ["function", None, None, None, "function", None, None]
    functions = [p.function or ChoiceDeltaToolCallFunction() for p in pieces]
    assert [f.name for f in functions] == [WEATHER.name, None, None, None, TIME.name, None, None]
    arguments = [f.arguments or "" for f in functions]
    assert (arguments[0], arguments[4]) == ("", "")
    assert json.loads("".join(arguments[:4])) == WEATHER.arguments
    assert json.loads("".join(arguments[4:])) == TIME.arguments


@pytest.mark.parametrize(
    "finish",
    [
        lambda client: chat_once(client).choices[0].finish_reason,
        lambda client: chunks(client)[-1].choices[0].finish_reason,
    ],
    ids=["completion", "stream"],
)
@pytest.mark.parametrize(
    ("changes", "reason"),
    [({}, "stop"), ({"stop": "max_tokens"}, "length"), ({"tool_calls": (TIME,)}, "tool_calls")],
)
def test_it_gives_the_finish_reason(
    fake: FakeOpenAI,
    sdk: openai.OpenAI,
    finish: Callable[[openai.OpenAI], str],
    changes: dict[str, Any],
    reason: str,
) -> None:
    fake.script(**changes)

    assert finish(sdk) == reason


def test_it_reports_the_usage_of_a_completion(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    fake.script(text="a b c", prompt_tokens=42, cached_tokens=40, reasoning_tokens=5)

    usage = chat_once(sdk).usage

    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (42, 8, 50)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5


def test_it_sends_the_usage_chunk_when_include_usage_asks(
    fake: FakeOpenAI, sdk: openai.OpenAI
) -> None:
    fake.script(text="a b c", prompt_tokens=9)

    *content, last = chunks(sdk, stream_options={"include_usage": True})

    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 3)
    assert [c.to_dict().get("usage", "absent") for c in content] == [None] * 4


def test_it_sends_no_usage_without_include_usage(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    received = chunks(sdk)

    assert all(c.choices for c in received)
    assert ["usage" in c.to_dict() for c in received] == [False] * len(received)


def test_it_ends_the_stream_with_done(fake: FakeOpenAI) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}

    answer = httpx.post(f"{fake.url}/chat/completions", json=body)

    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.text.endswith("data: [DONE]\n\n")
    events = answer.text.split("\n\n")[:-2]
    assert all(e.startswith('data: {"id":"chatcmpl-') for e in events)


def test_it_drops_the_connection_after_cut_after_events(fake: FakeOpenAI) -> None:
    fake.script(cut_after=3)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    lines: list[str] = []

    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{fake.url}/chat/completions", json=body) as answer,
    ):
        lines.extend(answer.iter_lines())

    assert sum(line.startswith("data: ") for line in lines) == 3
    assert fake.cut_streams == 1


def test_it_lists_no_models(sdk: openai.OpenAI) -> None:
    assert sdk.models.list().data == []


# Responses


@RESPOND_BOTH_WAYS
def test_it_answers_a_response_with_the_scripted_text(
    fake: FakeOpenAI, sdk: openai.OpenAI, respond: Respond
) -> None:
    fake.script(prompt_tokens=20, cached_tokens=16)

    response = respond(sdk)

    assert (response.object, response.status, response.model) == ("response", "completed", MODEL)
    assert response.id.startswith("resp_")
    assert response.output_text == fake._script.text
    assert response.usage is not None
    assert response.usage.input_tokens == 20
    assert response.usage.input_tokens_details.cached_tokens == 16
    assert response.usage.output_tokens == len(fake._script.words)
    assert response.usage.total_tokens == 20 + len(fake._script.words)


@RESPOND_BOTH_WAYS
@pytest.mark.parametrize("calls", [(WEATHER,), (WEATHER, TIME)], ids=["one", "parallel"])
def test_it_returns_function_call_items(
    fake: FakeOpenAI, sdk: openai.OpenAI, respond: Respond, calls: tuple[ToolCall, ...]
) -> None:
    fake.script(text="", tool_calls=calls)

    response = respond(sdk)

    assert function_calls_of(response) == list(calls)
    assert [item.type for item in response.output] == ["function_call"] * len(calls)
    assert all(item.id and item.id.startswith("fc_") for item in response.output)


@RESPOND_BOTH_WAYS
def test_it_puts_the_reasoning_summary_first(
    fake: FakeOpenAI, sdk: openai.OpenAI, respond: Respond
) -> None:
    fake.script(thinking="Paris is in France.", reasoning_tokens=4, tool_calls=(WEATHER,))

    response = respond(sdk)

    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert [(s.type, s.text) for s in reasoning.summary] == [
        ("summary_text", "Paris is in France.")
    ]
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 4


def test_it_streams_the_same_response_it_answers_whole(
    fake: FakeOpenAI, sdk: openai.OpenAI
) -> None:
    fake.script(thinking="Think first.", tool_calls=(WEATHER,), reasoning_tokens=2)

    whole = respond_once(sdk)
    streamed = respond_streamed(sdk)

    assert streamed.output_text == whole.output_text == fake._script.text
    assert streamed.usage == whole.usage
    assert [i.to_dict(exclude_none=True) for i in streamed.output] == [
        i.to_dict(exclude_none=True) for i in whole.output
    ]


def test_it_streams_the_documented_event_sequence(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    fake.script(text="Hi there", thinking="Hmm ok", tool_calls=(TIME,))

    events = response_events(sdk)

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.response.status for e in events[:2]] == ["in_progress", "in_progress"]
    assert [e.output_index for e in of_type(events, "output_item.added")] == [0, 1, 2]
    assert [e.delta for e in of_type(events, "output_text.delta")] == ["Hi", " there"]
    assert [e.delta for e in of_type(events, "reasoning_summary_text.delta")] == ["Hmm", " ok"]
    (done,) = of_type(events, "function_call_arguments.done")
    assert (done.arguments, done.item_id) == ("{}", events[16].item.id)


def test_it_names_each_stream_event_in_its_event_line(fake: FakeOpenAI) -> None:
    answer = httpx.post(
        f"{fake.url}/responses", json={"model": MODEL, "input": "hi", "stream": True}
    )

    events = [e.split("\n") for e in answer.text.strip().split("\n\n")]
    assert all(len(e) == 2 for e in events)
    assert [e[0].removeprefix("event: ") for e in events] == [
        json.loads(e[1].removeprefix("data: "))["type"] for e in events
    ]
    assert "[DONE]" not in answer.text


def test_it_marks_a_truncated_response_incomplete(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    fake.script(stop="max_tokens")

    whole = respond_once(sdk, max_output_tokens=16)
    last = response_events(sdk, max_output_tokens=16)[-1]

    assert whole.status == "incomplete"
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.max_output_tokens == 16
    assert last.type == "response.incomplete"
    assert last.response.to_dict() == {**whole.to_dict(), "created_at": last.response.created_at}


# Embeddings


@pytest.mark.parametrize(
    ("encoding", "on_the_wire"),
    [({}, "base64"), ({"encoding_format": "float"}, "float")],
    ids=["sdk-default", "float"],
)
@pytest.mark.parametrize(
    "texts", [["one text"], ["first", "second text", "the third text"]], ids=["one", "three"]
)
def test_it_embeds_each_input(
    fake: FakeOpenAI,
    sdk: openai.OpenAI,
    texts: list[str],
    encoding: dict[str, Any],
    on_the_wire: str,
) -> None:
    fake.script(embedding_dims=6)

    answer = sdk.embeddings.create(model="text-embedding-3-small", input=texts, **encoding)

    assert fake.requests[0].body["encoding_format"] == on_the_wire
    assert [d.index for d in answer.data] == list(range(len(texts)))
    assert [d.embedding for d in answer.data] == [
        pytest.approx(embedding(t, 6), abs=1e-6) for t in texts
    ]
    assert answer.model == "text-embedding-3-small"
    tokens = sum(len(t) // 4 + 1 for t in texts)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (tokens, tokens)


def test_it_embeds_a_single_string_as_floats(fake: FakeOpenAI) -> None:
    body = {"model": "text-embedding-3-small", "input": "hello world"}

    answer = httpx.post(f"{fake.url}/embeddings", json=body).json()

    assert answer == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": embedding("hello world", 8)}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def test_it_honours_the_requested_dimensions(sdk: openai.OpenAI) -> None:
    answer = sdk.embeddings.create(model="text-embedding-3-large", input="x", dimensions=3)

    assert len(answer.data[0].embedding) == 3


# Errors


CALLS: dict[str, Callable[[openai.OpenAI], Any]] = {
    "chat": chat_once,
    "chat-stream": chunks,
    "responses": respond_once,
    "embeddings": lambda client: client.embeddings.create(model="e", input="x"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_it_fails_with_the_scripted_status(
    fake: FakeOpenAI,
    sdk: openai.OpenAI,
    call: Callable[[openai.OpenAI], Any],
    status: int,
    error: type[openai.APIStatusError],
) -> None:
    fake.script(status=status, headers={"Retry-After": "7"})

    with pytest.raises(error) as caught:
        call(sdk)

    assert caught.value.status_code == status
    assert caught.value.body == {
        "message": "The fake provider failed.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert caught.value.response.headers["retry-after"] == "7"


def test_it_answers_with_the_scripted_error_object(fake: FakeOpenAI, sdk: openai.OpenAI) -> None:
    error = {"message": "max_tokens is too large", "type": "invalid_request_error", "code": "x"}
    fake.script(status=400, error=error)

    with pytest.raises(openai.BadRequestError) as caught:
        chat_once(sdk)

    assert caught.value.code == "x"
    assert caught.value.message.endswith("max_tokens is too large")


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_it_refuses_a_wrong_key(
    fake: FakeOpenAI, sdk: openai.OpenAI, call: Callable[[openai.OpenAI], Any]
) -> None:
    fake.script(expected_key="sk-right")

    with pytest.raises(openai.AuthenticationError) as caught:
        call(sdk)

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


def test_it_accepts_the_expected_key(fake: FakeOpenAI) -> None:
    fake.script(expected_key="sk-right")
    client = openai.OpenAI(base_url=fake.url, api_key="sk-right", max_retries=0)

    assert chat_once(client).choices[0].message.content == fake._script.text


def test_it_answers_the_canned_body_verbatim(fake: FakeOpenAI) -> None:
    fake.script(body=b"not json at all", status=502, content_type="text/plain")

    answer = httpx.post(f"{fake.url}/chat/completions", json={"model": MODEL})

    assert (answer.status_code, answer.text) == (502, "not json at all")
    assert answer.headers["content-type"].startswith("text/plain")


def test_it_refuses_a_body_that_is_not_json(fake: FakeOpenAI) -> None:
    answer = httpx.post(f"{fake.url}/chat/completions", content=b"{not json")

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


# Azure OpenAI


@CHAT_BOTH_WAYS
def test_it_answers_azure_chat_at_the_deployment_url(
    azure: FakeAzureOpenAI, azure_sdk: openai.AzureOpenAI, chat: Chat
) -> None:
    completion = chat(azure_sdk, model=DEPLOYMENT)

    assert completion.choices[0].message.content == azure._script.text
    assert completion.model == DEPLOYMENT
    (seen,) = azure.requests
    assert seen.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert seen.query == {"api-version": API_VERSION}
    assert seen.headers["api-key"] == "k"
    assert "authorization" not in seen.headers


def test_it_answers_azure_embeddings_at_the_deployment_url(
    azure: FakeAzureOpenAI, azure_sdk: openai.AzureOpenAI
) -> None:
    azure.script(embedding_dims=4)

    answer = azure_sdk.embeddings.create(model="my-embedder", input=["a", "b"])

    assert [d.embedding for d in answer.data] == [
        pytest.approx(embedding(t, 4), abs=1e-6) for t in ("a", "b")
    ]
    assert answer.model == "my-embedder"
    assert azure.requests[0].path == "/openai/deployments/my-embedder/embeddings"


def test_it_refuses_a_wrong_azure_key(azure: FakeAzureOpenAI) -> None:
    azure.script(expected_key="right")

    with pytest.raises(openai.AuthenticationError) as caught:
        chat_once(azure_client(azure, key="wrong"), model=DEPLOYMENT)

    assert caught.value.status_code == 401
    assert caught.value.code == "401"
    assert "Access denied due to invalid subscription key" in caught.value.message


def test_it_accepts_the_right_azure_key(azure: FakeAzureOpenAI) -> None:
    azure.script(expected_key="right")

    completion = chat_once(azure_client(azure, key="right"), model=DEPLOYMENT)

    assert completion.choices[0].message.content == azure._script.text


def test_it_answers_404_to_azure_without_an_api_version(azure: FakeAzureOpenAI) -> None:
    answer = httpx.post(
        f"{azure.url}/openai/deployments/{DEPLOYMENT}/chat/completions",
        json={"messages": MESSAGES},
        headers={"api-key": "k"},
    )

    assert answer.status_code == 404
    assert answer.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", f"/openai/deployments/{DEPLOYMENT}/responses"]
)
def test_it_serves_only_deployment_routes_for_azure(azure: FakeAzureOpenAI, path: str) -> None:
    answer = httpx.post(f"{azure.root}{path}?api-version={API_VERSION}", json={"model": MODEL})

    assert answer.status_code == 404
