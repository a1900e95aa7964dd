"""What each provider type receives on the wire, and the features that need both sides:
thinking, count_tokens, embeddings, and what cannot be converted."""

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.factories import AIModelFactory, RouteFactory
from tests.fakes.base import FakeServer, ToolCall
from tests.gateway.matrix import PIXEL, PROVIDERS

MODEL = "team-model"
HELLO = [{"role": "user", "content": "Hello"}]


def route(
    kind: str, fake: FakeServer, upstream_model: str | None = None, model: str = MODEL
) -> Provider:
    case = PROVIDERS[kind]
    provider = case.provider(fake)
    RouteFactory(
        model=AIModelFactory(model_id=model),
        provider=provider,
        upstream_model=upstream_model or case.upstream_model,
    )
    return provider


@pytest.fixture
def reset(fakes: dict[str, FakeServer]) -> Iterator[dict[str, FakeServer]]:
    for fake in fakes.values():
        fake.reset()
    yield fakes
    for fake in fakes.values():
        fake.reset()


@pytest.fixture
def chat(gateway: LiveServer, bob_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)


@pytest.fixture
def claude(gateway: LiveServer, bob_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=bob_key, max_retries=0)


# --- what providers receive ----------------------------------------------------------------


def test_it_calls_azure_deployments_with_api_version_and_api_key(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("azure_openai", reset["azure_openai"])

    chat.chat.completions.create(model=MODEL, messages=HELLO)

    seen = reset["azure_openai"].requests[-1]
    assert seen.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == "azure-secret"
    assert "authorization" not in seen.headers


def test_it_signs_bedrock_requests_with_sigv4(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("bedrock", reset["bedrock"])

    chat.chat.completions.create(model=MODEL, messages=HELLO)
    list(chat.chat.completions.create(model=MODEL, messages=HELLO, stream=True))

    bedrock = reset["bedrock"]
    assert bedrock.signatures_ok == [True, True]  # type: ignore[attr-defined]
    assert [r.path.rsplit("/", 1)[-1] for r in bedrock.requests] == ["converse", "converse-stream"]


def test_it_sends_a_bedrock_session_token(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    provider = route("bedrock", reset["bedrock"])
    provider.set_session_token("temporary-token")
    provider.save()

    chat.chat.completions.create(model=MODEL, messages=HELLO)

    assert reset["bedrock"].session_tokens == ["temporary-token"]  # type: ignore[attr-defined]


def test_it_calls_gemini_with_its_api_key_header(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("gemini", reset["gemini"])

    list(chat.chat.completions.create(model=MODEL, messages=HELLO, stream=True))

    seen = reset["gemini"].requests[-1]
    assert seen.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert seen.query == {"alt": "sse"}
    assert seen.headers["x-goog-api-key"] == "gemini-upstream"


def test_it_sends_anthropic_its_key_and_version_not_the_callers_key(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer], bob_key: str
) -> None:
    route("anthropic", reset["anthropic"])

    claude.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HELLO,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )

    headers = reset["anthropic"].requests[-1].headers
    assert headers["x-api-key"] == "sk-ant-upstream"
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert headers["anthropic-version"]  # the client's, passed through
    assert bob_key not in str(headers)


def test_it_passes_responses_through_to_openai(
    reset: dict[str, FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    route("openai", reset["openai"])
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    response = client.responses.create(model=MODEL, input="Hello", store=True)

    seen = reset["openai"].requests[-1]
    assert seen.path == "/v1/responses"
    assert (seen.body["model"], seen.body["store"]) == ("gpt-4o", True)
    assert response.model == MODEL


def test_it_defaults_anthropics_max_tokens_when_a_chat_client_gives_none(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])

    chat.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, *HELLO]
    )

    body = reset["anthropic"].requests[-1].body
    assert body["max_tokens"] == 4096
    assert body["system"] == [{"type": "text", "text": "Be brief."}]


# --- thinking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "bedrock"])
def test_it_round_trips_thinking_signatures(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer], kind: str
) -> None:
    fake = reset[kind]
    route(kind, fake)
    fake.script(
        text="",
        thinking="The user wants weather.",
        signature="sig-abc",
        tool_calls=(ToolCall("call_1", "get_weather", {"city": "Oslo"}),),
    )
    tools = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    thinking = {"type": "enabled", "budget_tokens": 2048}

    with claude.messages.stream(
        model=MODEL, max_tokens=4096, messages=HELLO, tools=tools, thinking=thinking
    ) as stream:
        first = stream.get_final_message()
    history = [
        *HELLO,
        {
            "role": "assistant",
            "content": [block.model_dump(exclude_none=True) for block in first.content],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "Snow"}],
        },
    ]
    fake.script()
    claude.messages.create(
        model=MODEL, max_tokens=4096, messages=history, tools=tools, thinking=thinking
    )

    assert [(b.type, getattr(b, "signature", None)) for b in first.content] == [
        ("thinking", "sig-abc"),
        ("tool_use", None),
    ]
    sent = str(fake.requests[-1].body)
    assert "sig-abc" in sent and "The user wants weather." in sent


