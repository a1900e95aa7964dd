"""Output rules on a stream, as a text filter: nothing that a block rule matches reaches the
client, whatever the split of the text into fragments; the final count is exact."""

import pytest

from gateway import guardrails, outputs
from gateway.outputs import Blocked, StreamGuard

SECRET = "AKIAIOSFODNN7EXAMPLE"
TEXT = (
    "Here is the configuration you asked for. The deployment uses the default region and "
    f"the access key {SECRET} which you should rotate. Anything else? " * 1
)


def guard(action: str = "block") -> StreamGuard:
    rule = guardrails.Rule.build("keys out", "detector", ["secrets"], "output", action, 7)
    return StreamGuard([rule])


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 16, 50, 500])
def test_a_blocked_secret_never_reaches_the_client_whatever_the_fragments(size: int) -> None:
    g, sent = guard(), []
    with pytest.raises(Blocked) as blocked:
        for piece in pieces(TEXT, size):
            sent.append(g.feed(0, piece))
        sent.append(g.flush(0))

    assert blocked.value.hit.rule == "keys out"
    assert SECRET[:8] not in "".join(sent)
    assert outputs.refusal(blocked.value.hit).code == "guardrail_blocked"


@pytest.mark.parametrize("size", [1, 5, 64, 1000])
def test_clean_text_passes_whole_and_in_order(size: int) -> None:
    text = "A long and harmless answer about gardening. " * 40
    g = guard()

    sent = "".join(g.feed(0, piece) for piece in pieces(text, size)) + g.flush(0)

    assert sent == text
    assert g.finish() == []


def test_a_warn_rule_passes_the_text_and_counts_every_match_at_the_end() -> None:
    g = guard("warn")
    text = f"first {SECRET} and later " + "padding " * 100 + f"again {SECRET}."

    sent = "".join(g.feed(0, piece) for piece in pieces(text, 9)) + g.flush(0)

    assert sent == text
    [hit] = g.finish()
    assert (hit.rule, hit.action, hit.count) == ("keys out", "warn", 2)


def test_blocks_are_held_apart() -> None:
    g = guard("log")

    a = g.feed("text", "hello ") + g.feed("tool", '{"q": "x"}') + g.feed("text", "world")

    assert a == ""  # both blocks are shorter than the hold
    assert g.flush("text") == "hello world"
    assert g.flush("tool") == '{"q": "x"}'
    assert g.flush("missing") == ""


def test_a_non_streamed_answer_is_checked_in_every_text_field() -> None:
    rule = guardrails.Rule.build("keys out", "detector", ["secrets"], "both", "block", 7)
    answer = {
        "choices": [
            {
                "message": {
                    "content": "done",
                    "tool_calls": [{"function": {"arguments": f'{{"key": "{SECRET}"}}'}}],
                }
            }
        ]
    }

    [hit] = outputs.check_answer([rule], answer)

    assert (hit.action, hit.count) == ("block", 1)
    assert outputs.check_body([rule], b"not json") == []
    input_only = guardrails.Rule.build("in", "detector", ["secrets"], "input", "block", 8)
    assert outputs.output_rules([rule, input_only]) == [rule]
