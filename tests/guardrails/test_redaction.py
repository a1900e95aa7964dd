"""Redaction before egress on the live gateway: the provider never receives a detected
value, whatever the ingress format, the provider or the way through (passed through or
converted, streamed or not), and the client gets the values back, even when a placeholder
arrives split across stream events."""

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.forms.models import model_to_dict

from accounts.models import Membership
from gateway.models import GuardrailRule
from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.factories import AIModelFactory, RouteFactory, TeamFactory, make_key
from tests.fakes.base import FakeServer, ToolCall
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway.matrix import PROVIDERS

MODEL = "team-model"
EMAIL = "alice@example.com"
OTHER = "carol@example.org"
SSN = "078-05-1120"
QUESTION = f"Please send the report to {EMAIL} today."
# The model's answer names the placeholder the gateway sent it, cut mid-placeholder.
PIECES = ("Sent it to [EM", "AIL_", "1] just", " now.")
RESTORED = f"Sent it to {EMAIL} just now."
# A tool call whose argument JSON is cut inside the placeholder.
MAIL_CALL = ToolCall(
    "call_m1", "send_mail", {"to": "[EMAIL_1]"}, pieces=('{"to": "[EMA', 'IL_1]"}')
)

# (ingress, provider type): the ways through, passed through first.
WAYS = [
    ("openai_chat", "openai"),
    ("anthropic_messages", "anthropic"),
    ("openai_responses", "openai"),
    ("openai_chat", "anthropic"),
    ("anthropic_messages", "openai"),
    ("openai_chat", "gemini"),
    ("openai_chat", "bedrock"),
    ("openai_responses", "anthropic"),
    ("anthropic_messages", "bedrock"),
]


@dataclass
class Answer:
    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # each call's arguments


def _chat(base: str, key: str, text: str, stream: bool, system: str) -> Answer:
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    if not stream:
        message = sdk.chat.completions.create(model=MODEL, messages=messages).choices[0].message
        calls = [json.loads(c.function.arguments) for c in message.tool_calls or []]  # type: ignore[union-attr]
        return Answer(message.content or "", calls)
    answer, pieces = Answer(), dict[int, str]()
    for chunk in sdk.chat.completions.create(model=MODEL, messages=messages, stream=True):
        for choice in chunk.choices:
            answer.text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                more = call.function.arguments if call.function else None
                pieces[call.index] = pieces.get(call.index, "") + (more or "")
    answer.calls = [json.loads(pieces[i]) for i in sorted(pieces)]
    return answer


def _responses(base: str, key: str, text: str, stream: bool, system: str) -> Answer:
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    given: dict[str, Any] = {"instructions": system} if system else {}
    if not stream:
        response = sdk.responses.create(model=MODEL, input=text, **given)
        calls = [json.loads(i.arguments) for i in response.output if i.type == "function_call"]
        return Answer(response.output_text, calls)
    answer, pieces, done = Answer(), dict[str, str](), None
    for event in sdk.responses.create(model=MODEL, input=text, stream=True, **given):
        if event.type == "response.output_text.delta":
            answer.text += event.delta
        elif event.type == "response.function_call_arguments.delta":
            pieces[event.item_id] = pieces.get(event.item_id, "") + event.delta
        elif event.type == "response.completed":
            done = event.response
    answer.calls = [json.loads(p) for p in pieces.values()]
    # The events that repeat whole texts say the same as the deltas did.
    assert done is not None
    assert done.output_text == answer.text
    assert [json.loads(i.arguments) for i in done.output if i.type == "function_call"] == (
        answer.calls
    )
    return answer


def _messages(base: str, key: str, text: str, stream: bool, system: str) -> Answer:
    sdk = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
    given: dict[str, Any] = {"system": system} if system else {}
    asked: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": text}],
        **given,
    }
    if not stream:
        message = sdk.messages.create(**asked)
    else:
        with sdk.messages.stream(**asked) as events:
            for _ in events:
                pass
            message = events.get_final_message()
    text_out = "".join(b.text for b in message.content if b.type == "text")
    return Answer(text_out, [b.input for b in message.content if b.type == "tool_use"])


