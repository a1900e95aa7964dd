"""Redaction before egress: values that redact rules detect in a request are replaced by
placeholders before it leaves the gateway, and put back where the answer names them.

Redact rules are content-policy rules (gateway/guardrails.py) whose action is `redact`,
scoped like the others (team, key, model pattern). What they detect, and the kind a
placeholder names: the `pii` detector's e-mail addresses (EMAIL), phone numbers (PHONE),
Luhn-checked card numbers (CARD) and IP addresses (IP); the `secrets` detector's keys and
tokens (SECRET); a phrase or regex rule's matches (its `placeholder`, e.g. NATIONAL_ID for
an identity-number pattern, else a kind made from its name).

Placeholders read `[KIND_n]`: one value has one placeholder everywhere in the request, the
numbers of a kind count up in order of first appearance, and a placeholder whose text the
request already holds is skipped, so restoring never rewrites what the client itself wrote.

What is redacted: the text a model reads, in every ingress format — message contents and
their text parts, system prompts and instructions, Responses input items, thinking, tool
results, and tool-call arguments (OpenAI's JSON text is parsed and its values redacted;
Anthropic's `input` objects likewise), bare numbers in arguments included.

The answer gets the values back (`Restorer`): a non-streamed answer in every string, a
stream in every text fragment, as a text filter (gateway/text_filters.py) that holds back a
fragment's tail that may be the start of a placeholder until the next fragment decides.

The record keeps how many values of each kind were replaced, and which rules replaced them;
the values and the placeholder map exist only in this request's memory.
"""

import logging
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import guardrails
from gateway.errors import GatewayError
from gateway.guardrails import Rule
from gateway.text_filters import TextFilter, WholeTextFilter

__all__ = [
    "Outcome",
    "Redacted",
    "Restorer",
    "TextFilter",
    "WholeTextFilter",
    "applicable",
    "body",
    "failure",
    "filters",
    "redact",
    "restorer",
]

logger = logging.getLogger(__name__)

# The request keys whose strings a model reads (guardrails.texts reads the same, and here
# also thinking, Responses tool outputs and refusals: they go back to the model too).
_TEXT_KEYS = frozenset(
    {
        "content",
        "text",
        "system",
        "input",
        "instructions",
        "arguments",
        "prompt",
        "input_text",
        "thinking",
        "output",
        "reasoning_content",
        "refusal",
    }
)
_MAX_DEPTH = 32


class Redacted(dict[str, Any]):
    """A request payload whose detected values were replaced; `originals` maps each
    placeholder back to its value, for this request's answer only."""

    __slots__ = ("originals",)

    def __init__(self, payload: dict[str, Any], originals: dict[str, str]) -> None:
        super().__init__(payload)
        self.originals = originals

    def __repr__(self) -> str:
        return f"Redacted({dict.__repr__(self)}, {len(self.originals)} placeholders)"


@dataclass(slots=True)
class Outcome:
    payload: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)  # values replaced, by kind
    hits: list[dict[str, Any]] = field(default_factory=list)  # for the record's guardrails
    failed: bool = False


async def applicable(team_id: int | None, key_id: int | None, model: str) -> list[Rule]:
    """The redact rules whose scope covers the request."""
    return [r for r in await guardrails.applicable(team_id, key_id, model) if r.action == "redact"]


def redact(rules: Sequence[Rule], payload: dict[str, Any]) -> Outcome:
    """`payload` with what `rules` detect replaced. If a rule times out or redaction fails,
    the payload comes back as it was, `failed`, with an error hit naming the rule."""
    replacer = _Replacer(rules, payload)
    try:
        redacted = replacer.value(payload, False, 0)
    except Exception as exc:
        failing = [replacer.current] if replacer.current is not None else list(rules)
        # Never the exception's text: it may quote the request.
        logger.warning(
            "redaction.failed",
            extra={"rules": [r.name for r in failing], "reason": type(exc).__name__},
        )
        timed_out = isinstance(exc, TimeoutError)
        return Outcome(payload, hits=[_error_hit(r, timed_out) for r in failing], failed=True)
    if not replacer.values:
        return Outcome(payload)
    hits = [
        guardrails.Hit(rule.rule_id, rule.name, "redact", count).public()
        for rule, count in zip(rules, replacer.per_rule, strict=True)
        if count
    ]
    return Outcome(
        Redacted(redacted, {p: v for v, p in replacer.values.items()}), dict(replacer.counts), hits
    )


