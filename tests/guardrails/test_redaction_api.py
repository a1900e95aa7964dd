"""Redact rules through `/api/guardrails`: the placeholder kind and the failure mode, and
what a redact rule may not be."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from gateway import guardrails
from gateway.models import GuardrailRule
from tests.factories import make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(alice: User) -> Client:
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_creates_a_redact_rule_with_its_placeholder_and_failure_mode(api: Client) -> None:
    response = api.post(
        "/api/guardrails",
        {
            "name": "US SSN",
            "kind": "regex",
            "patterns": [r"\b\d{3}-\d{2}-\d{4}\b"],
            "action": "redact",
            "placeholder": "NATIONAL_ID",
            "fail_closed": False,
        },
        content_type="application/json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["action"], body["placeholder"], body["fail_closed"]) == (
        "redact",
        "NATIONAL_ID",
        False,
    )
    [scoped] = guardrails.load_rules()
    assert (scoped.rule.label, scoped.rule.fail_closed) == ("NATIONAL_ID", False)


def test_a_redact_rule_fails_closed_unless_told_otherwise(api: Client) -> None:
    response = api.post(
        "/api/guardrails",
        {"name": "pii", "preset": "pii", "action": "redact"},
        content_type="application/json",
    )

    assert response.json()["fail_closed"] is True


@pytest.mark.parametrize("placeholder", ["national id", "lower", "1ST", "A" * 33, "[EMAIL]"])
def test_it_refuses_a_placeholder_that_is_not_an_upper_case_name(
    api: Client, placeholder: str
) -> None:
    response = api.post(
        "/api/guardrails",
        {
            "name": "ids",
            "kind": "regex",
            "patterns": ["x"],
            "action": "redact",
            "placeholder": placeholder,
        },
        content_type="application/json",
    )

    assert response.status_code == 422
    assert not GuardrailRule.objects.exists()


def test_it_refuses_a_redact_rule_on_output_alone(api: Client) -> None:
    response = api.post(
        "/api/guardrails",
        {"name": "pii", "preset": "pii", "action": "redact", "applies": "output"},
        content_type="application/json",
    )

    assert response.status_code == 422
    assert "input or both" in response.content.decode()


def test_it_changes_a_rule_to_redact(api: Client) -> None:
    rule = GuardrailRule.objects.create(name="tickets", kind="regex", patterns=[r"T-\d+"])

    response = api.patch(
        f"/api/guardrails/{rule.pk}",
        {"action": "redact", "placeholder": "TICKET"},
        content_type="application/json",
    )

    assert response.status_code == 200
    assert [s.rule.label for s in guardrails.load_rules()] == ["TICKET"]


def test_the_test_bench_shows_a_redact_rule_firing_without_blocking(api: Client) -> None:
    GuardrailRule.objects.create(name="pii", preset="pii", action="redact")

    body = api.post(
        "/api/guardrails/test", {"text": "mail jane@example.com"}, content_type="application/json"
    ).json()

    assert body["blocked_by"] is None
    assert [(h["rule"], h["action"], h["count"]) for h in body["hits"]] == [("pii", "redact", 1)]


@pytest.mark.django_db
def test_the_console_form_validates_a_redact_rules_placeholder_and_direction() -> None:
    from django.core.exceptions import ValidationError

    def rule(**fields: object) -> GuardrailRule:
        given = {"name": "ids", "kind": "regex", "patterns": [r"\d{3}-\d{2}-\d{4}"]}
        return GuardrailRule(action="redact", **{**given, **fields})

    with pytest.raises(ValidationError) as bad_label:
        rule(placeholder="national id").full_clean()
    with pytest.raises(ValidationError) as output_only:
        rule(applies="output").full_clean()
    good = rule(placeholder="NATIONAL_ID", fail_closed=False)
    good.full_clean()

    assert "placeholder" in bad_label.value.message_dict
    assert "applies" in output_only.value.message_dict
    compiled = good.compiled()
    assert (compiled.label, compiled.fail_closed) == ("NATIONAL_ID", False)
