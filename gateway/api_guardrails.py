"""`/api/guardrails`: the content policy (gateway/guardrails.py) — rules, the presets, and a
test bench that shows which rules fire on a text.

Rules are installation configuration, read with `settings:read` and changed with
`settings:update` (the console's Guardrails page asks the same).
"""

from datetime import datetime
from typing import Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.responses import Status

from gateway import guardrails
from gateway.models import GuardrailRule
from thinkwatch.edits import apply_edits
from thinkwatch.guard import needs

router = Router(tags=["guardrails"])

Kind = Literal["phrases", "regex", "detector"]
Applies = Literal["input", "output", "both"]
Action = Literal["block", "warn", "log", "redact"]
Preset = Literal["", "prompt_injection", "secrets", "pii"]
# Redact rules (gateway/redaction.py).
PLACEHOLDER = r"^([A-Z][A-Z0-9_]{0,31})?$"
PLACEHOLDER_HELP = (
    "Redact rules: the kind named in the placeholders of what a phrase or regex rule matches "
    "(upper-case letters, digits, underscores: NATIONAL_ID gives [NATIONAL_ID_1]); empty: "
    "from the rule's name. Detectors name their own kinds (EMAIL, PHONE, CARD, IP, SECRET)."
)
FAIL_CLOSED_HELP = (
    "Redact rules: refuse the request (503 redaction_failed) when redaction fails, instead "
    "of sending it unredacted."
)


class RuleOut(Schema):
    id: int
    name: str
    enabled: bool
    preset: str
    kind: str
    patterns: list[str]
    case_sensitive: bool
    applies: str
    action: str
    placeholder: str
    fail_closed: bool
    team_id: int | None
    api_key_id: int | None
    model_pattern: str
    created_at: datetime
    updated_at: datetime


class RuleIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    enabled: bool = True
    preset: Preset = Field("", description="A built-in rule; kind and patterns are then ignored.")
    kind: Kind = "phrases"
    patterns: list[str] = Field(default_factory=list, max_length=1000)
    case_sensitive: bool = False
    applies: Applies = "input"
    action: Action = "block"
    placeholder: str = Field("", pattern=PLACEHOLDER, description=PLACEHOLDER_HELP)
    fail_closed: bool = Field(True, description=FAIL_CLOSED_HELP)
    team_id: int | None = None
    api_key_id: int | None = None
    model_pattern: str = Field("", max_length=200)


class RulePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = None
    preset: Preset | None = None
    kind: Kind | None = None
    patterns: list[str] | None = Field(None, max_length=1000)
    case_sensitive: bool | None = None
    applies: Applies | None = None
    action: Action | None = None
    placeholder: str | None = Field(None, pattern=PLACEHOLDER, description=PLACEHOLDER_HELP)
    fail_closed: bool | None = Field(None, description=FAIL_CLOSED_HELP)
    team_id: int | None = None
    api_key_id: int | None = None
    model_pattern: str | None = Field(None, max_length=200)


class PresetOut(Schema):
    slug: str
    name: str
    kind: str
    patterns: list[str]
    applies: str
    action: str
    description: str


class TestIn(Schema):
    text: str = Field(..., max_length=guardrails.MAX_TRIAL_CHARS)
    direction: Literal["input", "output"] = "input"


class TestOut(Schema):
    hits: list[dict[str, object]]
    blocked_by: str | None


@router.get("", response=list[RuleOut])
@needs("settings:read")
def list_rules(request: HttpRequest) -> list[GuardrailRule]:
    return list(GuardrailRule.objects.all())


@router.post("", response={201: RuleOut})
@needs("settings:update")
def create_rule(request: HttpRequest, payload: RuleIn) -> Status[GuardrailRule]:
    return Status(201, apply_edits(GuardrailRule(), payload.dict()))


@router.get("/presets", response=list[PresetOut])
@needs("settings:read")
def list_presets(request: HttpRequest) -> list[guardrails.Preset]:
    return list(guardrails.PRESETS.values())


@router.post("/test", response=TestOut)
@needs("settings:read")
def test_text(request: HttpRequest, payload: TestIn) -> dict[str, object]:
    """Which enabled rules fire on `text` (whatever their scope), as the gateway would
    record them: rule, action, count — never the matched text."""
    return guardrails.trial(payload.text, payload.direction).public()


@router.get("/{rule_id}", response=RuleOut)
@needs("settings:read")
def get_rule(request: HttpRequest, rule_id: int) -> GuardrailRule:
    return get_object_or_404(GuardrailRule, pk=rule_id)


@router.patch("/{rule_id}", response=RuleOut)
@needs("settings:update")
def update_rule(request: HttpRequest, rule_id: int, payload: RulePatch) -> GuardrailRule:
    rule = get_object_or_404(GuardrailRule, pk=rule_id)
    return apply_edits(rule, payload.dict(exclude_unset=True))


@router.delete("/{rule_id}", response={204: None})
@needs("settings:update")
def delete_rule(request: HttpRequest, rule_id: int) -> Status[None]:
    get_object_or_404(GuardrailRule, pk=rule_id).delete()
    return Status(204, None)
