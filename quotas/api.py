"""`/api/limits/...`: rate-limit rules, budgets, usage, resets."""

import time
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import orjson
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from accounts.models import ApiKey, Role, Team
from providers.models import Provider
from quotas import logic, scope
from quotas.cache import load_quota_table
from quotas.counters import MemoryCounters, RedisCounters
from quotas.models import Budget, RateLimitRule, Window
from thinkwatch.edits import apply_edits
from thinkwatch.guard import require

router = Router(tags=["limits"])

SubjectKindName = Literal["role", "user", "api_key", "team", "provider", "model", "mcp_server"]
WindowName = Literal["1m", "5m", "1h", "5h", "1d", "1w"]
_WINDOWS = {w.label: w.value for w in Window}
_EXISTS: dict[str, type[Any]] = {
    "role": Role,
    "user": get_user_model(),
    "api_key": ApiKey,
    "team": Team,
    "provider": Provider,
}


class Subject(Schema):
    subject_kind: SubjectKindName
    subject_id: str = Field(..., min_length=1, max_length=200)


class RuleOut(Schema):
    id: int
    subject_kind: str
    subject_id: str
    label: str
    surface: str
    metric: str
    window: str
    limit: int
    enabled: bool
    expires_at: datetime | None
    reason: str
    created_at: datetime

    @staticmethod
    def resolve_window(rule: RateLimitRule) -> str:
        return Window(rule.window).label


class RuleFields(Schema):
    surface: Literal["ai_gateway", "mcp_gateway"] = "ai_gateway"
    metric: Literal["requests", "tokens"] = "requests"
    window: WindowName = Field(
        ..., description="One of 1m, 5m, 1h, 5h, 1d, 1w (60 rolling buckets each)."
    )
    limit: int = Field(..., ge=1)
    enabled: bool = True
    expires_at: datetime | None = Field(
        None, description="A temporary rule (at most 90 days ahead)."
    )
    reason: str = Field("", max_length=500)


class RuleIn(Subject, RuleFields):
    pass


class RulePatch(Schema):
    limit: int | None = Field(None, ge=1)
    enabled: bool | None = None
    expires_at: datetime | None = None
    reason: str | None = Field(None, max_length=500)


class BudgetOut(Schema):
    id: int
    subject_kind: str
    subject_id: str
    label: str
    period: str
    unit: str
    limit: Decimal
    enabled: bool
    expires_at: datetime | None
    reason: str
    alert_webhook_url: str
    created_at: datetime


class BudgetFields(Schema):
    period: Literal["day", "week", "month"] = "month"
    unit: Literal["usd", "tokens"] = "usd"
    limit: Decimal = Field(..., gt=0)
    enabled: bool = True
    expires_at: datetime | None = None
    reason: str = Field("", max_length=500)
    alert_webhook_url: str = ""


class BudgetIn(Subject, BudgetFields):
    pass


class BudgetPatch(Schema):
    limit: Decimal | None = Field(None, gt=0)
    enabled: bool | None = None
    expires_at: datetime | None = None
    reason: str | None = Field(None, max_length=500)
    alert_webhook_url: str | None = None


class BulkRules(RuleFields):
    subjects: list[Subject] = Field(..., min_length=1, max_length=1000)


class BulkBudgets(BudgetFields):
    subjects: list[Subject] = Field(..., min_length=1, max_length=1000)


class ResetIn(Subject):
    reason: str = Field(..., min_length=1, max_length=500)


def _actor(request: HttpRequest) -> Any:
    """The authenticated user (the API refuses anonymous callers)."""
    return request.user if request.user.is_authenticated else None


def _allow(request: HttpRequest, perm: str, kind: str, subject_id: str) -> None:
    require(request, perm, scope.subject_team(kind, subject_id))


