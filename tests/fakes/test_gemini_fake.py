"""The fake Gemini API, checked against Google's own `google-genai` SDK: what the SDK sends
reaches the fake, and what the fake answers the SDK reads back as Gemini's."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.base import ToolCall, embedding
from tests.fakes.gemini_upstream import FakeGemini

MODEL = "gemini-2.5-flash"
WEATHER = ToolCall("call_weather_1", "get_weather", {"city": "Paris", "unit": "celsius"})
TIME = ToolCall("call_time_2", "get_time", {"timezone": "Europe/Paris"})


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    assert isinstance(server, FakeGemini)
    yield server
    server.stop()


@pytest.fixture
def fake(gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    gemini_server.reset()
    yield gemini_server
    gemini_server.reset()


@pytest.fixture
def gemini(fake: FakeGemini) -> genai.Client:
    return make_client(fake)


def make_client(fake: FakeGemini, key: str = "k", version: str = "v1beta") -> genai.Client:
    """Google's client pointed at the fake (the 3.x SDK would otherwise ask for v1)."""
    options = types.HttpOptions(base_url=fake.url, api_version=version)
    return genai.Client(api_key=key, http_options=options)


def generate_once(client: genai.Client, **kwargs: Any) -> list[types.GenerateContentResponse]:
    return [client.models.generate_content(model=MODEL, **kwargs)]


def generate_streamed(client: genai.Client, **kwargs: Any) -> list[types.GenerateContentResponse]:
    return list(client.models.generate_content_stream(model=MODEL, **kwargs))


BOTH_WAYS = pytest.mark.parametrize(
    "generate", [generate_once, generate_streamed], ids=["generateContent", "stream"]
)
Generate = Callable[..., list[types.GenerateContentResponse]]


def raw_stream(fake: FakeGemini, query: str) -> bytes:
    """The stream's bytes as they come off the wire, to check Gemini's framing."""
    response = httpx.post(
        f"{fake.root}/v1beta/models/{MODEL}:streamGenerateContent{query}",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": "k"},
    )
    return response.content


