"""Redaction's pieces without a gateway: what is replaced and how it is numbered, the
restorer's hold-back at every split point, and the text-filter chain on each stream shape."""

import json
from collections.abc import Hashable
from typing import Any

import orjson
import pytest

from gateway import redaction, text_filters
from gateway.formats import canonical as c
from gateway.guardrails import InvalidRule, Rule, blocking, evaluate, label_of
from gateway.redaction import Redacted, Restorer

EMAIL = "alice@example.com"
OTHER = "bob@example.org"
CARD = "4111 1111 1111 1111"
SSN = "078-05-1120"
PII = Rule.build("personal data", "detector", ["pii"], action="redact")
NATIONAL_ID = Rule.build("ssn", "regex", [r"\b\d{3}-\d{2}-\d{4}\b"], action="redact").redacting(
    "NATIONAL_ID", True
)


def chat(*contents: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text} for text in contents]}


def redacted(payload: dict[str, Any], *rules: Rule) -> Redacted:
    outcome = redaction.redact(rules or (PII,), payload)
    assert isinstance(outcome.payload, Redacted)
    return outcome.payload


def contents(payload: dict[str, Any]) -> list[str]:
    return [m["content"] for m in payload["messages"]]


# --- the request ------------------------------------------------------------------------


def test_one_value_gets_one_placeholder_everywhere_in_the_request() -> None:
    payload = redacted(chat(f"mail {EMAIL}", f"again {EMAIL}, and {OTHER}"))

    assert contents(payload) == ["mail [EMAIL_1]", "again [EMAIL_1], and [EMAIL_2]"]
    assert payload.originals == {"[EMAIL_1]": EMAIL, "[EMAIL_2]": OTHER}


def test_kinds_are_numbered_each_in_order_of_first_appearance() -> None:
    payload = redacted(chat(f"card {CARD} for {EMAIL} from 10.1.2.3, call +1 415 555 0100"))

    assert contents(payload) == ["card [CARD_1] for [EMAIL_1] from [IP_1], call [PHONE_1]"]


def test_a_placeholder_the_client_wrote_is_skipped() -> None:
    payload = redacted(chat("I wrote [EMAIL_1] myself", f"real one: {EMAIL}"))

    assert contents(payload) == ["I wrote [EMAIL_1] myself", "real one: [EMAIL_2]"]
    assert payload.originals == {"[EMAIL_2]": EMAIL}


def test_the_original_payload_is_left_as_it_was() -> None:
    original = chat(f"mail {EMAIL}")

    redacted(original)

    assert contents(original) == [f"mail {EMAIL}"]


def test_nothing_detected_gives_the_payload_back_itself() -> None:
    original = chat("nothing personal here")

    outcome = redaction.redact([PII], original)

    assert outcome.payload is original
    assert (outcome.counts, outcome.hits, outcome.failed) == ({}, [], False)


def test_counts_and_hits_name_kinds_and_rules_never_values() -> None:
    outcome = redaction.redact(
        [PII, NATIONAL_ID], chat(f"{EMAIL} {EMAIL} {OTHER}, SSN {SSN}, card {CARD}")
    )

    assert outcome.counts == {"EMAIL": 3, "NATIONAL_ID": 1, "CARD": 1}
    assert outcome.hits == [
        {"rule": "personal data", "action": "redact", "count": 4},
        {"rule": "ssn", "action": "redact", "count": 1},
    ]
    assert EMAIL not in repr(outcome.hits) + repr(outcome.counts) + repr(outcome.payload)


def test_a_custom_expression_names_its_own_kind() -> None:
    payload = redacted(chat(f"my SSN is {SSN}"), NATIONAL_ID)

    assert contents(payload) == ["my SSN is [NATIONAL_ID_1]"]


