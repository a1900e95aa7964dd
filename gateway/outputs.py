"""Content policy on what the model answers (rules whose `applies` is output or both).

A non-streamed answer is checked whole before it is sent: a `block` rule withholds it (400
`guardrail_blocked` in the client's format; the provider's usage is still recorded and
billed), `warn` adds the `x-thinkwatch-guardrail` header, `log` only records.

A stream is checked as it goes, by a text filter in the relay's chain
(gateway/redaction.py `TextFilter`): each block's text is held back by `HOLD` characters
so that a match is found before its end reaches the client, and the rules are run on what
arrived since the last check plus `OVERLAP` characters before it, so that the cost stays
linear in the answer. A `block` hit stops the stream with an error event in the client's
format. When the stream ends, the rules run once over each block's whole text, for exact
counts on the record. A `warn` found in a stream cannot become a header (the headers are
gone): the record carries it.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from gateway import errors, guardrails
from gateway.errors import GatewayError
from gateway.guardrails import Hit, Rule

if TYPE_CHECKING:
    from gateway.accounting import Call

HOLD = 64  # characters of each block held back until more text (or its end) arrives
OVERLAP = 256  # characters before the new text that a check looks at again
STEP = 128  # characters of new text that trigger a check


class Blocked(Exception):
    """A block rule fired on the answer: the stream stops here."""

    def __init__(self, hit: Hit) -> None:
        super().__init__(hit.rule)
        self.hit = hit


def refusal(hit: Hit) -> GatewayError:
    return errors.bad_request(
        f"The answer was withheld by the content policy rule '{hit.rule}'.",
        "guardrail_blocked",
    )


def public(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """Hits as the record keeps them, marked as found in the answer."""
    return [{**hit.public(), "direction": "output"} for hit in hits]


def output_rules(rules: Sequence[Rule]) -> list[Rule]:
    return [rule for rule in rules if rule.applies_to("output") and rule.action != "redact"]


def check_answer(rules: Sequence[Rule], answer: Any) -> list[Hit]:
    """The hits on a whole (non-streamed) answer, given as the client's parsed JSON."""
    return guardrails.evaluate(rules, "\n".join(guardrails.texts(answer)), "output")


def check_body(rules: Sequence[Rule], body: bytes) -> list[Hit]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    return check_answer(rules, answer)


class _Block:
    __slots__ = ("held", "parts", "tail", "unchecked")

    def __init__(self) -> None:
        self.parts: list[str] = []  # all of the block's text, for the final count
        self.held = ""  # not yet sent to the client
        self.unchecked = ""  # arrived since the last check
        self.tail = ""  # the last OVERLAP characters the last check saw


class StreamGuard:
    """A text filter that applies output rules to a stream's blocks as they arrive."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._blocks: dict[Hashable, _Block] = {}

    def feed(self, block: Hashable, text: str, json_text: bool = False) -> str:
        state = self._blocks.get(block)
        if state is None:
            state = self._blocks[block] = _Block()
        state.parts.append(text)
        state.held += text
        state.unchecked += text
        if len(state.unchecked) >= STEP:
            self._check(state)
        if len(state.held) <= HOLD:
            return ""
        # What leaves has been checked: at most HOLD characters are unchecked, and they stay.
        if len(state.unchecked) > HOLD:
            self._check(state)
        out, state.held = state.held[:-HOLD], state.held[-HOLD:]
        return out

    def flush(self, block: Hashable) -> str:
        state = self._blocks.get(block)
        if state is None or not state.held:
            return ""
        if state.unchecked:
            self._check(state)
        out, state.held = state.held, ""
        return out

    def _check(self, state: _Block) -> None:
        window = state.tail + state.unchecked
        state.tail, state.unchecked = window[-OVERLAP:], ""
        hit = guardrails.blocking(guardrails.evaluate(self.rules, window, "output"))
        if hit is not None:
            raise Blocked(hit)

    def finish(self) -> list[Hit]:
        """The hits over the whole answer (for the record), most severe first."""
        whole = "\n".join("".join(state.parts) for state in self._blocks.values())
        return guardrails.evaluate(self.rules, whole, "output") if whole else []

    def recorded(self, call: "Call", on_end: Callable[[bool], None]) -> Callable[[bool], None]:
        """`on_end` (called by the relay when the stream is over, before the record is
        written), first putting this stream's hits on the call's record."""

        def ended(clean: bool) -> None:
            hits = self.finish()
            if hits:
                call.guardrails = [*(call.guardrails or ()), *public(hits)]
            on_end(clean)

        return ended
