from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from accounts import logic
from accounts.models import ApiKey, KeyLifecycleError, Surface, Team
from thinkwatch.edits import apply_edits

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
    grace_hours: int = Field(settings.KEY_ROTATION_GRACE_HOURS, ge=0, le=24 * 30)


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


@router.get("", response=list[KeyOut])
def list_keys(request: HttpRequest, archived: bool = False) -> list[ApiKey]:
    keys = ApiKey.objects.archived() if archived else ApiKey.objects.current()
    return list(keys)


@router.post("", response={201: KeyCreated})
def create_key(request: HttpRequest, payload: KeyIn) -> Status[ApiKey]:
    owner: User | None = request.user  # type: ignore[assignment]  # authenticated by the API
    if "owner_id" in payload.model_fields_set:
        owner = None
        if payload.owner_id is not None:
            owner = User.objects.filter(pk=payload.owner_id).first()
            if owner is None:
                raise HttpError(422, f"There is no user with id {payload.owner_id}.")
    key, plaintext = logic.issue_key(
        name=payload.name,
        owner=owner,
        team=_team(payload.team_id),
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
    return get_object_or_404(ApiKey, pk=key_id)


@router.patch("/{key_id}", response=KeyOut)
def update_key(request: HttpRequest, key_id: int, payload: KeyPatch) -> ApiKey:
    key = get_object_or_404(ApiKey, pk=key_id)
    if key.revoked_at:
        raise HttpError(409, "A revoked key cannot be changed.")
    changes = payload.dict(exclude_unset=True)
    if "team_id" in changes:
        key.team = _team(changes.pop("team_id"))
    if "surfaces" in changes:
        changes["surfaces"] = [str(s) for s in changes["surfaces"]]
    return apply_edits(key, changes)


@router.post("/{key_id}/rotate", response={201: KeyCreated})
def rotate_key(request: HttpRequest, key_id: int, payload: RotateIn) -> Status[ApiKey]:
    key = get_object_or_404(ApiKey, pk=key_id)
    try:
        successor, plaintext = key.rotate(timedelta(hours=payload.grace_hours), by=request.user)  # type: ignore[arg-type]
    except KeyLifecycleError as exc:
        raise HttpError(409, str(exc)) from None
    return Status(201, _created(successor, plaintext))


@router.delete("/{key_id}", response=KeyOut)
def revoke_key(
    request: HttpRequest, key_id: int, reason: str = Query(..., min_length=1, max_length=500)
) -> ApiKey:
    """Revoke the key (it stops working on every gateway within a second) and archive it;
    archived keys are purged after 30 days."""
    key = get_object_or_404(ApiKey, pk=key_id)
    try:
        key.revoke(reason, by=request.user)  # type: ignore[arg-type]
    except KeyLifecycleError as exc:
        raise HttpError(409, str(exc)) from None
    return key