def test_it_turns_a_chat_clients_reasoning_effort_into_anthropic_thinking(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])
    reset["anthropic"].script(thinking="Considering.", signature="sig-x")

    completion = chat.chat.completions.create(
        model=MODEL, messages=HELLO, reasoning_effort="low", temperature=0.5
    )

    body = reset["anthropic"].requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in body  # Anthropic refuses it with thinking
    message = completion.choices[0].message.model_dump()
    assert message["reasoning_content"] == "Considering."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Considering.", "signature": "sig-x"}
    ]


def test_it_shows_gemini_thoughts_to_a_responses_client(
    reset: dict[str, FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    route("gemini", reset["gemini"])
    reset["gemini"].script(thinking="Weighing options.", reasoning_tokens=7)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    with client.responses.stream(
        model=MODEL, input="Hello", reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        response = stream.get_final_response()

    summary = [s.text for item in response.output if item.type == "reasoning" for s in item.summary]
    assert summary == ["Weighing options."]
    assert response.usage.output_tokens_details.reasoning_tokens == 7  # type: ignore[union-attr]
    assert (
        reset["gemini"].requests[-1].body["generationConfig"]["thinkingConfig"]["includeThoughts"]
        is True
    )


# --- what cannot be converted ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "feature"),
    [
        ("anthropic", {"n": 2}, "'n' above 1"),
        ("anthropic", {"logprobs": True}, "'logprobs'"),
        ("anthropic", {"response_format": {"type": "json_object"}}, "JSON output"),
        ("bedrock", {"seed": 7}, "'seed'"),
        (
            "gemini",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/cat.png"},
                            }
                        ],
                    }
                ]
            },
            "images given by URL",
        ),
        (
            "gemini",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_audio",
                                "input_audio": {"data": "AAAA", "format": "wav"},
                            }
                        ],
                    }
                ]
            },
            "audio input",
        ),
    ],
)
def test_it_refuses_what_the_provider_cannot_do_with_a_400_naming_it(
    chat: openai.OpenAI,
    reset: dict[str, FakeServer],
    kind: str,
    extra: dict[str, Any],
    feature: str,
) -> None:
    route(kind, reset[kind])

    with pytest.raises(openai.BadRequestError) as caught:
        chat.chat.completions.create(model=MODEL, **{"messages": HELLO, **extra})

    assert feature in caught.value.message
    assert caught.value.code == "unsupported_feature"
    assert reset[kind].requests == []