def _error_hit(rule: Rule, timed_out: bool) -> dict[str, Any]:
    hit: dict[str, Any] = {"rule": rule.name, "action": "redact", "error": True}
    if rule.rule_id is not None:
        hit["rule_id"] = rule.rule_id
    if timed_out:
        hit["timed_out"] = True
    return hit


def failure() -> GatewayError:
    return GatewayError(
        503,
        "service_unavailable",
        "The gateway could not redact this request as its content policy requires, so it was "
        "not sent; retry later or ask an administrator to check the redaction rules.",
        "redaction_failed",
    )


class _Replacer:
    """Walks a payload replacing what the rules find, numbering placeholders as it goes."""

    def __init__(self, rules: Sequence[Rule], payload: dict[str, Any]) -> None:
        self.rules = rules
        self.payload = payload
        self.values: dict[str, str] = {}  # value -> placeholder
        self.counts: Counter[str] = Counter()
        self.per_rule = [0] * len(rules)
        self.current: Rule | None = None  # the rule running, for a failure's record
        self._numbers: dict[str, int] = {}  # kind -> the last number given
        self._request_text: str | None = None

    def value(self, value: Any, text_key: bool, depth: int) -> Any:
        """`value` with its text replaced (itself when nothing was)."""
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, str):
            return self.text(value) if text_key else value
        if isinstance(value, list):
            return self._items(value, lambda item: self.value(item, text_key, depth + 1))
        if isinstance(value, dict):
            copy: dict[str, Any] | None = None
            for key, item in value.items():
                if key == "arguments" and isinstance(item, str):
                    new = self.json_text(item)
                elif key == "input" and isinstance(item, dict):
                    new = self.data(item, depth + 1)  # a tool call's arguments, as an object
                else:
                    new = self.value(item, key in _TEXT_KEYS, depth + 1)
                if new is not item:
                    copy = copy if copy is not None else dict(value)
                    copy[key] = new
            return value if copy is None else copy
        return value

    def _items(self, items: list[Any], each: Any) -> list[Any]:
        copy: list[Any] | None = None
        for at, item in enumerate(items):
            new = each(item)
            if new is not item:
                copy = copy if copy is not None else list(items)
                copy[at] = new
        return items if copy is None else copy

    def data(self, value: Any, depth: int) -> Any:
        """Tool-call arguments: every string and whole number in them is the model's to read."""
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            digits = str(value)
            found = self.text(digits)
            return value if found == digits else found
        if isinstance(value, list):
            return self._items(value, lambda item: self.data(item, depth + 1))
        if isinstance(value, dict):
            copy: dict[str, Any] | None = None
            for key, item in value.items():
                new = self.data(item, depth + 1)
                if new is not item:
                    copy = copy if copy is not None else dict(value)
                    copy[key] = new
            return value if copy is None else copy
        return value

    def json_text(self, text: str) -> str:
        """OpenAI tool-call arguments: JSON text, its values redacted (or, when it is not
        JSON, the text itself)."""
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self.text(text)
        redacted = self.data(parsed, 0)
        return text if redacted is parsed else orjson.dumps(redacted).decode()

    def text(self, text: str) -> str:
        found: list[tuple[int, int, str, int]] = []
        for number, rule in enumerate(self.rules):
            self.current = rule
            found += [(start, end, kind, number) for start, end, kind in rule.spans(text)]
        self.current = None
        if not found:
            return text
        parts: list[str] = []
        at = 0
        for start, end, kind, number in _without_overlaps(found):
            parts += (text[at:start], self._placeholder(text[start:end], kind))
            self.counts[kind] += 1
            self.per_rule[number] += 1
            at = end
        parts.append(text[at:])
        return "".join(parts)

    def _placeholder(self, value: str, kind: str) -> str:
        given = self.values.get(value)
        if given is not None:
            return given
        if self._request_text is None:
            self._request_text = orjson.dumps(self.payload).decode()
        number = self._numbers.get(kind, 0) + 1
        while f"[{kind}_{number}]" in self._request_text:
            number += 1
        self._numbers[kind] = number
        self.values[value] = placeholder = f"[{kind}_{number}]"
        return placeholder


