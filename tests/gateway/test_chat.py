import openai
import pytest

from tests.conftest import UPSTREAM_SECRET, logged
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_it_answers_a_chat_completion(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.choices[0].message.content == upstream._script.text
    assert completion.model == "gpt-4o-mini"


def test_it_reports_the_providers_usage(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.script(prompt_tokens=42, cached_tokens=40)

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 42
    assert completion.usage.prompt_tokens_details.cached_tokens == 40  # type: ignore[union-attr]


def test_it_sends_the_provider_secret_and_not_the_callers_key(
    client: openai.OpenAI, upstream: FakeOpenAI, bob_key: str
) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    headers = upstream.requests[0].headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert bob_key not in str(headers)


def test_it_streams_the_completion(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == upstream._script.text


def test_it_asks_upstream_for_stream_usage_and_hides_the_extra_chunk(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)
    assert [r.output_tokens for r in logged()] == [len(upstream._script.words)]


def test_it_passes_the_usage_chunk_when_the_client_asked_for_it(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(prompt_tokens=7)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 7


def test_it_logs_one_record_per_request_with_tokens_and_cost(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(prompt_tokens=1000)

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    (record,) = logged()
    assert (record.model, record.provider, record.status_code) == ("gpt-4o-mini", "openai", 200)
    assert (record.input_tokens, record.output_tokens) == (1000, len(upstream._script.words))
    assert record.ingress == "openai_chat"


@pytest.mark.parametrize("stream", [False, True])
def test_it_returns_a_request_id(client: openai.OpenAI, stream: bool) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=stream
    )

    assert len(response.headers["x-request-id"]) == 32


def test_it_keeps_the_callers_request_id(client: openai.OpenAI) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "trace-123"}
    )

    assert response.headers["x-request-id"] == "trace-123"
    assert logged()[0].request_id == "trace-123"
