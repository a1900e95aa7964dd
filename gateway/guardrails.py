"""Content policy: rules that match text going to a model (input) or coming back (output).

A rule matches by a list of phrases, by a regular expression, or by one of the built-in
detectors (secrets in well-known formats and high-entropy strings; personal data: e-mail
addresses, phone numbers, Luhn-checked card numbers, IP addresses — audit/redaction_pii.py
finds them). Its action is `block` (refuse the request), `warn` (let it pass, flagged),
`log` (only recorded) or `redact` (what it matches is replaced by placeholders before the
request leaves the gateway and put back in the answer: gateway/redaction.py; not a
screening action, it never refuses a request).

Patterns are compiled once, when the rules are loaded, with the `regex` module, whose
matching takes a timeout: a pathological expression (catastrophic backtracking on a crafted
input) gives up after `TIMEOUT_SECONDS` instead of holding the event loop. A rule that
timed out is reported as such and does not count as a match (the request is not refused by
a rule that could not decide; the record says it timed out, and an admin can fix it).

A hit never carries the text that matched: it may be the very secret the rule is there to
keep out of logs. It names the rule and counts the matches.
"""

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

import regex

from audit import redaction_pii
from thinkwatch.lib.db import off_loop
from thinkwatch.lib.snapshot import Snapshot

if TYPE_CHECKING:
    from gateway.models import GuardrailRule

logger = logging.getLogger(__name__)

Action = Literal["block", "warn", "log", "redact"]
Direction = Literal["input", "output"]
ACTIONS: tuple[Action, ...] = ("block", "warn", "log", "redact")
APPLIES = ("input", "output", "both")
KINDS = ("phrases", "regex", "detector")
DETECTORS = ("secrets", "pii")

TIMEOUT_SECONDS = 0.05  # per rule and text
MAX_PATTERN_LENGTH = 2000
_SEVERITY = {"block": 2, "warn": 1, "log": 0, "redact": 0}
# Redact rules: the kind a placeholder names ([EMAIL_1]) for what each detector finds.
DETECTED_KINDS = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "ip": "IP",
    "secret": "SECRET",
}
LABEL = regex.compile(r"[A-Z][A-Z0-9_]{0,31}")
Span = tuple[int, int, str]  # start, end, the kind a placeholder names

# High-entropy strings: long runs of key-like characters whose Shannon entropy per
# character is that of random data (a UUID or a hash is caught too: they are secrets often
# enough, and a rule that warns is the usual way to use this detector).
_TOKEN_RUN = regex.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{32,}(?![A-Za-z0-9+/=_-])")
_ENTROPY_BITS = 4.0


class InvalidRule(ValueError):
    """A rule that cannot be compiled: the message says why, for the console and the API."""


