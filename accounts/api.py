from datetime import datetime, timedelta
from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from accounts import logic
from accounts.access import Denied, key_placement_problems, team_filter
from accounts.models import ApiKey, KeyLifecycleError, Surface, Team
from accounts.runtime import setting
from thinkwatch.edits import apply_edits
from thinkwatch.guard import require

router = Router(tags=["keys"])


class KeyOut(Schema):
    id: int
    name: str
    prefix: str
    owner_id: int | None
    team_id: int | None
    surfaces: list[str]
    allowed_models: list[str]
    mcp_tools: list[str] | None
    state: str
    expires_at: datetime | None
    inactivity_timeout_days: int | None
    last_used_at: datetime | None
    created_at: datetime
    lineage: UUID
    rotated_from_id: int | None
    grace_ends_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str

    @staticmethod
    def resolve_state(key: ApiKey) -> str:
        return key.state().value


class KeyCreated(KeyOut):
    api_key: str = Field(..., description="The plaintext key. Shown in this response only.")


_MCP_TOOLS = (
    'MCP tool patterns narrowing what the owner\'s roles allow: "*", "<prefix>__*" or exact '
    'tool names, "!" in front denies. null: as the roles allow; []: no tools.'
)


class KeyIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    owner_id: int | None = Field(
        None, description="Defaults to the caller; null makes a service key."
    )
    team_id: int | None = None
    surfaces: list[Surface] = Field([Surface.AI_GATEWAY], min_length=1)
    allowed_models: list[str] = Field(["*"], min_length=1)
    mcp_tools: list[str] | None = Field(None, description=_MCP_TOOLS)
    expires_at: datetime | None = None
    inactivity_timeout_days: int | None = Field(None, ge=1)


class KeyPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    team_id: int | None = None
    surfaces: list[Surface] | None = Field(None, min_length=1)
    allowed_models: list[str] | None = Field(None, min_length=1)
    mcp_tools: list[str] | None = Field(None, description=_MCP_TOOLS)
    expires_at: datetime | None = None
    inactivity_timeout_days: int | None = Field(None, ge=1)


class RotateIn(Schema):
    grace_hours: int | None = Field(
        None, ge=0, le=24 * 30, description="Default: the keys.rotation_grace_hours setting."
    )


def _created(key: ApiKey, plaintext: str) -> ApiKey:
    key.api_key = plaintext  # type: ignore[attr-defined]  # read once, by KeyCreated
    return key


def _team(team_id: int | None) -> Team | None:
    if team_id is None:
        return None
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise HttpError(422, f"There is no team with id {team_id}.")
    return team


def _visible_keys(request: HttpRequest) -> QuerySet[ApiKey]:
    """Keys the caller may see: their own, and those of teams where they hold api_keys:read
    (every key with the right held globally)."""
    return ApiKey.objects.filter(
        team_filter(request.user, "api_keys:read") | Q(owner_id=request.user.pk)
    )


def _key_for(request: HttpRequest, key_id: int, perm: str) -> ApiKey:
    """A key the caller may act on with `perm`; their own keys are always theirs to manage.
    Keys they may not even see answer 404, like keys that don't exist."""
    key = get_object_or_404(_visible_keys(request), pk=key_id)
    if key.owner_id != request.user.pk:
        require(request, perm, key.team_id)
    return key


def _may_issue(request: HttpRequest, owner: User | None, team: Team | None) -> None:
    """Refuse unless the caller may place a key for `owner` in `team`
    (access.key_placement_problems)."""
    for problem in key_placement_problems(request.user, owner, team):
        if problem.denied:
            raise Denied(problem.message)
        raise HttpError(422, problem.message)


@router.get("", response=list[KeyOut])
def list_keys(request: HttpRequest, archived: bool = False) -> list[ApiKey]:
    """Current keys (or, with `archived`, revoked and rotated-out ones) the caller may see."""
    keys = _visible_keys(request)
    return list(keys.archived() if archived else keys.current())  # type: ignore[attr-defined]


@router.post("", response={201: KeyCreated})
def create_key(request: HttpRequest, payload: KeyIn) -> Status[ApiKey]:
    owner: User | None = request.user  # type: ignore[assignment]  # authenticated by the API
    if "owner_id" in payload.model_fields_set:
        owner = None
        if payload.owner_id is not None:
            owner = User.objects.filter(pk=payload.owner_id).first()
            if owner is None:
                raise HttpError(422, f"There is no user with id {payload.owner_id}.")
    team = _team(payload.team_id)
    _may_issue(request, owner, team)
    key, plaintext = logic.issue_key(
        name=payload.name,
        owner=owner,
        team=team,
        surfaces=[str(s) for s in payload.surfaces],
        allowed_models=payload.allowed_models,
        mcp_tools=payload.mcp_tools,
        expires_at=payload.expires_at,
        inactivity_timeout_days=payload.inactivity_timeout_days,
        created_by=request.user,  # type: ignore[arg-type]
    )
    return Status(201, _created(key, plaintext))


@router.get("/{key_id}", response=KeyOut)
def get_key(request: HttpRequest, key_id: int) -> ApiKey:
    return _key_for(request, key_id, "api_keys:read")


@router.patch("/{key_id}", response=KeyOut)
def update_key(request: HttpRequest, key_id: int, payload: KeyPatch) -> ApiKey:
    key = _key_for(request, key_id, "api_keys:update")
    if key.revoked_at:
        raise HttpError(409, "A revoked key cannot be changed.")
    changes = payload.dict(exclude_unset=True)
    if "team_id" in changes:
        team = _team(changes.pop("team_id"))
        if (team.pk if team else None) != key.team_id:
            # Moving a key is issuing it into the other team.
            _may_issue(request, key.owner, team)
        key.team = team
    if "surfaces" in changes:
        changes["surfaces"] = [str(s) for s in changes["surfaces"]]
    return apply_edits(key, changes)


@router.post("/{key_id}/rotate", response={201: KeyCreated})
def rotate_key(request: HttpRequest, key_id: int, payload: RotateIn) -> Status[ApiKey]:
    key = _key_for(request, key_id, "api_keys:rotate")
    try:
        grace = payload.grace_hours
        if grace is None:
            grace = setting("keys.rotation_grace_hours")
        successor, plaintext = key.rotate(timedelta(hours=grace), by=request.user)  # type: ignore[arg-type]
    except KeyLifecycleError as exc:
        raise HttpError(409, str(exc)) from None
    return Status(201, _created(successor, plaintext))


@router.delete("/{key_id}", response=KeyOut)
def revoke_key(
    request: HttpRequest, key_id: int, reason: str = Query(..., min_length=1, max_length=500)
) -> ApiKey:
    """Revoke the key (it stops working on every gateway within a second) and archive it;
    archived keys are purged after 30 days."""
    key = _key_for(request, key_id, "api_keys:revoke")
    try:
        key.revoke(reason, by=request.user)  # type: ignore[arg-type]
    except KeyLifecycleError as exc:
        raise HttpError(409, str(exc)) from None
    return key
