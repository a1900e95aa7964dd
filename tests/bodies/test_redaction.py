"""The redactor on its own: what each kind catches and leaves, JSON kept valid, and a cost
linear in the size of the body whatever its content."""

import json
import time
from collections import Counter

import pytest

from audit.redaction_pii import redact_json, redact_text, replace_secrets


def redacted(text: str) -> tuple[str, dict[str, int]]:
    counts: Counter[str] = Counter()
    return redact_text(text, counts), dict(counts)


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("mail bob.smith+tag@mail.example.co.uk now", "mail [EMAIL] now", "email"),
        ("card 4111 1111 1111 1111.", "card [CARD].", "card"),
        ("card 4242-4242-4242-4242", "card [CARD]", "card"),
        ("card 4012888888881881", "card [CARD]", "card"),
        ("amex 3782 822463 10005", "amex [CARD]", "card"),
        ("from 192.168.1.20, then", "from [IP], then", "ip"),
        ("from 2001:db8::8a2e:370:7334 then", "from [IP] then", "ip"),
        ("link fe80::1ff:fe23:4567:890a.", "link [IP].", "ip"),
        ("call +1 555 123 4567 now", "call [PHONE] now", "phone"),
        ("call +44 20 7946 0958", "call [PHONE]", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("call 555.123.4567", "call [PHONE]", "phone"),
        ("key sk-proj-abcdefghijklmnopqrstuv", "key [SECRET]", "secret"),
        ("Authorization: Bearer abc.def.ghijkl", "Authorization: [SECRET]", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]", "secret"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijk",
            "jwt [SECRET]",
            "secret",
        ),
    ],
)
def test_it_replaces_each_kind_by_its_tag(text: str, expected: str, kind: str) -> None:
    assert redacted(text) == (expected, {kind: 1})


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails the Luhn check
        "id 1712345678901 at 2024-01-15 12:30:45",  # a timestamp, a date, a time
        "version 1.2.3.4.5 and 999.1.1.1",
        "slice a[1::2] and ::1",
        "floats [0.4111111111111111, 0.0123456789012345]",
        "tz +0530, 42 items, 3.14159",
        "a task-based plan and a bearer of news",
    ],
)
def test_it_leaves_what_only_looks_like_personal_data(text: str) -> None:
    assert redacted(text) == (text, {})


def test_it_finds_values_right_after_a_json_escape() -> None:
    text = json.dumps(
        {"content": "Call me:\n+44 20 7946 0958\tor bob@example.com\n4111111111111111"}
    )

    out, counts = redacted(text)

    assert json.loads(out) == {"content": "Call me:\n[PHONE]\tor [EMAIL]\n[CARD]"}
    assert counts == {"phone": 1, "email": 1, "card": 1}


def test_a_card_number_given_as_a_json_number_becomes_a_json_string() -> None:
    out, _ = redacted('{"card": 4111111111111111, "n": 1}')

    assert json.loads(out) == {"card": "[CARD]", "n": 1}


def test_a_private_key_inside_a_json_string_ends_with_the_string() -> None:
    text = json.dumps({"key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B", "n": 1})

    out, counts = redacted(text)

    assert json.loads(out) == {"key": "[SECRET]", "n": 1}
    assert counts == {"secret": 1}


def test_it_redacts_json_values_under_secret_keys_and_inside_strings() -> None:
    counts: Counter[str] = Counter()

    out = redact_json({"password": "x", "author": "Ann", "to": ["ann@example.com"]}, counts)

    assert out == {"password": "[SECRET]", "author": "Ann", "to": ["[EMAIL]"]}
    assert counts == {"secret": 1, "email": 1}


PATHOLOGICAL = [
    "eyJ" * 90_000,
    "sk-" * 90_000,
    "4" * 270_000,
    "a@" * 135_000,
    "1:" * 135_000,
    "+1 " * 90_000,
    "1." * 135_000,
    ("a" * 60 + "@b.cc ") * 4_000,
    "-----BEGIN RSA PRIVATE KEY-----" * 8_000,
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=lambda text: repr(text[:6]))
def test_it_stays_linear_on_inputs_that_make_naive_patterns_backtrack(text: str) -> None:
    # About 260 KB each: linear work takes tens of milliseconds; the quadratic work of a
    # naive pattern (what SECRET_VALUE.sub alone does to "eyJ" * n) takes minutes.
    started = time.perf_counter()
    redact_text(text, Counter())
    replace_secrets(text, "[REDACTED]")

    assert time.perf_counter() - started < 3.0