ASK: dict[str, Callable[..., Answer]] = {
    "openai_chat": _chat,
    "openai_responses": _responses,
    "anthropic_messages": _messages,
}


def ask(
    gateway: LiveServer, key: str, ingress: str, text: str = QUESTION, stream: bool = False
) -> Answer:
    return ASK[ingress](gateway.url, key, text, stream, "")


def never_received(fake: FakeServer, *values: str) -> bool:
    """Whether the fake got requests, none of whose bytes hold any of `values`."""
    return bool(fake.requests) and not any(
        value.encode() in seen.raw or value.encode() in seen.path.encode()
        for seen in fake.requests
        for value in values
    )


def personal_data_rule(**fields: Any) -> GuardrailRule:
    return GuardrailRule.objects.create(
        name="personal data", preset="pii", action="redact", **fields
    )


@pytest.fixture
def route(gateway: LiveServer, fakes: dict[str, FakeServer]) -> Iterator[Callable[..., FakeServer]]:
    """Route MODEL to a provider of the given type, served by its fake (under the
    provider's own name for it, or `upstream_model`)."""
    used: list[FakeServer] = []

    def to(kind: str, upstream_model: str = "") -> FakeServer:
        fake = fakes[kind]
        fake.reset()
        used.append(fake)
        case = PROVIDERS[kind]
        RouteFactory(
            model=AIModelFactory(model_id=MODEL),
            provider=case.provider(fake),
            upstream_model=upstream_model or case.upstream_model,
        )
        return fake

    yield to
    for fake in used:
        fake.reset()


# --- every way through -----------------------------------------------------------------


@pytest.mark.parametrize(("ingress", "provider"), WAYS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_provider_never_sees_the_value_and_the_client_gets_it_back(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    provider: str,
    stream: bool,
) -> None:
    personal_data_rule()
    fake = route(provider)
    fake.script(text="".join(PIECES), pieces=PIECES)

    answer = ask(gateway, bob_key, ingress, stream=stream)

    assert answer.text == RESTORED
    assert never_received(fake, EMAIL)
    assert b"[EMAIL_1]" in fake.requests[0].raw


@pytest.mark.parametrize(
    ("ingress", "provider"),
    [
        ("openai_chat", "openai"),
        ("anthropic_messages", "anthropic"),
        ("openai_responses", "openai"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_request_passed_through_under_its_own_model_name_is_sent_redacted(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    provider: str,
    stream: bool,
) -> None:
    personal_data_rule()
    fake = route(provider, MODEL)  # the client's bytes would go as they came
    fake.script(text="".join(PIECES), pieces=PIECES)

    answer = ask(gateway, bob_key, ingress, stream=stream)

    assert answer.text == RESTORED
    assert never_received(fake, EMAIL)


TOOL_WAYS = [
    ("openai_chat", "openai"),
    ("anthropic_messages", "anthropic"),
    ("openai_responses", "openai"),
    ("openai_chat", "anthropic"),
    ("anthropic_messages", "openai"),
    ("openai_responses", "bedrock"),
    ("openai_chat", "gemini"),
]


@pytest.mark.parametrize(("ingress", "provider"), TOOL_WAYS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_call_arguments_get_the_value_back(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    provider: str,
    stream: bool,
) -> None:
    personal_data_rule()
    fake = route(provider)
    fake.script(text="", tool_calls=(MAIL_CALL,))

    answer = ask(gateway, bob_key, ingress, stream=stream)

    assert answer.calls == [{"to": EMAIL}]
    assert never_received(fake, EMAIL)


@pytest.mark.parametrize("ingress", sorted(ASK))
def test_history_with_tool_calls_and_results_is_redacted_everywhere(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str, ingress: str
) -> None:
    personal_data_rule()
    fake = route("openai")
    path, body = _with_tool_history(ingress)

    response = httpx.post(
        f"{gateway.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {bob_key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )

    assert response.status_code == 200
    assert never_received(fake, EMAIL, OTHER)
    assert fake.requests[0].raw.count(b"[EMAIL_1]") == 2
    assert fake.requests[0].raw.count(b"[EMAIL_2]") == 1


def _with_tool_history(ingress: str) -> tuple[str, dict[str, Any]]:
    args = {"to": EMAIL}
    if ingress == "openai_chat":
        return "/v1/chat/completions", {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": f"mail {EMAIL}"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "send_mail", "arguments": json.dumps(args)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": f"bounced, try {OTHER}"},
            ],
        }
    if ingress == "openai_responses":
        return "/v1/responses", {
            "model": MODEL,
            "input": [
                {"role": "user", "content": f"mail {EMAIL}"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "send_mail",
                    "arguments": json.dumps(args),
                },
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": f"bounced, try {OTHER}",
                },
            ],
        }
    return "/v1/messages", {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": f"mail {EMAIL}"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "c1", "name": "send_mail", "input": args}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": f"bounced, try {OTHER}"}
                ],
            },
        ],
    }