def test_it_refuses_builtin_responses_tools_for_other_providers(
    reset: dict[str, FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    route("anthropic", reset["anthropic"])
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="news?", tools=[{"type": "web_search"}])

    assert "web_search" in caught.value.message


def test_it_refuses_previous_response_id(
    reset: dict[str, FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    route("openai", reset["openai"])
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="and then?", previous_response_id="resp_123")

    assert "previous_response_id" in caught.value.message


def test_it_refuses_anthropic_server_tools_for_other_providers(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer]
) -> None:
    route("openai", reset["openai"])

    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=HELLO,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )

    assert "web_search_20250305" in str(caught.value)


# --- errors in each client's shape -------------------------------------------------------------


def test_it_answers_an_anthropic_client_with_anthropic_errors(
    gateway: LiveServer, reset: dict[str, FakeServer]
) -> None:
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="tw-" + "0" * 96, max_retries=0)

    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model=MODEL, max_tokens=10, messages=HELLO)

    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key."},
    }


def test_it_requires_max_tokens_from_anthropic_clients(
    gateway: LiveServer, bob_key: str, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])

    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": bob_key},
        json={"model": MODEL, "messages": HELLO},
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_it_refuses_an_oversize_anthropic_request_in_anthropics_shape(
    gateway: LiveServer, bob_key: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": bob_key},
        content=b"x" * (11 * 1024 * 1024),
    )

    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_it_lists_models_in_anthropics_shape_for_anthropic_clients(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])

    models = claude.models.list()

    assert [m.id for m in models.data] == [MODEL]


# --- count_tokens -------------------------------------------------------------------------


def test_it_asks_anthropic_to_count_tokens(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])

    counted = claude.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "x" * 400}]
    )

    assert counted.input_tokens == 100
    assert reset["anthropic"].requests[-1].path == "/v1/messages/count_tokens"
    assert logged()[0].input_tokens == 0  # counting is free


def test_it_asks_gemini_to_count_tokens(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer]
) -> None:
    route("gemini", reset["gemini"])

    counted = claude.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "y" * 400}]
    )

    assert counted.input_tokens == 100
    assert reset["gemini"].requests[-1].path.endswith(":countTokens")


def test_it_estimates_tokens_for_providers_without_a_counter(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer]
) -> None:
    route("openai", reset["openai"])

    raw = claude.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "z" * 400}]
    )

    assert raw.headers["x-thinkwatch-estimated"] == "true"
    assert 100 <= raw.parse().input_tokens <= 130
    assert reset["openai"].requests == []


# --- embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "upstream_model"),
    [
        ("openai", "text-embedding-3-small"),
        ("openai_compatible", "nomic-embed-text"),
        ("azure_openai", "embeddings-deployment"),
        ("gemini", "gemini-embedding-001"),
        ("bedrock", "amazon.titan-embed-text-v2:0"),
        ("bedrock", "cohere.embed-english-v3"),
    ],
)
def test_it_embeds_texts_on_every_provider_that_can(
    chat: openai.OpenAI, reset: dict[str, FakeServer], kind: str, upstream_model: str
) -> None:
    route(kind, reset[kind], upstream_model=upstream_model)

    result = chat.embeddings.create(
        model=MODEL, input=["first text", "second text"], encoding_format="float"
    )

    assert [e.index for e in result.data] == [0, 1]
    assert len(result.data[0].embedding) == reset[kind].script_now.embedding_dims
    assert result.data[0].embedding != result.data[1].embedding
    assert result.model == MODEL
    assert logged()[0].input_tokens > 0


def test_it_encodes_converted_embeddings_as_base64_when_asked(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("gemini", reset["gemini"], upstream_model="gemini-embedding-001")

    result = chat.embeddings.create(
        model=MODEL, input="one text"
    )  # the SDK asks for base64 and decodes it

    assert result.data[0].embedding == pytest.approx(_gemini_vector("one text"), rel=1e-5)


def _gemini_vector(text: str) -> list[float]:
    from tests.fakes.base import embedding

    return embedding(text, 8)


def test_it_refuses_embeddings_for_anthropic(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("anthropic", reset["anthropic"])

    with pytest.raises(openai.BadRequestError) as caught:
        chat.embeddings.create(model=MODEL, input="text")

    assert "embeddings" in caught.value.message


def test_it_sends_image_data_to_bedrock_in_its_own_shape(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("bedrock", reset["bedrock"])
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]

    chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])

    block = reset["bedrock"].requests[-1].body["messages"][0]["content"][1]
    assert block == {"image": {"format": "png", "source": {"bytes": PIXEL}}}