def test_every_text_field_of_each_ingress_format_is_redacted() -> None:
    value = EMAIL
    payloads: list[dict[str, Any]] = [
        {  # OpenAI Chat: system, parts, tool calls (JSON text) and tool results
            "model": "m",
            "messages": [
                {"role": "system", "content": f"owner {value}"},
                {"role": "user", "content": [{"type": "text", "text": f"hi {value}"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "send", "arguments": json.dumps({"to": value})},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": f"sent to {value}"},
            ],
        },
        {  # Anthropic Messages: system blocks, thinking, tool_use input, tool_result
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": value}],
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": f"for {value}", "signature": "s"},
                        {"type": "tool_use", "id": "t", "name": "send", "input": {"to": value}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": value}],
                },
            ],
        },
        {  # OpenAI Responses: instructions, input items, function calls and outputs
            "model": "m",
            "instructions": f"owner {value}",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": value}]},
                {
                    "type": "function_call",
                    "call_id": "c",
                    "name": "send",
                    "arguments": f'"{value}"',
                },
                {"type": "function_call_output", "call_id": "c", "output": f"sent {value}"},
            ],
        },
    ]

    sent = [orjson.dumps(redacted(payload)) for payload in payloads]

    assert [value.encode() in body for body in sent] == [False, False, False]
    assert [body.count(b"[EMAIL_1]") for body in sent] == [4, 4, 4]


def test_numbers_in_tool_arguments_are_redacted() -> None:
    arguments = json.dumps({"card": 4111111111111111, "count": 3})
    payload = {
        "model": "m",
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "pay", "arguments": arguments}}],
            }
        ],
    }

    sent = redacted(payload)["messages"][0]["tool_calls"][0]["function"]["arguments"]

    assert json.loads(sent) == {"card": "[CARD_1]", "count": 3}


def test_images_and_other_fields_are_not_touched() -> None:
    payload = {
        "model": "m",
        "user": EMAIL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": EMAIL},
                    {"type": "image_url", "image_url": {"url": "https://10.0.0.1/a.png"}},
                ],
            }
        ],
    }

    sent = redacted(payload)

    assert sent["user"] == EMAIL
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == "https://10.0.0.1/a.png"


def test_a_rule_that_times_out_fails_the_redaction_naming_it() -> None:
    slow = Rule.build("catastrophic", "regex", [r"(a|aa)+$"], action="redact", rule_id=7)

    outcome = redaction.redact([PII, slow], chat(f"{EMAIL} " + "a" * 60 + "!"))

    assert outcome.failed
    assert contents(outcome.payload) == [f"{EMAIL} " + "a" * 60 + "!"]
    assert outcome.hits == [
        {"rule": "catastrophic", "action": "redact", "error": True, "rule_id": 7, "timed_out": True}
    ]


# --- rules --------------------------------------------------------------------------------


def test_a_redact_rule_on_output_alone_is_refused() -> None:
    with pytest.raises(InvalidRule, match="input or both"):
        Rule.build("bad", "detector", ["pii"], applies="output", action="redact")


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("National ID", "NATIONAL_ID"),
        ("ssn-us", "SSN_US"),
        ("42 things", "R_42_THINGS"),
        ("—", "REDACTED"),
    ],
)
def test_a_placeholder_kind_is_made_from_the_rules_name(name: str, label: str) -> None:
    assert label_of(name) == label
    assert Rule.build(name, "regex", ["x"], action="redact").label == label


def test_an_invalid_placeholder_falls_back_to_the_name() -> None:
    rule = Rule.build("tax id", "regex", ["x"], action="redact").redacting("bad label", True)

    assert rule.label == "TAX_ID"


def test_a_redact_rule_never_blocks() -> None:
    hits = evaluate([PII], f"mail {EMAIL}", "input")

    assert [(h.action, h.count) for h in hits] == [("redact", 1)]
    assert blocking(hits) is None


# --- restoring ------------------------------------------------------------------------------

ORIGINALS = {"[EMAIL_1]": EMAIL, "[EMAIL_12]": OTHER, "[NOTE_1]": 'say "hi"\n'}
ANSWER = "Write to [EMAIL_1] and [EMAIL_12]."
RESTORED = f"Write to {EMAIL} and {OTHER}."


def feed_all(restorer: Restorer, pieces: list[str], json_text: bool = False) -> str:
    return "".join(restorer.feed("b", piece, json_text) for piece in pieces) + restorer.flush("b")


def test_a_whole_text_gets_its_values_back() -> None:
    assert Restorer(ORIGINALS).whole(ANSWER) == RESTORED


def test_in_json_text_a_value_goes_in_escaped() -> None:
    arguments = '{"note": "[NOTE_1]"}'

    restored = Restorer(ORIGINALS).whole(arguments, json_text=True)

    assert json.loads(restored) == {"note": 'say "hi"\n'}