def _check_subject(subject: Subject) -> None:
    model = _EXISTS.get(subject.subject_kind)
    if model is not None and not (
        subject.subject_id.isdigit() and model.objects.filter(pk=subject.subject_id).exists()
    ):
        raise HttpError(422, f"There is no {subject.subject_kind} with id {subject.subject_id}.")


def _rule_values(fields: RuleFields) -> dict[str, Any]:
    values = fields.dict(exclude={"subject_kind", "subject_id", "subjects"})
    values["window"] = _WINDOWS[values["window"]]
    return values


def _upsert_rule(subject: Subject, fields: RuleFields, by: Any) -> RateLimitRule:
    values = _rule_values(fields)
    slot = {
        "surface": values.pop("surface"),
        "metric": values.pop("metric"),
        "window": values.pop("window"),
    }
    rule = RateLimitRule.objects.filter(
        subject_kind=subject.subject_kind, subject_id=subject.subject_id, **slot
    ).first()
    rule = rule or RateLimitRule(
        subject_kind=subject.subject_kind, subject_id=subject.subject_id, created_by=by, **slot
    )
    return apply_edits(rule, values)


def _upsert_budget(subject: Subject, fields: BudgetFields, by: Any) -> Budget:
    values = fields.dict(exclude={"subject_kind", "subject_id", "subjects"})
    slot = {"period": values.pop("period"), "unit": values.pop("unit")}
    budget = Budget.objects.filter(
        subject_kind=subject.subject_kind, subject_id=subject.subject_id, **slot
    ).first()
    budget = budget or Budget(
        subject_kind=subject.subject_kind, subject_id=subject.subject_id, created_by=by, **slot
    )
    return apply_edits(budget, values)


L = TypeVar("L", RateLimitRule, Budget)


def _limit(request: HttpRequest, model: type[L], pk: int, perm: str) -> L:
    item = get_object_or_404(model, pk=pk)
    _allow(request, perm, item.subject_kind, item.subject_id)
    return item


@router.get("/rules", response=list[RuleOut])
def list_rules(
    request: HttpRequest, subject_kind: SubjectKindName | None = None, subject_id: str | None = None
) -> list[RateLimitRule]:
    rules = RateLimitRule.objects.all()
    if subject_kind:
        rules = rules.filter(subject_kind=subject_kind)
    if subject_id:
        rules = rules.filter(subject_id=subject_id)
    return list(rules.filter(scope.visible(request.user)))


@router.post("/rules", response={201: RuleOut})
def create_rule(request: HttpRequest, payload: RuleIn) -> Status[RateLimitRule]:
    _check_subject(payload)
    _allow(request, "limits:update", payload.subject_kind, payload.subject_id)
    values = _rule_values(payload)
    rule = RateLimitRule(
        subject_kind=payload.subject_kind,
        subject_id=payload.subject_id,
        created_by=_actor(request),
        **values,
    )
    return Status(201, apply_edits(rule, {}))


@router.post("/rules/bulk", response={201: list[RuleOut]})
def bulk_rules(request: HttpRequest, payload: BulkRules) -> Status[list[RateLimitRule]]:
    """Set the same rule on many subjects (creating it, or updating the rule in that slot)."""
    for subject in payload.subjects:
        _check_subject(subject)
        _allow(request, "limits:update", subject.subject_kind, subject.subject_id)
    with transaction.atomic():
        return Status(201, [_upsert_rule(s, payload, _actor(request)) for s in payload.subjects])


@router.get("/rules/{rule_id}", response=RuleOut)
def get_rule(request: HttpRequest, rule_id: int) -> RateLimitRule:
    return _limit(request, RateLimitRule, rule_id, "limits:read")


@router.patch("/rules/{rule_id}", response=RuleOut)
def update_rule(request: HttpRequest, rule_id: int, payload: RulePatch) -> RateLimitRule:
    return apply_edits(
        _limit(request, RateLimitRule, rule_id, "limits:update"), payload.dict(exclude_unset=True)
    )


