"""`/api/cache`: the response cache (gateway/cache.py) — its policies, and purging it.

Policies are installation configuration, read with `settings:read` and changed with
`settings:update` (the console's Cache policies page asks the same). A purge drops every
cached answer; it needs `settings:update` and is recorded in the admin audit log.
"""

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.responses import Status

from accounts.models import ApiKey
from audit import context
from audit.models import Via
from gateway import cache
from gateway.models import CachePolicy
from thinkwatch.edits import apply_edits
from thinkwatch.guard import needs

router = Router(tags=["cache"])


class PolicyOut(Schema):
    id: int
    name: str
    enabled: bool
    team_id: int | None
    api_key_id: int | None
    model_pattern: str
    ttl_seconds: int
    per_user: bool
    count_rate_limits: bool
    created_at: datetime
    updated_at: datetime


class PolicyIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    enabled: bool = True
    team_id: int | None = Field(None, description="Only this team's keys; empty: every team.")
    api_key_id: int | None = Field(None, description="Only this key; empty: every key.")
    model_pattern: str = Field("", max_length=200, description='e.g. "gpt-4o*"; empty: all.')
    ttl_seconds: int = Field(3600, ge=1, le=cache.MAX_TTL_SECONDS)
    per_user: bool = False
    count_rate_limits: bool = True


class PolicyPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = None
    team_id: int | None = None
    api_key_id: int | None = None
    model_pattern: str | None = Field(None, max_length=200)
    ttl_seconds: int | None = Field(None, ge=1, le=cache.MAX_TTL_SECONDS)
    per_user: bool | None = None
    count_rate_limits: bool | None = None


class PurgeOut(Schema):
    store: str
    entries: int | None = Field(
        None, description="Entries deleted (Redis); in-memory stores do not report a count."
    )


def _saved(policy: CachePolicy, changes: dict[str, Any]) -> CachePolicy:
    """Apply `changes`, refusing a key and a team that can never match together."""
    team_id = changes.get("team_id", policy.team_id)
    key_id = changes.get("api_key_id", policy.api_key_id)
    if team_id is not None and key_id is not None:
        key_team = ApiKey.objects.filter(pk=key_id).values_list("team_id", flat=True).first()
        if key_team is not None and key_team != team_id:
            raise ValidationError(
                {"api_key_id": "This key belongs to another team: the policy would never apply."}
            )
    return apply_edits(policy, changes)


@router.get("/policies", response=list[PolicyOut])
@needs("settings:read")
def list_policies(request: HttpRequest) -> list[CachePolicy]:
    return list(CachePolicy.objects.all())


@router.post("/policies", response={201: PolicyOut})
@needs("settings:update")
def create_policy(request: HttpRequest, payload: PolicyIn) -> Status[CachePolicy]:
    return Status(201, _saved(CachePolicy(), payload.dict()))


@router.get("/policies/{policy_id}", response=PolicyOut)
@needs("settings:read")
def get_policy(request: HttpRequest, policy_id: int) -> CachePolicy:
    return get_object_or_404(CachePolicy, pk=policy_id)


@router.patch("/policies/{policy_id}", response=PolicyOut)
@needs("settings:update")
def update_policy(request: HttpRequest, policy_id: int, payload: PolicyPatch) -> CachePolicy:
    policy = get_object_or_404(CachePolicy, pk=policy_id)
    return _saved(policy, payload.dict(exclude_unset=True))


@router.delete("/policies/{policy_id}", response={204: None})
@needs("settings:update")
def delete_policy(request: HttpRequest, policy_id: int) -> Status[None]:
    get_object_or_404(CachePolicy, pk=policy_id).delete()
    return Status(204, None)


@router.delete("", response=PurgeOut)
@needs("settings:update")
def purge(request: HttpRequest) -> dict[str, Any]:
    """Drop every cached answer, in every gateway process."""
    origin = context.current() or context.Origin(via=Via.API, request=request)
    return cache.purge(origin.fields())