@pytest.mark.parametrize("cut", range(1, len(ANSWER)))
def test_a_placeholder_split_anywhere_is_restored(cut: int) -> None:
    assert feed_all(Restorer(ORIGINALS), [ANSWER[:cut], ANSWER[cut:]]) == RESTORED


@pytest.mark.parametrize("cut", range(1, len('{"note": "[NOTE_1]"}')))
def test_a_placeholder_split_anywhere_in_json_text_is_restored(cut: int) -> None:
    arguments = '{"note": "[NOTE_1]"}'

    restored = feed_all(Restorer(ORIGINALS), [arguments[:cut], arguments[cut:]], json_text=True)

    assert json.loads(restored) == {"note": 'say "hi"\n'}


def test_a_placeholder_fed_a_character_at_a_time_is_restored() -> None:
    assert feed_all(Restorer(ORIGINALS), list(ANSWER)) == RESTORED


def test_only_what_may_start_a_placeholder_is_held_back() -> None:
    restorer = Restorer(ORIGINALS)

    assert restorer.feed("b", "see [EMA", False) == "see "
    assert restorer.feed("b", "RLIER]", False) == "[EMARLIER]"
    assert restorer.feed("b", "array[0", False) == "array[0"


def test_a_prefix_left_at_the_end_is_flushed_as_it_came() -> None:
    restorer = Restorer(ORIGINALS)

    assert restorer.feed("b", "cut short: [EMAIL_", False) == "cut short: "
    assert restorer.flush("b") == "[EMAIL_"
    assert restorer.flush("b") == ""


def test_blocks_hold_back_separately() -> None:
    restorer = Restorer(ORIGINALS)

    assert restorer.feed("text", "to [EMA", False) == "to "
    assert restorer.feed("tool", '{"to": "[EMAIL', True) == '{"to": "'
    assert restorer.feed("text", "IL_1].", False) == f"{EMAIL}."
    assert restorer.feed("tool", '_1]"}', True) == f'{EMAIL}"}}'


def test_a_placeholder_of_another_request_is_left_alone() -> None:
    assert Restorer(ORIGINALS).whole("see [EMAIL_2] and [PHONE_1]") == "see [EMAIL_2] and [PHONE_1]"


def test_restoring_a_response_maps_every_string_and_arguments_as_json() -> None:
    answer = {
        "choices": [
            {
                "message": {
                    "content": "to [EMAIL_1]",
                    "tool_calls": [{"function": {"arguments": '{"n": "[NOTE_1]"}'}}],
                }
            }
        ],
        "content": [{"type": "tool_use", "input": {"arguments": "[NOTE_1]"}}],
    }

    restored = text_filters.map_strings(answer, Restorer(ORIGINALS).whole)

    message = restored["choices"][0]["message"]
    assert message["content"] == f"to {EMAIL}"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"n": 'say "hi"\n'}
    assert restored["content"][0]["input"] == {"arguments": 'say "hi"\n'}


def test_an_answer_without_placeholders_keeps_its_bytes() -> None:
    data = b'{"choices": [{"message": {"content": "plain"}}]}'

    assert text_filters.answer_bytes(orjson.loads(data), data, Restorer(ORIGINALS).whole) is data


# --- the chain on streams -------------------------------------------------------------------


class Upper:
    """A filter that holds nothing back and upper-cases text (to see the chain's order)."""

    def feed(self, block: Hashable, text: str, json_text: bool) -> str:
        return text.upper()

    def flush(self, block: Hashable) -> str:
        return ""


def test_filters_run_in_order_and_flush_through_the_rest() -> None:
    chain = text_filters.Chain([Restorer(ORIGINALS), Upper()])

    assert chain.feed(0, "to [EMAIL", False) == "TO "
    assert chain.flush(0) == "[EMAIL"