def test_the_same_value_has_the_same_placeholder_and_the_clients_own_is_kept(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    personal_data_rule()
    fake = route("openai")
    fake.script(text="You wrote [EMAIL_1]; the owner is [EMAIL_2], the other [EMAIL_3].")

    answer = _chat(
        gateway.url,
        bob_key,
        f"I typed [EMAIL_1] myself. Mail {EMAIL} and {OTHER}.",
        False,
        f"The owner is {EMAIL}.",
    )

    sent = [m["content"] for m in fake.requests[0].body["messages"]]
    assert sent == [
        "The owner is [EMAIL_2].",
        "I typed [EMAIL_1] myself. Mail [EMAIL_2] and [EMAIL_3].",
    ]
    assert answer.text == f"You wrote [EMAIL_1]; the owner is {EMAIL}, the other {OTHER}."


def test_responses_echo_of_the_instructions_gets_the_value_back(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    personal_data_rule()
    fake = route("openai")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    response = sdk.responses.create(model=MODEL, input="hi", instructions=f"Owner: {EMAIL}")

    assert response.instructions == f"Owner: {EMAIL}"
    assert never_received(fake, EMAIL)


def test_a_custom_expression_redacts_national_identifiers_under_its_own_kind(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    GuardrailRule.objects.create(
        name="US SSN",
        kind="regex",
        patterns=[r"\b\d{3}-\d{2}-\d{4}\b"],
        action="redact",
        placeholder="NATIONAL_ID",
    )
    fake = route("openai")
    fake.script(text="Recorded [NATIONAL_ID_1].", pieces=("Recorded [NATIONAL", "_ID_1]."))

    answer = ask(gateway, bob_key, "openai_chat", f"My SSN is {SSN}.", stream=True)

    assert answer.text == f"Recorded {SSN}."
    assert never_received(fake, SSN)
    assert fake.requests[0].body["messages"][0]["content"] == "My SSN is [NATIONAL_ID_1]."
    assert logged()[0].redactions == {"NATIONAL_ID": 1}


# --- the record --------------------------------------------------------------------------


def test_the_record_counts_values_by_kind_and_never_holds_them(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rule = personal_data_rule()
    route("openai").script(text="Done for [EMAIL_1].")

    answer = ask(gateway, bob_key, "openai_chat", f"{EMAIL}, {EMAIL} and {OTHER} from 10.2.3.4")

    [record] = logged()
    assert answer.text == f"Done for {EMAIL}."
    assert record.redactions == {"EMAIL": 3, "IP": 1}
    assert record.guardrails == [
        {"rule": "personal data", "rule_id": rule.pk, "action": "redact", "count": 4}
    ]
    kept = str(model_to_dict(record)) + caplog.text
    assert EMAIL not in kept
    assert OTHER not in kept
    assert "10.2.3.4" not in kept


def test_a_stream_record_counts_too(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    personal_data_rule()
    route("anthropic").script(text="".join(PIECES), pieces=PIECES)

    ask(gateway, bob_key, "anthropic_messages", stream=True)

    [record] = logged()
    assert (record.status_code, record.redactions) == (200, {"EMAIL": 1})


def test_a_request_with_nothing_to_redact_is_sent_as_the_client_wrote_it(
    gateway: LiveServer, openai_provider: Provider, bob_key: str, upstream: FakeOpenAI
) -> None:
    personal_data_rule()
    body = b'{"model":  "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {bob_key}", "Content-Type": "application/json"},
    )

    assert response.status_code == 200
    assert upstream.requests[0].raw == body
    [record] = logged()
    assert (record.redactions, record.guardrails) == (None, None)


# --- where rules apply ---------------------------------------------------------------------


def test_a_disabled_rule_redacts_nothing(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    personal_data_rule(enabled=False)
    fake = route("openai")

    ask(gateway, bob_key, "openai_chat")

    assert EMAIL.encode() in fake.requests[0].raw


def test_a_team_rule_redacts_that_teams_requests_only(
    route: Callable[..., FakeServer], gateway: LiveServer, bob: User, bob_key: str
) -> None:
    team = TeamFactory()
    Membership.objects.create(team=team, user=bob)
    _, team_key = make_key(bob, team=team, name="team key")
    personal_data_rule(team=team)
    fake = route("openai")

    ask(gateway, team_key, "openai_chat")
    ask(gateway, bob_key, "openai_chat")

    assert [EMAIL.encode() in seen.raw for seen in fake.requests] == [False, True]


def test_a_key_rule_redacts_that_keys_requests_only(
    route: Callable[..., FakeServer], gateway: LiveServer, bob: User, bob_key: str
) -> None:
    careful, careful_key = make_key(bob, name="careful")
    personal_data_rule(api_key=careful)
    fake = route("openai")

    ask(gateway, careful_key, "openai_chat")
    ask(gateway, bob_key, "openai_chat")

    assert [EMAIL.encode() in seen.raw for seen in fake.requests] == [False, True]


@pytest.mark.parametrize(("pattern", "redacted"), [("team-*", True), ("claude-*", False)])
def test_a_model_scoped_rule_redacts_matching_models_only(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    pattern: str,
    redacted: bool,
) -> None:
    personal_data_rule(model_pattern=pattern)
    fake = route("openai")

    ask(gateway, bob_key, "openai_chat")

    assert (EMAIL.encode() not in fake.requests[0].raw) is redacted


# --- when redaction fails ----------------------------------------------------------------

SLOW_TEXT = f"{EMAIL} " + "a" * 60 + "!"


def slow_rule(fail_closed: bool) -> GuardrailRule:
    return GuardrailRule.objects.create(
        name="catastrophic",
        kind="regex",
        patterns=[r"(a|aa)+$"],
        action="redact",
        fail_closed=fail_closed,
    )


ERRORS = {
    "openai_chat": lambda body: (body["error"]["code"], body["error"]["message"]),
    "openai_responses": lambda body: (body["error"]["code"], body["error"]["message"]),
    "anthropic_messages": lambda body: (body["error"]["type"], body["error"]["message"]),
}
PATHS = {
    "openai_chat": "/v1/chat/completions",
    "openai_responses": "/v1/responses",
    "anthropic_messages": "/v1/messages",
}


def _body(ingress: str, text: str) -> dict[str, Any]:
    if ingress == "openai_responses":
        return {"model": MODEL, "input": text}
    if ingress == "anthropic_messages":
        return {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize(
    ("ingress", "kind"),
    [
        ("openai_chat", "redaction_failed"),
        ("openai_responses", "redaction_failed"),
        ("anthropic_messages", "api_error"),
    ],
)
def test_a_fail_closed_rule_refuses_the_request_when_redaction_fails(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    ingress: str,
    kind: str,
) -> None:
    personal_data_rule()
    slow_rule(fail_closed=True)
    fake = route("openai")

    response = httpx.post(
        f"{gateway.url}{PATHS[ingress]}",
        json=_body(ingress, SLOW_TEXT),
        headers={"Authorization": f"Bearer {bob_key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )

    assert response.status_code == 503
    code, message = ERRORS[ingress](response.json())
    assert code == kind
    assert "could not redact" in message
    assert fake.requests == []
    [record] = logged()
    assert (record.status_code, record.error_code) == (503, "redaction_failed")
    assert record.guardrails == [
        {
            "rule": "catastrophic",
            "rule_id": record.guardrails[0]["rule_id"],
            "action": "redact",
            "error": True,
            "timed_out": True,
        }
    ]
    assert EMAIL not in str(model_to_dict(record))


def test_a_fail_open_rule_sends_the_request_unredacted_and_records_the_failure(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    GuardrailRule.objects.create(
        name="personal data", preset="pii", action="redact", fail_closed=False
    )
    slow_rule(fail_closed=False)
    fake = route("openai")

    answer = ask(gateway, bob_key, "openai_chat", SLOW_TEXT)

    assert answer.text == fake.script_now.text
    assert EMAIL.encode() in fake.requests[0].raw
    [record] = logged()
    assert record.status_code == 200
    assert record.redactions is None
    assert [(h["rule"], h.get("error")) for h in record.guardrails] == [("catastrophic", True)]


def test_screening_rules_still_see_the_original_text(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    personal_data_rule()
    GuardrailRule.objects.create(
        name="no mail to alice", kind="phrases", patterns=[EMAIL], action="block"
    )
    fake = route("openai")

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=_body("openai_chat", QUESTION),
        headers={"Authorization": f"Bearer {bob_key}"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "guardrail_blocked"
    assert fake.requests == []


# --- the other endpoints that send text upstream ---------------------------------------


@pytest.mark.parametrize(
    ("provider", "upstream_model"),
    [("openai", ""), ("gemini", ""), ("bedrock", "amazon.titan-embed-text-v2:0")],
)
def test_embeddings_are_asked_for_the_redacted_text(
    route: Callable[..., FakeServer],
    gateway: LiveServer,
    bob_key: str,
    provider: str,
    upstream_model: str,
) -> None:
    personal_data_rule()
    fake = route(provider, upstream_model)

    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": MODEL, "input": [QUESTION, f"and {OTHER}"]},
        headers={"Authorization": f"Bearer {bob_key}"},
        timeout=30,
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    assert never_received(fake, EMAIL, OTHER)
    [record] = logged()
    assert record.redactions == {"EMAIL": 2}


def test_a_block_rule_refuses_an_embeddings_request_before_it_leaves(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str
) -> None:
    GuardrailRule.objects.create(
        name="no codenames", kind="phrases", patterns=["project falcon"], action="block"
    )
    fake = route("openai")

    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": MODEL, "input": "notes on Project Falcon"},
        headers={"Authorization": f"Bearer {bob_key}"},
        timeout=30,
    )

    assert response.status_code == 400
    assert "no codenames" in response.json()["error"]["message"]
    assert fake.requests == []


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_token_counting_sends_the_redacted_text(
    route: Callable[..., FakeServer], gateway: LiveServer, bob_key: str, provider: str
) -> None:
    personal_data_rule()
    fake = route(provider)
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=bob_key, max_retries=0, timeout=30)

    counted = sdk.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}]
    )

    assert counted.input_tokens > 0
    assert never_received(fake, EMAIL)
    assert b"[EMAIL_1]" in fake.requests[-1].raw
