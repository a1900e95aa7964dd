"""Output rules on the live gateway: a `block` rule withholds a whole answer (400 in the
client's format, the provider's usage still billed) and stops a stream before the matched
text reaches the client, whatever the ingress format, the provider and the way through;
`warn` and `log` pass the answer and say so; the rules see the answer as the client gets
it (after personal data is restored)."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.models import CachePolicy, GuardrailRule
from tests.cache.conftest import forget_cached_answers
from tests.conftest import LiveServer, logged
from tests.fakes.base import FakeServer
from tests.guardrails.test_redaction import EMAIL, MODEL, QUESTION, WAYS, route

__all__ = ["route"]  # the fixture, shared with the redaction tests

SECRET = "AKIAIOSFODNN7EXAMPLE"
# The key arrives cut across stream events, so no single event holds it.
PIECES = ("Your access key is AKIAIO", "SFODNN7EX", "AMPLE, keep it safe.")
ANSWER = "".join(PIECES)

PATHS = {
    "openai_chat": "/v1/chat/completions",
    "anthropic_messages": "/v1/messages",
    "openai_responses": "/v1/responses",
}


def body(ingress: str, stream: bool) -> dict[str, Any]:
    if ingress == "openai_responses":
        return {"model": MODEL, "input": QUESTION, "stream": stream}
    asked: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": stream,
    }
    if ingress == "anthropic_messages":
        asked["max_tokens"] = 200
    return asked


def post(gateway: LiveServer, key: str, ingress: str, stream: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if ingress == "anthropic_messages":
        headers["anthropic-version"] = "2023-06-01"
    return httpx.post(
        f"{gateway.url}{PATHS[ingress]}", json=body(ingress, stream), headers=headers, timeout=30
    )


def keys_rule(action: str = "block", applies: str = "output") -> GuardrailRule:
    return GuardrailRule.objects.create(
        name="no keys out", kind="detector", patterns=["secrets"], applies=applies, action=action
    )


def output_hits(record: Any) -> list[dict[str, Any]]:
    return [hit for hit in record.guardrails or () if hit.get("direction") == "output"]


@pytest.mark.parametrize(("ingress", "provider"), WAYS[:5])
def test_a_block_rule_withholds_a_whole_answer_in_the_clients_format(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    provider: str,
) -> None:
    keys_rule()
    fake = route(provider)
    fake.script(text=ANSWER)

    response = post(gateway, bob_key, ingress)

    assert response.status_code == 400
    assert SECRET not in response.text
    error = response.json()["error"]
    assert "no keys out" in error["message"]
    [record] = logged()
    assert (record.status_code, record.error_code) == (400, "guardrail_blocked")
    assert record.output_tokens > 0 and record.cost_usd > 0  # the provider billed it
    [hit] = output_hits(record)
    assert (hit["rule"], hit["action"], hit["count"]) == ("no keys out", "block", 1)
    assert SECRET not in str(record.guardrails)


@pytest.mark.parametrize(("ingress", "provider"), WAYS)
def test_a_block_rule_stops_a_stream_before_the_secret_reaches_the_client(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    provider: str,
) -> None:
    keys_rule()
    fake = route(provider)
    # Each piece in a read of its own: what a rule has not yet seen could leave at once.
    fake.script(text=ANSWER, pieces=PIECES, chunk_delay=0.05)

    response = post(gateway, bob_key, ingress, stream=True)

    assert response.status_code == 200  # the stream had begun
    assert "AKIAIO" not in response.text and "SFODNN" not in response.text
    assert "error" in response.text  # the format's error event
    assert "withheld by the content policy rule 'no keys out'" in response.text
    [record] = logged()
    assert record.error_code == "guardrail_blocked"
    assert [hit["action"] for hit in output_hits(record)] == ["block"]


@pytest.mark.parametrize("ingress", list(PATHS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_warn_and_log_rules_pass_the_answer_and_the_record_says_so(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    stream: bool,
) -> None:
    keys_rule("warn")
    GuardrailRule.objects.create(
        name="mentions safety",
        kind="phrases",
        patterns=["keep it safe"],
        applies="both",
        action="log",
    )
    fake = route("openai" if ingress != "anthropic_messages" else "anthropic")
    fake.script(text=ANSWER, pieces=PIECES)

    response = post(gateway, bob_key, ingress, stream=stream)

    assert response.status_code == 200
    if stream:
        # Each event carries its own piece of the text (JSON-escaped, in the format's shape).
        assert all(piece in response.text for piece in PIECES)
        assert "x-thinkwatch-guardrail" not in response.headers  # the headers were gone
    else:
        assert SECRET in response.text
        assert response.headers["x-thinkwatch-guardrail"] == "warn; rules=no keys out"
    [record] = logged()
    assert record.status_code == 200 and record.error_code == ""
    found = {hit["rule"]: (hit["action"], hit["count"]) for hit in output_hits(record)}
    assert found == {"no keys out": ("warn", 1), "mentions safety": ("log", 1)}


def test_an_input_only_rule_does_not_look_at_the_answer(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    keys_rule(applies="input")
    route("openai").script(text=ANSWER)

    response = post(gateway, bob_key, "openai_chat")

    assert response.status_code == 200
    assert SECRET in response.text
    [record] = logged()
    assert record.guardrails is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_output_rules_see_the_restored_answer(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str, stream: bool
) -> None:
    """The provider only ever sees a placeholder; the rule on the answer sees the value the
    client would get, and withholds it."""
    GuardrailRule.objects.create(name="personal data", preset="pii", action="redact")
    GuardrailRule.objects.create(
        name="no address of alice",
        kind="regex",
        patterns=[r"alice@example\.com"],
        applies="output",
        action="block",
    )
    fake = route("openai")
    fake.script(text="Sent to [EMAIL_1] as asked.", pieces=("Sent to [EMA", "IL_1] as asked."))

    response = post(gateway, bob_key, "openai_chat", stream=stream)

    assert EMAIL not in response.text
    assert "no address of alice" in response.text
    assert EMAIL.encode() not in fake.requests[0].raw
    [record] = logged()
    assert record.error_code == "guardrail_blocked"
    assert record.redactions == {"EMAIL": 1}


def test_withheld_streams_do_not_open_the_routes_breaker(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    """A stream stopped by the policy is not the provider's failure: after more withheld
    streams than the breaker's threshold (5), the route still serves."""
    rule = keys_rule()
    fake = route("openai")
    fake.script(text=ANSWER, pieces=PIECES)
    for _ in range(7):
        assert "guardrail_blocked" in post(gateway, bob_key, "openai_chat", stream=True).text

    rule.delete()
    fake.script(text="All clear.")
    response = post(gateway, bob_key, "openai_chat")

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "All clear."


@pytest.fixture
def no_cached_answers() -> Iterator[None]:
    forget_cached_answers()
    yield
    forget_cached_answers()


@pytest.mark.usefixtures("no_cached_answers")
def test_a_cached_answer_is_checked_again_when_it_is_replayed(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    """A rule added after an answer was stored withholds the stored answer too."""
    CachePolicy.objects.create(name="everything", ttl_seconds=600)
    fake = route("openai")
    fake.script(text=ANSWER)
    first = post(gateway, bob_key, "openai_chat")
    assert (first.status_code, first.headers["x-cache"]) == (200, "miss")
    deadline = time.monotonic() + 5  # the answer is stored off the request's path
    while post(gateway, bob_key, "openai_chat").headers.get("x-cache") != "hit":
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)

    keys_rule()
    replayed = post(gateway, bob_key, "openai_chat")

    assert replayed.status_code == 400
    assert SECRET not in replayed.text
    assert "no keys out" in replayed.json()["error"]["message"]
    record = logged()[-1]
    assert record.cache is not None and record.cache["status"] == "hit"
    assert record.error_code == "guardrail_blocked"
    assert len(fake.requests) == 1