def test_converted_events_get_values_back_and_held_text_before_the_block_ends() -> None:
    texts = text_filters.CanonicalTexts(text_filters.Chain([Restorer(ORIGINALS)]))

    events = texts.events(
        [
            c.BlockStart(0, "text"),
            c.Delta(0, "to [EM"),
            c.Delta(0, "AIL_1] now ["),
            c.BlockStop(0),
            c.BlockStart(1, "tool_call", "call_1", "note"),
            c.Delta(1, '{"n": "[NO'),
            c.Delta(1, 'TE_1]"}'),
            c.BlockStop(1),
        ]
    )

    assert events == [
        c.BlockStart(0, "text"),
        c.Delta(0, "to "),
        c.Delta(0, f"{EMAIL} now "),
        c.Delta(0, "["),
        c.BlockStop(0),
        c.BlockStart(1, "tool_call", "call_1", "note"),
        c.Delta(1, '{"n": "'),
        c.Delta(1, 'say \\"hi\\"\\n"}'),
        c.BlockStop(1),
    ]


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def _datas(events: list[bytes]) -> list[Any]:
    out = []
    for event in events:
        line = next(x for x in event.decode().splitlines() if x.startswith("data: "))
        raw = line[6:]
        out.append(raw if raw == "[DONE]" else json.loads(raw))
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _sse({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})


def test_chat_events_get_values_back_and_held_text_goes_in_the_next_chunk() -> None:
    rewriter = text_filters.rewriter("openai_chat", [Restorer(ORIGINALS)])
    untouched = _chunk({"role": "assistant", "content": "Hi "})

    out = rewriter.rewrite(
        [
            untouched,
            _chunk({"content": "to [EMA"}),
            _chunk({"content": "IL_1] ["}),
            _chunk({}, "stop"),
            _sse("[DONE]"),
        ]
    )

    assert out[0] is untouched
    deltas = [d["choices"][0]["delta"] for d in _datas(out[1:4])]
    assert deltas == [{"content": "to "}, {"content": f"{EMAIL} "}, {"content": "["}]
    assert _datas(out[4:]) == ["[DONE]"]


def test_chat_tool_arguments_are_restored_as_json_even_when_calls_interleave() -> None:
    rewriter = text_filters.rewriter("openai_chat", [Restorer(ORIGINALS)])

    def call(index: int, pieces: str) -> bytes:
        return _chunk({"tool_calls": [{"index": index, "function": {"arguments": pieces}}]})

    out = _datas(
        rewriter.rewrite(
            [
                call(0, '{"n": "[NO'),
                call(1, '{"to": "[EMAIL'),
                call(0, 'TE_1]"}'),
                call(1, '_1]", "cc": "[EMAIL_1'),
                _chunk({}, "tool_calls"),
                _sse("[DONE]"),
            ]
        )
    )

    pieces: dict[int, str] = {}
    for data in out[:-1]:
        for tool in data["choices"][0]["delta"].get("tool_calls", []):
            pieces[tool["index"]] = pieces.get(tool["index"], "") + tool["function"]["arguments"]
    assert pieces == {0: '{"n": "say \\"hi\\"\\n"}', 1: f'{{"to": "{EMAIL}", "cc": "[EMAIL_1'}


def test_chat_text_held_when_the_choice_finishes_goes_out_after_its_last_piece() -> None:
    rewriter = text_filters.rewriter("openai_chat", [Restorer(ORIGINALS)])

    out = rewriter.rewrite([_chunk({"content": "a [EMAIL_1] b ["}, "stop")])

    assert [d["choices"][0]["delta"] for d in _datas(out)] == [{"content": f"a {EMAIL} b ["}]


def test_chat_text_held_at_the_end_of_the_stream_gets_its_own_chunk() -> None:
    rewriter = text_filters.rewriter("openai_chat", [Restorer(ORIGINALS)])

    out = rewriter.rewrite([_chunk({"content": "cut [EMAIL_"})]) + rewriter.finish()

    assert [d["choices"][0]["delta"] for d in _datas(out)] == [
        {"content": "cut "},
        {"content": "[EMAIL_"},
    ]


def _block_delta(index: int, kind: str, field: str, text: str) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: text}}
    return _sse(data, "content_block_delta")


