"""Personal data and secrets taken out of captured bodies before they are written anywhere.

Found and replaced by a tag, counted per kind, never kept: e-mail addresses (`[EMAIL]`),
phone numbers (`[PHONE]`), payment card numbers that pass the Luhn check (`[CARD]`), IPv4
and IPv6 addresses (`[IP]`), and secrets in well-known formats (`[SECRET]`: gateway and
provider keys, AWS key ids, GitHub and Slack tokens, Google API keys, JWTs, PEM private
keys, bearer tokens).

Most bodies are JSON text, so a value may follow an escape such as `\\n` (a new line inside
a string): the escape's letter is not taken as part of the value, and no replacement
consumes a backslash or a quote, so JSON stays JSON (a card number given as a bare JSON
number becomes the string "[CARD]").

Speed is what decides the shape of this module: it runs on the gateway's event loop for
every captured body. One regular expression with every pattern as an alternative is tried
at each character and costs about a microsecond per byte; here each kind is found from an
anchor the regex engine can skip to (an `@`, a colon, a digit, a literal prefix) and judged
in Python on the candidate alone (Luhn, IPv6 syntax, a phone number's digit count). Every
pattern's repetitions are bounded and a candidate can start only at the start of a run of
its characters, so the cost is linear in the size of the body. Long texts are scanned in
windows, so that a thread redacting a large body lets the event loop run in between.
"""

import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

# Well-known secret formats (mcpgw/records.py uses them for MCP arguments too). A PEM key
# ends at its END line, at the quote closing the JSON string that holds it, or at the end.
SECRET_VALUE = re.compile(
    r"(tw-[0-9a-f]{16,}|sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|"
    r"gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|"
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|"
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|(?=\")|$)|"
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)

# Keys whose values are secret whatever they look like (in JSON: MCP arguments and results).
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth(?!or)|credential|cookie|session|"
    r"private[-_]?key|signature|bearer",
    re.IGNORECASE,
)

TAGS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "ip": "[IP]",
    "secret": "[SECRET]",
}

Span = tuple[int, int, str]  # start, end, kind

WINDOW = 16 * 1024
_ESCAPES = frozenset("nrtbf")
_HEX = frozenset("0123456789abcdefABCDEF")
_TOKEN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_LOCAL = _TOKEN | frozenset(".%+")
_IPV6 = _HEX | frozenset(":")

# Where each secret format's literal marker sits relative to the token's first character.
_SECRET_MARKERS = {
    "tw-": 0,
    "sk-": 0,
    "AKIA": 0,
    "ghp_": 0,
    "gho_": 0,
    "ghu_": 0,
    "ghs_": 0,
    "ghr_": 0,
    "xoxa-": 0,
    "xoxb-": 0,
    "xoxp-": 0,
    "xoxr-": 0,
    "AIza": 0,
    "eyJ": 0,
    "-----BEGIN ": 0,
    "earer": -1,  # Bearer, bearer
    "EARER": -1,
}
_DOMAIN = re.compile(r"@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])")
_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
# Numbers, found from their first character (which the engine skips to); the lookbehinds
# then check the character before it: not a word character or a dot (inside a longer
# number, a word or a decimal fraction), except the letter of a JSON escape. The groups
# continue from that first character.
_NUMBER = re.compile(
    r"[\d+(](?:(?<![\\\w.].)|(?<=\\[nrtbf].)|(?<=\\u[0-9A-Fa-f]{4}.))(?:"
    r"(?P<card>(?<=[2-6])(?:\d{12,18}|\d{3}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?)"
    r"|(?<=3)\d{3}[ -]\d{6}[ -]\d{5})"
    r"|(?P<ipv4>(?<=\d)\d{0,2}(?:\.\d{1,3}){3})"
    r"|(?P<intl>(?<=\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,4}[ .-]?\d{2,4})"
    r"|(?P<phone>(?<=\()\d{3}\) ?\d{3}[ .-]\d{4}|(?<=\d)\d{2}[ .-]\d{3}[ .-]\d{4})"
    r")(?![\w]|\.\d)"
)
_WINDOW_END = re.compile(r"[,\"\n}\];]")


def luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _value_start(text: str, start: int) -> int:
    """`start` moved past the letters of a JSON escape the run began with (`\\n`, `\\u00e9`)."""
    if start == 0 or text[start - 1] != "\\":
        return start
    if text[start] == "u" and all(c in _HEX for c in text[start + 1 : start + 5]):
        return start + 5
    return start + 1 if text[start] in _ESCAPES else start


def _free_before(text: str, start: int, run: frozenset[str]) -> bool:
    """Whether a value may begin at `start`: not inside a run of `run` characters, or
    right after a JSON escape."""
    if start == 0:
        return True
    before = text[start - 1]
    if before not in run and before != "\\":
        return True
    if start >= 2 and text[start - 2] == "\\" and before in _ESCAPES:
        return True
    return start >= 6 and text[start - 6] == "\\" and text[start - 5] == "u"