def _without_overlaps(found: list[tuple[int, int, str, int]]) -> list[tuple[int, int, str, int]]:
    """In order of position: of spans that start together the longest, of spans that
    overlap the first (the earlier rule's when two are the same)."""
    found.sort(key=lambda span: (span[0], -span[1], span[3]))
    kept = []
    reached = 0
    for span in found:
        if span[0] >= reached:
            kept.append(span)
            reached = span[1]
    return kept


# --- putting the values back -------------------------------------------------------------


_MAYBE_PLACEHOLDER = re.compile(rb'\[[A-Z"\\]')


class Restorer:
    """The request's values back in place of their placeholders: a whole text at once
    (`whole`), or a stream's fragments (`feed`), where a fragment's tail that may be the
    start of a placeholder is held back until the next fragment of its block decides it.
    In JSON text (tool-call arguments) a value goes in JSON-escaped."""

    __slots__ = ("_held", "_longest", "_pattern", "_prefixes", "_values")

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values  # placeholder -> value
        self._pattern = re.compile("|".join(re.escape(p) for p in values))
        self._prefixes = frozenset(p[:cut] for p in values for cut in range(1, len(p)))
        self._longest = max(len(p) for p in values)
        self._held: dict[Hashable, str] = {}

    def whole(self, text: str, json_text: bool = False) -> str:
        if "[" not in text:
            return text
        values = self._values
        if json_text:
            return self._pattern.sub(lambda m: orjson.dumps(values[m[0]]).decode()[1:-1], text)
        return self._pattern.sub(lambda m: values[m[0]], text)

    def feed(self, block: Hashable, text: str, json_text: bool = False) -> str:
        held = self._held.pop(block, "")
        if held:
            text = held + text
        start = text.rfind("[")
        if start >= 0 and len(text) - start < self._longest and text[start:] in self._prefixes:
            self._held[block] = text[start:]
            text = text[:start]
        return self.whole(text, json_text)

    def flush(self, block: Hashable) -> str:
        return self._held.pop(block, "")

    def idle(self, event: bytes) -> bool:
        """Nothing held, and no placeholder (nor the start of one) can be in `event`'s text:
        a placeholder is "[" and a capital letter; a fragment may end with its "[" alone,
        before the string's closing quote. JSON's own brackets are followed by neither."""
        return not self._held and _MAYBE_PLACEHOLDER.search(event) is None


def restorer(payload: dict[str, Any]) -> Restorer | None:
    """What restores the answer to `payload`, if anything in it was redacted."""
    return Restorer(payload.originals) if isinstance(payload, Redacted) else None


def filters(payload: dict[str, Any]) -> list[TextFilter]:
    """The text filters a stream's answer to `payload` goes through (a new restorer for
    each stream: it holds state)."""
    found = restorer(payload)
    return [found] if found is not None else []


def body(payload: dict[str, Any], raw: bytes) -> bytes:
    """The request's bytes to pass through: the client's own, unless values were replaced."""
    return orjson.dumps(payload) if isinstance(payload, Redacted) else raw
