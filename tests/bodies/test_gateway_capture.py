"""Gateway bodies captured through a real gateway and the official OpenAI SDK: redacted
before the record is first written, counted per kind, capped, and absent when off."""

import httpx
import openai

from providers.models import Provider
from tests.bodies.conftest import gateway_logged, segment_bytes
from tests.conftest import LiveServer
from tests.fakes.openai_upstream import FakeOpenAI

PERSONAL = (
    "I am bob@example.com, card 4111 1111 1111 1111, calling from 203.0.113.9; "
    "my key is sk-proj-abcdefghijklmnopqrstuvwx."
)
ANSWER = "Write to carol@example.org or call +1 555 123 4567."


def test_it_stores_redacted_request_and_response_bodies(
    capturing: None, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(text=ANSWER)

    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PERSONAL}]
    )

    (record,) = gateway_logged()
    assert '"model":"gpt-4o-mini"' in record.request_body.replace(" ", "")
    assert "I am [EMAIL], card [CARD], calling from [IP]; my key is [SECRET]." in (
        record.request_body
    )
    assert "Write to [EMAIL] or call [PHONE]." in record.response_body
    assert record.body_redactions == {"card": 1, "email": 2, "ip": 1, "phone": 1, "secret": 1}
    assert (record.body_truncated, record.body_ref, record.body_sha256) == (False, None, None)


def test_it_never_writes_an_unredacted_body_to_the_pipelines_segment(
    capturing: None, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(text=ANSWER)

    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PERSONAL}]
    )
    gateway_logged()

    written = segment_bytes()
    assert b"[EMAIL]" in written
    for value in (b"bob@example.com", b"4111 1111 1111 1111", b"203.0.113.9", b"carol@"):
        assert value not in written


def test_it_captures_nothing_when_capture_is_off(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PERSONAL}]
    )

    (record,) = gateway_logged()
    assert (record.request_body, record.response_body, record.body_redactions) == (None, None, None)
    assert record.body_truncated is None


def test_it_captures_the_events_of_a_streamed_response(
    capturing: None, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(text=ANSWER)

    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if chunk.choices
    )

    (record,) = gateway_logged()
    assert text == ANSWER
    assert record.streamed
    assert record.response_body.startswith("data: {")
    assert record.response_body.rstrip().endswith("data: [DONE]")
    assert record.response_body.count("data: ") == len(ANSWER.split(" ")) + 2


def test_it_redacts_what_a_streamed_response_sends(
    capturing: None, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    # The fake streams word by word: each address arrives whole in one event.
    upstream.script(text="mail carol@example.org now")

    for _ in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        pass

    (record,) = gateway_logged()
    assert "carol@example.org" not in record.response_body
    assert record.body_redactions == {"email": 1}


def test_it_keeps_a_card_number_that_fails_the_luhn_check(
    capturing: None, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "order 4111 1111 1111 1112 shipped"}],
    )

    (record,) = gateway_logged()
    assert "order 4111 1111 1111 1112 shipped" in record.request_body
    assert record.body_redactions == {}


def test_it_truncates_a_body_above_the_cap_and_says_so(
    small_cap: None, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 5000}]
    )

    (record,) = gateway_logged()
    kept, marker = record.request_body.split("\n[TRUNCATED: ")
    assert len(kept.encode()) == 1024
    assert marker.endswith(" bytes in all]")
    assert record.body_truncated is True


def test_it_redacts_a_large_body_on_the_worker_thread(
    roomy_cap: None, client: openai.OpenAI
) -> None:
    content = "lorem ipsum " * 4000 + "reach dave@example.com"

    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
    )

    (record,) = gateway_logged()
    assert record.request_body.endswith('reach [EMAIL]"}]}')
    assert record.body_redactions == {"email": 1}
    assert record.body_truncated is False


def test_it_captures_the_error_sent_when_the_gateway_refuses(
    capturing: None, gateway: LiveServer, openai_provider: Provider, bob_key: str
) -> None:
    body = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "eve@x.io"}]}'

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {bob_key}"},
    )

    (record,) = gateway_logged()
    assert response.status_code == record.status_code == 404
    assert record.request_body == body.decode().replace("eve@x.io", "[EMAIL]")
    assert record.response_body == response.text