@dataclass(frozen=True, slots=True)
class Hit:
    rule_id: int | None
    rule: str
    action: Action
    count: int
    timed_out: bool = False

    def public(self) -> dict[str, Any]:
        found: dict[str, Any] = {"rule": self.rule, "action": self.action, "count": self.count}
        if self.rule_id is not None:
            found["rule_id"] = self.rule_id
        if self.timed_out:
            found["timed_out"] = True
        return found


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule. `applies` is input, output or both."""

    name: str
    kind: str
    patterns: tuple[str, ...]
    applies: str
    action: Action
    rule_id: int | None = None
    case_sensitive: bool = False
    _compiled: Any = field(default=None, repr=False, compare=False)
    # Redact rules: the kind named in placeholders of what a phrase or regex rule matches,
    # and whether a failure to redact refuses the request (gateway/redaction.py).
    label: str = ""
    fail_closed: bool = True

    @classmethod
    def build(
        cls,
        name: str,
        kind: str,
        patterns: Iterable[str],
        applies: str = "input",
        action: str = "block",
        rule_id: int | None = None,
        case_sensitive: bool = False,
    ) -> "Rule":
        patterns = tuple(p for p in patterns if p)
        if kind not in KINDS:
            raise InvalidRule(f"kind must be one of {', '.join(KINDS)}")
        if applies not in APPLIES:
            raise InvalidRule(f"applies must be one of {', '.join(APPLIES)}")
        if action not in ACTIONS:
            raise InvalidRule(f"action must be one of {', '.join(ACTIONS)}")
        if not patterns:
            raise InvalidRule("a rule needs at least one phrase, pattern or detector")
        if action == "redact" and applies == "output":
            raise InvalidRule(
                "a redact rule applies to input or both: what it replaces in the request is "
                "put back in the answer"
            )
        compiled = _compile(kind, patterns, case_sensitive)
        rule = cls(name, kind, patterns, applies, action, rule_id, case_sensitive, compiled)
        return rule.redacting("", True) if action == "redact" else rule

    def redacting(self, placeholder: str, fail_closed: bool) -> "Rule":
        """This redact rule with its placeholder kind (`placeholder` when it is a valid
        one, else derived from the rule's name) and its failure mode."""
        label = placeholder if LABEL.fullmatch(placeholder) else label_of(self.name)
        return replace(self, label=label, fail_closed=fail_closed)

    def applies_to(self, direction: Direction) -> bool:
        return self.applies in (direction, "both")

    def count(self, text: str) -> int:
        """How many times the rule matches `text`; raises TimeoutError past the bound."""
        if self.kind == "detector":
            return sum(_detect(name, text) for name in self.patterns)
        return sum(1 for _ in self._compiled.finditer(text, timeout=TIMEOUT_SECONDS))

    def spans(self, text: str) -> list[Span]:
        """Where the rule matches `text`, each with the kind a placeholder names (overlaps
        possible); raises TimeoutError past the bound."""
        if self.kind != "detector":
            return [
                (m.start(), m.end(), self.label)
                for m in self._compiled.finditer(text, timeout=TIMEOUT_SECONDS)
                if m.end() > m.start()
            ]
        found: list[Span] = []
        for name in self.patterns:
            found += _detected_spans(name, text)
        return found


def label_of(name: str) -> str:
    """A placeholder kind made from a rule's name: "National ID" gives NATIONAL_ID."""
    label = regex.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")[:32].rstrip("_")
    if not label or not label[0].isalpha():
        label = ("R_" + label)[:32].rstrip("_") if label else "REDACTED"
    return label


def _detected_spans(name: str, text: str) -> list[Span]:
    found = redaction_pii.spans(text)
    if name == "pii":
        return [
            (start, end, DETECTED_KINDS[kind]) for start, end, kind in found if kind != "secret"
        ]
    spans = [(start, end, DETECTED_KINDS[kind]) for start, end, kind in found if kind == "secret"]
    for match in _TOKEN_RUN.finditer(text, timeout=TIMEOUT_SECONDS):
        if _entropy(match.group()) >= _ENTROPY_BITS and not redaction_pii.SECRET_VALUE.search(
            match.group()
        ):
            spans.append((match.start(), match.end(), DETECTED_KINDS["secret"]))
    return spans


def _compile(kind: str, patterns: tuple[str, ...], case_sensitive: bool) -> Any:
    flags = 0 if case_sensitive else regex.IGNORECASE
    if kind == "detector":
        unknown = sorted(set(patterns) - set(DETECTORS))
        if unknown:
            raise InvalidRule(f"unknown detector {unknown[0]!r}; known: {', '.join(DETECTORS)}")
        return None
    if kind == "phrases":
        # Words of a phrase match across any run of white space; whole words only.
        alternatives = [
            r"\s+".join(regex.escape(word) for word in phrase.split()) for phrase in patterns
        ]
        expression = r"(?<!\w)(?:" + "|".join(a for a in alternatives if a) + r")(?!\w)"
        return regex.compile(expression, flags)
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise InvalidRule(f"a pattern may be at most {MAX_PATTERN_LENGTH} characters")
    try:
        return regex.compile("|".join(f"(?:{p})" for p in patterns), flags)
    except regex.error as exc:
        raise InvalidRule(f"not a valid regular expression: {exc}") from None


def _detect(name: str, text: str) -> int:
    if name == "pii":
        return sum(1 for _, _, kind in redaction_pii.spans(text) if kind != "secret")
    found = sum(1 for _, _, kind in redaction_pii.spans(text) if kind == "secret")
    for match in _TOKEN_RUN.finditer(text, timeout=TIMEOUT_SECONDS):
        if _entropy(match.group()) >= _ENTROPY_BITS and not redaction_pii.SECRET_VALUE.search(
            match.group()
        ):
            found += 1
    return found


def _entropy(value: str) -> float:
    counts = Counter(value)
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


def evaluate(rules: Iterable[Rule], text: str, direction: Direction) -> list[Hit]:
    """Every rule that fires on `text`, most severe action first."""
    hits = []
    for rule in rules:
        if not rule.applies_to(direction):
            continue
        try:
            count = rule.count(text)
        except TimeoutError:
            hits.append(Hit(rule.rule_id, rule.name, rule.action, 0, timed_out=True))
            continue
        if count:
            hits.append(Hit(rule.rule_id, rule.name, rule.action, count))
    hits.sort(key=lambda hit: (hit.timed_out, -_SEVERITY[hit.action]))
    return hits


def blocking(hits: Iterable[Hit]) -> Hit | None:
    """The first hit that refuses the request."""
    return next((h for h in hits if h.action == "block" and not h.timed_out), None)


# --- presets an admin can switch on ----------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    slug: str
    name: str
    kind: str
    patterns: tuple[str, ...]
    applies: str
    action: Action
    description: str


PRESETS = {
    preset.slug: preset
    for preset in (
        Preset(
            "prompt_injection",
            "Prompt injection phrasings",
            "phrases",
            (
                "ignore previous instructions",
                "ignore all previous instructions",
                "ignore the above instructions",
                "disregard previous instructions",
                "disregard all prior instructions",
                "forget your instructions",
                "forget all previous instructions",
                "you are now DAN",
                "do anything now",
                "developer mode enabled",
                "reveal your system prompt",
                "print your system prompt",
                "repeat the text above",
                "override your safety guidelines",
            ),
            "input",
            "block",
            "Common phrasings that try to make a model drop its instructions.",
        ),
        Preset(
            "secrets",
            "Secrets and keys",
            "detector",
            ("secrets",),
            "both",
            "block",
            "Cloud and provider keys, tokens of well-known formats, private keys, and "
            "long high-entropy strings.",
        ),
        Preset(
            "pii",
            "Personal data",
            "detector",
            ("pii",),
            "input",
            "warn",
            "E-mail addresses, phone numbers, card numbers (Luhn-checked), IP addresses.",
        ),
    )
}


def preset_rule(
    slug: str,
    action: str | None = None,
    rule_id: int | None = None,
    applies: str | None = None,
    name: str | None = None,
) -> Rule:
    preset = PRESETS[slug]
    return Rule.build(
        name or preset.name,
        preset.kind,
        preset.patterns,
        applies or preset.applies,
        action or preset.action,
        rule_id,
    )


# --- the rules in force, and which apply to a request -----------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a piece of gateway policy applies (a rule, a cache policy): all that are set of
    team, key and model pattern must match the request."""

    team_id: int | None
    key_id: int | None
    model_pattern: str

    def covers(self, team_id: int | None, key_id: int | None, model: str) -> bool:
        if self.team_id is not None and self.team_id != team_id:
            return False
        if self.key_id is not None and self.key_id != key_id:
            return False
        return not self.model_pattern or fnmatchcase(model, self.model_pattern)


@dataclass(frozen=True, slots=True)
class Scoped(Scope):
    rule: Rule


def load_rules() -> tuple[Scoped, ...]:
    """The enabled rules, compiled (a rule that no longer compiles is left out, logged)."""
    from gateway.models import GuardrailRule

    found = []
    for row in GuardrailRule.objects.filter(enabled=True).order_by("pk"):
        try:
            rule = row.compiled()
        except InvalidRule as exc:
            logger.error("guardrail.invalid_rule", extra={"rule": row.name, "reason": str(exc)})
            continue
        found.append(Scoped(row.team_id, row.api_key_id, row.model_pattern, rule))
    return tuple(found)


rules: Snapshot[tuple[Scoped, ...]] = Snapshot(off_loop(load_rules))


async def applicable(team_id: int | None, key_id: int | None, model: str) -> list[Rule]:
    return [s.rule for s in await rules.get() if s.covers(team_id, key_id, model)]


# --- the test bench ----------------------------------------------------------------------------

MAX_TRIAL_CHARS = 1_000_000


@dataclass(frozen=True, slots=True)
class Trial:
    """What every enabled rule, whatever its scope, does with a text: the answer of the test
    bench (the console's "Test rules" page and `POST /api/guardrails/test`). Like a gateway
    record, it names rules and counts matches, never holds what matched."""

    direction: Direction
    rules: tuple[Scoped, ...]
    hits: tuple[Hit, ...]
    # Enabled rules that no longer compile, which the gateway leaves out: (rule, why).
    skipped: tuple[tuple["GuardrailRule", str], ...]

    @property
    def blocked_by(self) -> Hit | None:
        return blocking(self.hits)

    def hit_of(self, rule: Rule) -> Hit | None:
        return next((h for h in self.hits if h.rule_id == rule.rule_id), None)

    def public(self) -> dict[str, Any]:
        blocked = self.blocked_by
        return {
            "hits": [h.public() for h in self.hits],
            "blocked_by": blocked.rule if blocked else None,
        }


def trial(text: str, direction: Direction) -> Trial:
    """Every enabled rule on `text`, as the gateway evaluates them. Reads the table: for the
    console and the management API, never for the gateway's request path."""
    from gateway.models import GuardrailRule

    loaded = load_rules()
    hits = evaluate((scoped.rule for scoped in loaded), text, direction)
    in_force = [scoped.rule.rule_id for scoped in loaded if scoped.rule.rule_id is not None]
    skipped = []
    for row in GuardrailRule.objects.filter(enabled=True).exclude(pk__in=in_force).order_by("pk"):
        try:
            row.compiled()
        except InvalidRule as exc:
            skipped.append((row, str(exc)))
    return Trial(direction, loaded, tuple(hits), tuple(skipped))


# The request fields that hold text a model reads, in every ingress format (OpenAI Chat and
# Responses, Anthropic Messages): message content and its text parts, system prompts and
# instructions, tool-call arguments.
_TEXT_KEYS = frozenset(
    {"content", "text", "system", "input", "instructions", "arguments", "prompt", "input_text"}
)


def texts(value: Any, text_key: bool = False, depth: int = 0) -> list[str]:
    """The strings of a request body a model would read: values of the text keys, and the
    strings of lists held by them (not an image's URL or a part's type)."""
    if depth > 32:
        return []
    if isinstance(value, str):
        return [value] if text_key else []
    if isinstance(value, list):
        return [t for item in value for t in texts(item, text_key, depth + 1)]
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            found += texts(item, key in _TEXT_KEYS, depth + 1)
        return found
    return []