# --- parameters, in each provider's own terms ------------------------------------------------

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": {"type": "object", "properties": {}},
    }
]


@pytest.mark.parametrize(
    ("kind", "read", "forced", "named"),
    [
        (
            "openai",
            lambda b: b["tool_choice"],
            "required",
            {"type": "function", "function": {"name": "get_weather"}},
        ),
        (
            "anthropic",
            lambda b: b["tool_choice"],
            {"type": "any"},
            {"type": "tool", "name": "get_weather"},
        ),
        (
            "gemini",
            lambda b: b["toolConfig"]["functionCallingConfig"],
            {"mode": "ANY"},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        (
            "bedrock",
            lambda b: b["toolConfig"]["toolChoice"],
            {"any": {}},
            {"tool": {"name": "get_weather"}},
        ),
    ],
)
def test_it_maps_tool_choice(
    claude: anthropic.Anthropic,
    reset: dict[str, FakeServer],
    kind: str,
    read: Any,
    forced: Any,
    named: Any,
) -> None:
    route(kind, reset[kind])

    claude.messages.create(
        model=MODEL, max_tokens=50, messages=HELLO, tools=TOOLS, tool_choice={"type": "any"}
    )
    claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=HELLO,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )

    first, second = (read(r.body) for r in reset[kind].requests)
    assert (first, second) == (forced, named)


@pytest.mark.parametrize(
    ("kind", "read"),
    [
        ("openai", lambda b: (b["stop"], b["temperature"], b["top_p"], b["max_completion_tokens"])),
        (
            "gemini",
            lambda b: tuple(
                b["generationConfig"][k]
                for k in ("stopSequences", "temperature", "topP", "maxOutputTokens")
            ),
        ),
        (
            "bedrock",
            lambda b: tuple(
                b["inferenceConfig"][k]
                for k in ("stopSequences", "temperature", "topP", "maxTokens")
            ),
        ),
    ],
)
def test_it_maps_sampling_parameters(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer], kind: str, read: Any
) -> None:
    route(kind, reset[kind])

    sampling = {"temperature": 0.3, "top_p": 0.9}  # this SDK version has no keywords for them
    claude.messages.create(
        model=MODEL, max_tokens=77, messages=HELLO, stop_sequences=["END"], extra_body=sampling
    )

    assert read(reset[kind].requests[-1].body) == (["END"], 0.3, 0.9, 77)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "bedrock"])
def test_it_maps_a_length_stop_for_chat_clients(
    chat: openai.OpenAI, reset: dict[str, FakeServer], kind: str
) -> None:
    route(kind, reset[kind])
    reset[kind].script(stop="max_tokens")

    completion = chat.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)

    assert completion.choices[0].finish_reason == "length"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "bedrock"])
def test_it_maps_a_length_stop_for_anthropic_clients(
    claude: anthropic.Anthropic, reset: dict[str, FakeServer], kind: str
) -> None:
    route(kind, reset[kind])
    reset[kind].script(stop="max_tokens")

    with claude.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
        message = stream.get_final_message()

    assert message.stop_reason == "max_tokens"


def test_it_asks_gemini_for_json_with_the_clients_schema(
    chat: openai.OpenAI, reset: dict[str, FakeServer]
) -> None:
    route("gemini", reset["gemini"])
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }

    chat.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
    )

    config = reset["gemini"].requests[-1].body["generationConfig"]
    assert (config["responseMimeType"], config["responseJsonSchema"]) == (
        "application/json",
        schema,
    )
