"""Streams: pass-through, a provider failing mid-stream, a client leaving mid-stream."""

import time

import httpx
import openai
import pytest

from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Say hello."}]
STREAM_BODY = (
    b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
)


def test_it_passes_stream_events_through_byte_for_byte(
    gateway: LiveServer, openai_provider: Provider, bob_key: str, upstream: FakeOpenAI
) -> None:
    body = (
        b'{"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {bob_key}"},
    ) as response:
        received = response.read()

    expected = httpx.post(f"{upstream.url}/chat/completions", content=body).content
    assert _without_timestamps(received) == _without_timestamps(expected)


def _without_timestamps(stream: bytes) -> bytes:
    import re

    return re.sub(rb'"created":\d+', b'"created":0', stream)


def test_it_sends_one_error_event_when_the_provider_drops_mid_stream(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(cut_after=3)

    with pytest.raises(openai.APIError) as caught:
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            pass

    assert "provider" in str(caught.value.message)
    (record,) = logged()
    assert (record.status_code, record.error_code) == (502, "upstream_connection_error")


def test_it_logs_a_client_that_leaves_mid_stream(
    gateway: LiveServer, openai_provider: Provider, bob_key: str, upstream: FakeOpenAI
) -> None:
    upstream.script(text=" ".join(["word"] * 200), chunk_delay=0.02)

    received = read_then_leave(gateway, bob_key, lines=6)

    assert any(line.startswith("data: ") for line in received)
    record = _first_record_within(seconds=5)
    assert record.disconnected
    assert record.status_code == 499
    assert 0 < record.output_tokens < 200
    assert record.usage_estimated


def test_it_stops_reading_from_the_provider_when_the_client_leaves(
    gateway: LiveServer, openai_provider: Provider, bob_key: str, upstream: FakeOpenAI
) -> None:
    upstream.script(text=" ".join(["word"] * 500), chunk_delay=0.01)

    read_then_leave(gateway, bob_key, lines=1)

    record = _first_record_within(seconds=2)
    assert record.latency_ms < 2000  # the full stream would take 5 s


def test_it_logs_a_client_that_leaves_before_the_first_event(
    gateway: LiveServer, openai_provider: Provider, bob_key: str, upstream: FakeOpenAI
) -> None:
    upstream.script(first_event_delay=1)

    # The response starts with the provider's first bytes (until then the gateway may
    # still fail over): a client that stops waiting before them leaves with nothing.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            content=STREAM_BODY,
            headers={"Authorization": f"Bearer {bob_key}"},
            timeout=httpx.Timeout(5, read=0.3),
        )

    record = _first_record_within(seconds=3)
    assert (record.status_code, record.disconnected, record.output_tokens) == (499, True, 0)
    assert record.latency_ms < 1000


def read_then_leave(gateway: LiveServer, key: str, lines: int) -> list[str]:
    """Start a stream, read a few lines of it, and close the connection."""
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=STREAM_BODY,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        received = response.iter_lines()
        return [next(received) for _ in range(lines)]


def _first_record_within(seconds: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records = logged()
        if records:
            return records[0]
        time.sleep(0.05)
    raise AssertionError("no log record was written")


def test_it_counts_usage_and_time_to_first_token_for_a_stream(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(prompt_tokens=30)

    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    (record,) = logged()
    assert (record.input_tokens, record.output_tokens, record.streamed) == (
        30,
        len(upstream._script.words),
        True,
    )
    assert 0 < record.ttft_ms <= record.latency_ms
    assert not record.usage_estimated
