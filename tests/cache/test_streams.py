"""Cached answers in each ingress format: a repeat is the first answer's bytes exactly, a
stream included; an answer that did not end cleanly is not kept."""

from typing import Any

import httpx
import pytest

from tests.cache.conftest import ANSWERS, MODEL, QUESTION, policy, stored
from tests.conftest import LiveServer, logged
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.usefixtures("priced")

USER = [{"role": "user", "content": QUESTION}]
ANTHROPIC = {"anthropic-version": "2023-06-01"}

# (path, body, headers) of the question in each ingress format.
FORMATS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "openai_chat": ("/v1/chat/completions", {"model": MODEL, "messages": USER}, {}),
    "anthropic_messages": (
        "/v1/messages",
        {"model": MODEL, "max_tokens": 100, "messages": USER},
        ANTHROPIC,
    ),
    "openai_responses": ("/v1/responses", {"model": MODEL, "input": QUESTION}, {}),
}
STREAM_OPTIONS: dict[str, dict[str, Any]] = {
    "openai_chat": {"stream": True, "stream_options": {"include_usage": True}},
    "anthropic_messages": {"stream": True},
    "openai_responses": {"stream": True},
}


def send(gateway: LiveServer, key: str, ingress: str, stream: bool = False) -> httpx.Response:
    path, body, headers = FORMATS[ingress]
    if stream:
        body = {**body, **STREAM_OPTIONS[ingress]}
    return httpx.post(
        f"{gateway.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


@pytest.mark.parametrize("ingress", list(FORMATS))
def test_a_repeated_stream_is_the_first_streams_bytes_exactly(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, ingress: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    first = send(gateway, bob_red_key, ingress, stream=True)
    stored()
    again = send(gateway, bob_red_key, ingress, stream=True)

    assert b"first" in first.content
    assert again.content == first.content
    assert again.headers["x-cache"] == "hit"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert first.headers["x-cache"] == "miss"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("ingress", list(FORMATS))
def test_a_repeated_answer_is_the_first_answers_bytes_exactly(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, ingress: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    first = send(gateway, bob_red_key, ingress)
    stored()
    again = send(gateway, bob_red_key, ingress)

    assert again.content == first.content
    assert again.headers["x-cache"] == "hit"
    assert len(upstream.requests) == 1


def test_a_stream_hit_is_logged_as_a_stream_at_no_cost(
    gateway: LiveServer, bob_red_key: str
) -> None:
    policy()

    send(gateway, bob_red_key, "openai_chat", stream=True)
    stored()
    send(gateway, bob_red_key, "openai_chat", stream=True)

    miss, hit = logged()
    assert (miss.streamed, miss.cost_usd > 0, miss.cache) == (True, True, {"status": "miss"})
    assert (hit.streamed, hit.status_code, hit.cost_usd) == (True, 200, 0)
    assert hit.cache["status"] == "hit"
    assert hit.cache["saved_usd"] == float(miss.cost_usd)


def test_the_same_question_in_another_format_is_not_answered_from_the_cache(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()

    send(gateway, bob_red_key, "openai_chat")
    stored()
    other = send(gateway, bob_red_key, "openai_responses")

    assert other.headers["x-cache"] == "miss"
    assert len(upstream.requests) == 2


def test_a_stream_and_an_answer_to_the_same_question_are_kept_apart(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()

    send(gateway, bob_red_key, "openai_chat")
    stored()
    streamed = send(gateway, bob_red_key, "openai_chat", stream=True)

    assert streamed.headers["x-cache"] == "miss"
    assert streamed.headers["content-type"].startswith("text/event-stream")


def test_anthropic_beta_headers_are_part_of_the_key(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    path, body, headers = FORMATS["anthropic_messages"]

    send(gateway, bob_red_key, "anthropic_messages")
    stored()
    beta = httpx.post(
        f"{gateway.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {bob_red_key}", "anthropic-beta": "x-1", **headers},
    )

    assert beta.headers["x-cache"] == "miss"


def test_a_stream_the_provider_cut_short_is_not_kept(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    upstream.script(cut_after=2)

    cut = send(gateway, bob_red_key, "openai_chat", stream=True)
    stored()
    upstream.script()
    retried = send(gateway, bob_red_key, "openai_chat", stream=True)
    stored()
    again = send(gateway, bob_red_key, "openai_chat", stream=True)

    assert b"error" in cut.content
    assert [retried.headers["x-cache"], again.headers["x-cache"]] == ["miss", "hit"]
    assert len(upstream.requests) == 2


def test_a_stream_its_client_left_is_not_kept(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    upstream.script(chunk_delay=0.05)
    path, body, _ = FORMATS["openai_chat"]

    with httpx.stream(
        "POST",
        f"{gateway.url}{path}",
        json={**body, **STREAM_OPTIONS["openai_chat"]},
        headers={"Authorization": f"Bearer {bob_red_key}"},
    ) as response:
        next(response.iter_lines())
    stored()
    again = send(gateway, bob_red_key, "openai_chat", stream=True)

    assert again.headers["x-cache"] == "miss"
    assert len(upstream.requests) == 2


def test_a_stream_larger_than_the_entry_limit_is_not_kept(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, settings: Any
) -> None:
    settings.CACHE_MAX_ENTRY_BYTES = 2000
    upstream.script(text="word " * 100)
    policy()

    send(gateway, bob_red_key, "openai_chat", stream=True)
    stored()
    again = send(gateway, bob_red_key, "openai_chat", stream=True)

    assert again.headers["x-cache"] == "miss"