def post(
    fake: FakeGemini, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A bare JSON request, for what the SDK does not send."""
    response = httpx.post(f"{fake.root}{path}", json=body, headers=headers)
    return response.status_code, response.json()


def test_it_answers_generate_content_with_the_scripted_text(
    fake: FakeGemini, gemini: genai.Client
) -> None:
    fake.script(text="Bonjour tout le monde", prompt_tokens=5)

    response = gemini.models.generate_content(model=MODEL, contents="Say hello in French")

    assert response.text == "Bonjour tout le monde"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.candidates[0].content is not None
    assert response.candidates[0].content.role == "model"
    assert response.model_version == MODEL
    assert response.response_id
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 5
    assert response.usage_metadata.candidates_token_count == 4
    assert response.usage_metadata.total_token_count == 9
    assert response.usage_metadata.thoughts_token_count is None
    assert response.usage_metadata.cached_content_token_count is None


@pytest.mark.parametrize(
    ("stop", "reason"),
    [("end", types.FinishReason.STOP), ("max_tokens", types.FinishReason.MAX_TOKENS)],
)
def test_it_reports_the_finish_reason(
    fake: FakeGemini, gemini: genai.Client, stop: str, reason: types.FinishReason
) -> None:
    fake.script(stop=stop)

    response = gemini.models.generate_content(model=MODEL, contents="hi")

    assert response.candidates is not None
    assert response.candidates[0].finish_reason == reason


def test_it_streams_the_same_text_word_by_word(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.script(text="one two three four", prompt_tokens=9, cached_tokens=4, reasoning_tokens=3)

    whole = gemini.models.generate_content(model=MODEL, contents="count").text
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="count"))

    assert [c.text for c in chunks] == ["one", " two", " three", " four"]
    assert "".join(c.text or "" for c in chunks) == whole
    assert [c.candidates[0].finish_reason for c in chunks] == [
        None,
        None,
        None,
        types.FinishReason.STOP,
    ]
    last = chunks[-1].usage_metadata
    assert last is not None
    assert last.prompt_token_count == 9
    assert last.candidates_token_count == 4
    assert last.thoughts_token_count == 3
    assert last.cached_content_token_count == 4
    assert last.total_token_count == 16
    assert fake.requests[-1].query == {"alt": "sse"}
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:streamGenerateContent"


def test_it_reports_running_usage_on_every_stream_chunk(
    fake: FakeGemini, gemini: genai.Client
) -> None:
    fake.script(text="a b c", prompt_tokens=7)

    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="hi"))

    assert [c.usage_metadata.prompt_token_count for c in chunks] == [7, 7, 7]
    assert [c.usage_metadata.candidates_token_count for c in chunks] == [1, 2, 3]
    assert [c.usage_metadata.total_token_count for c in chunks] == [8, 9, 10]


def test_it_frames_server_sent_events_with_crlf(fake: FakeGemini) -> None:
    fake.script(text="x y")

    raw = raw_stream(fake, "?alt=sse")

    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b""
    assert [e[:6] for e in events[:-1]] == [b"data: ", b"data: "]
    assert [json.loads(e[6:])["candidates"][0]["content"]["parts"] for e in events[:-1]] == [
        [{"text": "x"}],
        [{"text": " y"}],
    ]


def test_it_streams_a_json_array_without_alt_sse(fake: FakeGemini) -> None:
    fake.script(text="x y z")

    array = json.loads(raw_stream(fake, ""))

    assert [r["candidates"][0]["content"]["parts"][0]["text"] for r in array] == ["x", " y", " z"]
    assert array[-1]["candidates"][0]["finishReason"] == "STOP"


def test_it_cuts_the_stream_after_the_scripted_events(
    fake: FakeGemini, gemini: genai.Client
) -> None:
    fake.script(text="a b c d", cut_after=2)
    received: list[str | None] = []

    with pytest.raises(httpx2.RemoteProtocolError):  # the SDK's own transport
        received.extend(
            c.text for c in gemini.models.generate_content_stream(model=MODEL, contents="hi")
        )

    assert received == ["a", " b"]
    assert fake.cut_streams == 1


@BOTH_WAYS
def test_it_returns_one_function_call(
    fake: FakeGemini, gemini: genai.Client, generate: Generate
) -> None:
    fake.script(text="", tool_calls=(WEATHER,))

    response = generate(gemini, contents="weather?")[-1]

    assert response.function_calls == [
        types.FunctionCall(id="call_weather_1", name="get_weather", args=WEATHER.arguments)
    ]
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


@BOTH_WAYS
def test_it_returns_parallel_function_calls_in_one_candidate(
    fake: FakeGemini, gemini: genai.Client, generate: Generate
) -> None:
    fake.script(text="", tool_calls=(WEATHER, TIME), signature="c2lnbmF0dXJl")

    responses = generate(gemini, contents="weather and time?")

    assert len(responses) == 1  # a stream sends the calls together, in one chunk
    parts = responses[0].candidates[0].content.parts
    assert [(p.function_call.id, p.function_call.name) for p in parts] == [
        ("call_weather_1", "get_weather"),
        ("call_time_2", "get_time"),
    ]
    assert [p.function_call.args for p in parts] == [WEATHER.arguments, TIME.arguments]
    assert [p.thought_signature for p in parts] == [b"signature", None]


def test_it_counts_tool_calls_in_the_usage(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.script(text="", tool_calls=(WEATHER, TIME), prompt_tokens=20)

    usage = gemini.models.generate_content(model=MODEL, contents="hi").usage_metadata

    assert usage is not None
    assert (usage.candidates_token_count, usage.total_token_count) == (14, 34)


@pytest.mark.parametrize(
    ("generate", "expected"),
    [
        (generate_once, [(True, "2 plus 2 is 4."), (None, "The answer is 4.")]),
        (
            generate_streamed,
            [
                (True, "2 plus 2 is 4."),
                (None, "The"),
                (None, " answer"),
                (None, " is"),
                (None, " 4."),
            ],
        ),
    ],
    ids=["generateContent", "stream"],
)
def test_it_marks_the_thinking_part_as_a_thought(
    fake: FakeGemini, gemini: genai.Client, generate: Generate, expected: list[tuple[Any, str]]
) -> None:
    fake.script(
        text="The answer is 4.", thinking="2 plus 2 is 4.", reasoning_tokens=6, signature="c2ln"
    )
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True)
    )

    responses = generate(gemini, contents="2+2?", config=config)

    parts = [part for r in responses for part in r.candidates[0].content.parts]
    assert [(p.thought, p.text) for p in parts] == expected
    assert [p.thought_signature for p in parts][-1] == b"sig"  # on the response's last part
    assert responses[-1].text == expected[-1][1]  # .text leaves the thought out
    usage = responses[-1].usage_metadata
    assert usage is not None
    assert (usage.thoughts_token_count, usage.candidates_token_count) == (6, 4)
    assert usage.total_token_count == 11 + 4 + 6
    # (the SDK names the thinkingConfig's own fields in snake_case, which the API accepts)
    assert "thinkingConfig" in fake.requests[-1].body["generationConfig"]


def test_it_embeds_several_texts(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.script(embedding_dims=5)
    texts = ["first text", "second text", "third"]

    result = gemini.models.embed_content(model="gemini-embedding-001", contents=texts)

    assert result.embeddings is not None
    assert [e.values for e in result.embeddings] == [embedding(t, 5) for t in texts]
    seen = fake.requests[-1]
    assert seen.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [r["content"]["parts"] for r in seen.body["requests"]] == [[{"text": t}] for t in texts]
    assert {r["model"] for r in seen.body["requests"]} == {"models/gemini-embedding-001"}


def test_it_honours_the_requested_output_dimensionality(
    fake: FakeGemini, gemini: genai.Client
) -> None:
    result = gemini.models.embed_content(
        model="gemini-embedding-001",
        contents="short",
        config=types.EmbedContentConfig(output_dimensionality=3),
    )

    assert result.embeddings is not None
    assert [e.values for e in result.embeddings] == [embedding("short", 3)]


def test_it_answers_embed_content_for_one_text(fake: FakeGemini) -> None:
    body = {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "alone"}]}}

    answer = post(fake, "/v1beta/models/gemini-embedding-001:embedContent", body)

    assert answer == (200, {"embedding": {"values": embedding("alone", 8)}})


def test_it_counts_tokens_from_the_characters(fake: FakeGemini, gemini: genai.Client) -> None:
    result = gemini.models.count_tokens(model=MODEL, contents="a" * 40)
    tiny = gemini.models.count_tokens(model=MODEL, contents="a")

    assert (result.total_tokens, tiny.total_tokens) == (10, 1)
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:countTokens"


@pytest.mark.parametrize(
    ("status", "name", "error_class"),
    [
        (400, "INVALID_ARGUMENT", errors.ClientError),
        (429, "RESOURCE_EXHAUSTED", errors.ClientError),
        (500, "INTERNAL", errors.ServerError),
        (503, "UNAVAILABLE", errors.ServerError),
    ],
)
@BOTH_WAYS
def test_it_fails_with_the_scripted_status(
    fake: FakeGemini,
    gemini: genai.Client,
    status: int,
    name: str,
    error_class: type[errors.APIError],
    generate: Generate,
) -> None:
    fake.script(status=status)

    with pytest.raises(error_class) as failure:
        generate(gemini, contents="hi")

    assert (failure.value.code, failure.value.status) == (status, name)
    assert failure.value.message


def test_it_answers_the_scripted_error_body(fake: FakeGemini, gemini: genai.Client) -> None:
    error = {"code": 429, "message": "Quota exceeded for metric.", "status": "RESOURCE_EXHAUSTED"}
    fake.script(status=429, error=error, headers={"Retry-After": "7"})

    with pytest.raises(errors.ClientError) as failure:
        gemini.models.generate_content(model=MODEL, contents="hi")

    assert failure.value.message == "Quota exceeded for metric."
    assert failure.value.response.headers["retry-after"] == "7"


def test_it_refuses_a_wrong_api_key(fake: FakeGemini) -> None:
    fake.script(expected_key="right")
    client = make_client(fake, key="wrong")

    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(model=MODEL, contents="hi")

    assert (failure.value.code, failure.value.status) == (400, "INVALID_ARGUMENT")
    assert failure.value.message == "API key not valid. Please pass a valid API key."


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {}, 400),
        ("", {"x-goog-api-key": "wrong"}, 400),
        ("?key=wrong", {}, 400),
        ("?key=right", {}, 200),
        ("", {"x-goog-api-key": "right"}, 200),
    ],
    ids=["missing", "wrong-header", "wrong-query", "right-query", "right-header"],
)
def test_it_checks_the_key_in_the_header_or_the_query(
    fake: FakeGemini, query: str, headers: dict[str, str], status: int
) -> None:
    fake.script(expected_key="right")

    assert post(fake, f"/v1beta/models/{MODEL}:countTokens{query}", {}, headers)[0] == status


def test_it_accepts_the_expected_api_key(fake: FakeGemini) -> None:
    fake.script(expected_key="right", text="welcome")
    client = make_client(fake, key="right")

    assert client.models.generate_content(model=MODEL, contents="hi").text == "welcome"


def test_it_answers_the_canned_body(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.script(status=502, body=b'{"error": {"code": 502, "message": "Bad gateway"}}')

    with pytest.raises(errors.ServerError) as failure:
        gemini.models.generate_content(model=MODEL, contents="hi")

    assert (failure.value.code, failure.value.message) == (502, "Bad gateway")


def test_it_records_the_key_and_the_contents(fake: FakeGemini, gemini: genai.Client) -> None:
    gemini.models.generate_content(
        model=MODEL,
        contents=[
            types.Content(role="user", parts=[types.Part(text="What is the weather?")]),
            types.Content(
                role="model",
                parts=[
                    types.Part(
                        function_call=types.FunctionCall(
                            id="call_weather_1", name="get_weather", args={"city": "Paris"}
                        )
                    )
                ],
            ),
            types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id="call_weather_1", name="get_weather", response={"temp": 21}
                        )
                    )
                ],
            ),
        ],
        config=types.GenerateContentConfig(system_instruction="Be brief."),
    )

    seen = fake.requests[-1]
    assert seen.method == "POST"
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == "k"
    assert seen.body["contents"] == [
        {"role": "user", "parts": [{"text": "What is the weather?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "id": "call_weather_1",
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_weather_1",
                        "name": "get_weather",
                        "response": {"temp": 21},
                    }
                }
            ],
        },
    ]
    assert seen.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]


def test_it_answers_an_unknown_method_with_not_found(fake: FakeGemini) -> None:
    status, answer = post(fake, f"/v1beta/models/{MODEL}:predict", {})

    assert (status, answer["error"]["code"], answer["error"]["status"]) == (
        404,
        404,
        "NOT_FOUND",
    )


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_it_serves_both_api_versions(fake: FakeGemini, version: str) -> None:
    fake.script(text="versioned")

    client = make_client(fake, version=version)

    answer = client.models.generate_content(model=MODEL, contents="hi")

    assert answer.text == "versioned"
    assert fake.requests[-1].path == f"/{version}/models/{MODEL}:generateContent"