def _windows(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) pieces of about WINDOW characters, each ending before a character no
    number pattern spans."""
    start, size = 0, len(text)
    while start < size:
        end = start + WINDOW
        if end >= size:
            yield start, size
            return
        found = _WINDOW_END.search(text, end)
        end = found.start() if found else size
        yield start, end
        start = end


# --- the kinds -------------------------------------------------------------------------


def _secrets(text: str) -> Iterator[Span]:
    for marker, offset in _SECRET_MARKERS.items():
        at = text.find(marker)
        while at >= 0:
            start = at + offset
            if start >= 0 and _free_before(text, start, _TOKEN):
                found = SECRET_VALUE.match(text, start)
                if found:
                    yield start, found.end(), "secret"
            at = text.find(marker, at + 1)


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for found in _DOMAIN.finditer(text):
        at = found.start()
        start, limit = at, max(0, at - 64)
        while start > limit and text[start - 1] in _LOCAL:
            start -= 1
        start = _value_start(text, start)
        if start < at:
            yield start, found.end(), "email"


def _ipv6(text: str) -> Iterator[Span]:
    """Each run of hex digits, colons and dots that holds `:x:` or `::`, judged whole: a
    run is walked once, however many colon pairs it holds."""
    reached = 0
    for found in _COLONS.finditer(text):
        if found.start() < reached:
            continue
        start = found.start()
        while start > reached and text[start - 1] in _IPV6 and found.start() - start <= 40:
            start -= 1
        end = _IPV6_RUN.match(text, found.start()).end()  # type: ignore[union-attr]
        reached = end
        while end > start and text[end - 1] == ".":
            end -= 1
        if end - start > 45 or (start > 0 and text[start - 1] in _IPV6):
            continue  # longer than any address
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            continue
        if _free_before(text, start, _TOKEN | frozenset(":.")) and _is_ipv6(text[start:end]):
            yield start, end, "ip"


def _is_ipv6(candidate: str) -> bool:
    """A real IPv6 address with two groups or more: not a time (12:30:45), a MAC address,
    or a slice in code (`a[1::2]`)."""
    if len(candidate) < 6 or sum(1 for group in candidate.split(":") if group) < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _numbers(text: str) -> Iterator[Span]:
    for window_start, window_end in _windows(text):
        for found in _NUMBER.finditer(text, window_start, window_end):
            kind = _number_kind(found)
            if kind is not None:
                yield found.start(), found.end(), kind


def _number_kind(found: re.Match[str]) -> str | None:
    kind, value = found.lastgroup, found.group()
    if kind == "card":
        return "card" if luhn(value.replace(" ", "").replace("-", "")) else None
    if kind == "ipv4":
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return None
        return "ip"
    if kind == "intl":
        return "phone" if 8 <= sum(c.isdigit() for c in value) <= 15 else None
    return "phone"


def _json_number(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a bare number in JSON (`"n": 4111...,`)."""
    before = text[max(0, start - 8) : start].rstrip()
    after = text[end : end + 8].lstrip()
    return before[-1:] in (":", ",", "[") and after[:1] in (",", "]", "}")


# --- redaction -------------------------------------------------------------------------


def _without_overlaps(found: list[Span]) -> list[Span]:
    """In order, the longer of two that start together, the first of two that overlap."""
    found.sort(key=lambda span: (span[0], -span[1]))
    kept: list[Span] = []
    reached = 0
    for span in found:
        if span[0] >= reached:
            kept.append(span)
            reached = span[1]
    return kept


def spans(text: str) -> list[Span]:
    """What to replace in `text`, in order, without overlaps."""
    return _without_overlaps([*_secrets(text), *_emails(text), *_ipv6(text), *_numbers(text)])


def _replace(text: str, found: list[Span], tag_of: dict[str, str], counts: Counter[str]) -> str:
    if not found:
        return text
    parts: list[str] = []
    at = 0
    for start, end, kind in found:
        parts.append(text[at:start])
        tag = tag_of[kind]
        if kind == "card" and _json_number(text, start, end):
            tag = f'"{tag}"'
        parts.append(tag)
        counts[kind] += 1
        at = end
    parts.append(text[at:])
    return "".join(parts)


def redact_text(text: str, counts: Counter[str]) -> str:
    """`text` with personal data and secrets replaced by their tags; each replacement is
    counted in `counts` by kind."""
    return _replace(text, spans(text), TAGS, counts)


def replace_secrets(text: str, tag: str) -> str:
    """`text` with only the secrets in well-known formats replaced, by `tag`: what is
    always done to MCP arguments, capture or not. (`SECRET_VALUE.sub` does the same but
    is quadratic on some inputs, such as a long run of "eyJ".)"""
    return _replace(text, _without_overlaps(list(_secrets(text))), {"secret": tag}, Counter())


def redact_json(value: Any, counts: Counter[str], depth: int = 0) -> Any:
    """A copy of a JSON value with every string redacted, and the values under secret-
    sounding keys replaced whatever they are."""
    if depth > 20:
        return TAGS["secret"]
    if isinstance(value, dict):
        copy = {}
        for key, item in value.items():
            if SECRET_KEY.search(str(key)) and item not in (None, "", [], {}):
                counts["secret"] += 1
                copy[key] = TAGS["secret"]
            else:
                copy[key] = redact_json(item, counts, depth + 1)
        return copy
    if isinstance(value, list):
        return [redact_json(item, counts, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value, counts)
    return value