@router.delete("/rules/{rule_id}", response={204: None})
def delete_rule(request: HttpRequest, rule_id: int) -> Status[None]:
    _limit(request, RateLimitRule, rule_id, "limits:update").delete()
    return Status(204, None)


@router.get("/budgets", response=list[BudgetOut])
def list_budgets(
    request: HttpRequest, subject_kind: SubjectKindName | None = None, subject_id: str | None = None
) -> list[Budget]:
    budgets = Budget.objects.all()
    if subject_kind:
        budgets = budgets.filter(subject_kind=subject_kind)
    if subject_id:
        budgets = budgets.filter(subject_id=subject_id)
    return list(budgets.filter(scope.visible(request.user)))


@router.post("/budgets", response={201: BudgetOut})
def create_budget(request: HttpRequest, payload: BudgetIn) -> Status[Budget]:
    _check_subject(payload)
    _allow(request, "limits:update", payload.subject_kind, payload.subject_id)
    values = payload.dict(exclude={"subject_kind", "subject_id"})
    budget = Budget(
        subject_kind=payload.subject_kind,
        subject_id=payload.subject_id,
        created_by=_actor(request),
        **values,
    )
    return Status(201, apply_edits(budget, {}))


@router.post("/budgets/bulk", response={201: list[BudgetOut]})
def bulk_budgets(request: HttpRequest, payload: BulkBudgets) -> Status[list[Budget]]:
    """Set the same budget on many subjects (creating it, or updating the one in that slot)."""
    for subject in payload.subjects:
        _check_subject(subject)
        _allow(request, "limits:update", subject.subject_kind, subject.subject_id)
    with transaction.atomic():
        return Status(201, [_upsert_budget(s, payload, _actor(request)) for s in payload.subjects])


@router.get("/budgets/{budget_id}", response=BudgetOut)
def get_budget(request: HttpRequest, budget_id: int) -> Budget:
    return _limit(request, Budget, budget_id, "limits:read")


@router.patch("/budgets/{budget_id}", response=BudgetOut)
def update_budget(request: HttpRequest, budget_id: int, payload: BudgetPatch) -> Budget:
    budget = _limit(request, Budget, budget_id, "limits:update")
    return apply_edits(budget, payload.dict(exclude_unset=True))


@router.delete("/budgets/{budget_id}", response={204: None})
def delete_budget(request: HttpRequest, budget_id: int) -> Status[None]:
    _limit(request, Budget, budget_id, "limits:update").delete()
    return Status(204, None)


def _counters() -> MemoryCounters | RedisCounters:
    if settings.REDIS_URL:
        from thinkwatch.lib import redis

        return RedisCounters(redis.client)
    # Embedded mode: the gateway process holds the counts and writes them to a file.
    path = logic.snapshot_path()
    return (
        MemoryCounters.load(orjson.loads(path.read_bytes())) if path.exists() else MemoryCounters()
    )


@router.get("/usage")
def usage(request: HttpRequest, subject: Query[Subject]) -> dict[str, Any]:
    """A subject's current window counts, budget spend, remaining, and reservations held by
    requests in flight."""
    _allow(request, "limits:read", subject.subject_kind, subject.subject_id)
    table, counters = load_quota_table(), _counters()
    return async_to_sync(logic.usage)(
        counters, table, subject.subject_kind, subject.subject_id, time.time()
    )


@router.post("/reset", response={200: dict})
def reset(request: HttpRequest, payload: ResetIn) -> dict[str, Any]:
    """Zero a subject's window counts and budget spend (recorded in the audit log)."""
    _allow(request, "limits:update", payload.subject_kind, payload.subject_id)
    logic.reset_subject(
        payload.subject_kind,
        payload.subject_id,
        request.user,
        payload.reason,
        request.META.get("REMOTE_ADDR"),
    )
    if settings.REDIS_URL:
        async_to_sync(_counters().reset)(f"{payload.subject_kind}:{payload.subject_id}")
    return {"reset": f"{payload.subject_kind}:{payload.subject_id}"}