def test_messages_events_get_values_back_and_held_text_before_the_block_stops() -> None:
    rewriter = text_filters.rewriter("anthropic_messages", [Restorer(ORIGINALS)])
    ping = _sse({"type": "ping"}, "ping")

    out = rewriter.rewrite(
        [
            _block_delta(0, "text_delta", "text", "to [EMAIL"),
            ping,
            _block_delta(0, "text_delta", "text", "_1] ["),
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _block_delta(1, "input_json_delta", "partial_json", '{"n": "[NOTE'),
            _block_delta(1, "input_json_delta", "partial_json", '_1]"}'),
        ]
    )

    assert out[1] is ping
    assert [d.get("delta") for d in _datas(out)] == [
        {"type": "text_delta", "text": "to "},
        None,
        {"type": "text_delta", "text": f"{EMAIL} "},
        {"type": "text_delta", "text": "["},
        None,
        {"type": "input_json_delta", "partial_json": '{"n": "'},
        {"type": "input_json_delta", "partial_json": 'say \\"hi\\"\\n"}'},
    ]
    assert out[3].startswith(b"event: content_block_delta\n")


def _responses_event(number: int, kind: str, **fields: Any) -> bytes:
    return _sse({"type": kind, "sequence_number": number, **fields}, kind)


def test_responses_events_are_restored_and_renumbered_after_an_added_one() -> None:
    rewriter = text_filters.rewriter("openai_responses", [Restorer(ORIGINALS)])
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}

    out = _datas(
        rewriter.rewrite(
            [
                _responses_event(0, "response.output_text.delta", **at, delta="to [EMA"),
                _responses_event(1, "response.output_text.delta", **at, delta="IL_1] ["),
                _responses_event(2, "response.output_text.done", **at, text="to [EMAIL_1] ["),
                _responses_event(
                    3,
                    "response.completed",
                    response={"instructions": "owner [EMAIL_12]", "output": []},
                ),
            ]
        )
    )

    assert [(d["sequence_number"], d["type"]) for d in out] == [
        (0, "response.output_text.delta"),
        (1, "response.output_text.delta"),
        (2, "response.output_text.delta"),
        (3, "response.output_text.done"),
        (4, "response.completed"),
    ]
    assert [d.get("delta") for d in out[:3]] == ["to ", f"{EMAIL} ", "["]
    assert out[3]["text"] == f"to {EMAIL} ["
    assert out[4]["response"]["instructions"] == f"owner {OTHER}"


# --- events that cannot hold a placeholder pass unparsed --------------------------------


def _chat_event(text: str) -> bytes:
    chunk = {"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _messages_event(text: str) -> bytes:
    data = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return b"event: content_block_delta\ndata: " + orjson.dumps(data) + b"\n\n"


@pytest.mark.parametrize(
    ("ingress", "event"), [("openai_chat", _chat_event), ("anthropic_messages", _messages_event)]
)
def test_events_that_cannot_hold_a_placeholder_pass_unparsed(
    ingress: str, event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    parse = text_filters._data
    monkeypatch.setattr(text_filters, "_data", lambda raw: parsed.append(raw) or parse(raw))
    rewriter = text_filters.rewriter(ingress, [Restorer(ORIGINALS)])
    plain = event("nothing to restore here")
    quoted = event('a list ["x"] in text')  # could end a fragment with "[": looked at
    named = event("see [EMAIL_1]")

    out = [rewriter.rewrite([e]) for e in (plain, quoted, named)]

    assert parsed == [quoted, named]
    assert out[0] == [plain] and out[1] == [quoted]
    assert EMAIL.encode() in out[2][0]


@pytest.mark.parametrize("ingress", ["openai_chat", "anthropic_messages"])
@pytest.mark.parametrize("cut", range(1, len("[EMAIL_1]")))
def test_a_placeholder_split_anywhere_is_restored_with_the_fast_path(
    ingress: str, cut: int
) -> None:
    event = _chat_event if ingress == "openai_chat" else _messages_event
    rewriter = text_filters.rewriter(ingress, [Restorer(ORIGINALS)])
    text = "Write to [EMAIL_1] today, then stop."
    at = text.index("[") + cut
    events = [event("Hello. "), event(text[:at]), event(text[at:]), event(" Bye.")]

    out = [e for chunk in events for e in rewriter.rewrite([chunk])] + rewriter.finish()

    sent = ""
    for raw in out:
        data = orjson.loads(raw.split(b"data: ", 1)[1])
        delta = data["choices"][0]["delta"] if "choices" in data else data["delta"]
        sent += delta.get("content") or delta.get("text") or ""
    assert sent == f"Hello. Write to {EMAIL} today, then stop. Bye."
