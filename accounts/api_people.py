"""`/api/users` and `/api/teams`: accounts, teams and who is in them.

The same rules as the console's pages: `users:*` for accounts (global rights), `teams:*`
and `members:*` for teams (a Team Manager's rights hold in their own teams only).
"""

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from accounts import access, deletion
from accounts.access import Rights
from accounts.models import Membership, Team
from thinkwatch.edits import apply_edits
from thinkwatch.guard import needs, require

users_router = Router(tags=["users"])
teams_router = Router(tags=["teams"])


class UserOut(Schema):
    id: int
    username: str
    email: str
    first_name: str
    last_name: str
    is_active: bool
    is_superuser: bool
    last_login: datetime | None
    date_joined: datetime
    team_ids: list[int]

    @staticmethod
    def resolve_team_ids(user: User) -> list[int]:
        return sorted(team.pk for team in user.teams.all())


class UserIn(Schema):
    username: str = Field(..., min_length=1, max_length=150)
    email: str = Field("", max_length=254)
    first_name: str = Field("", max_length=150)
    last_name: str = Field("", max_length=150)
    password: str | None = Field(
        None, description="Omit for an account that signs in with SSO only."
    )


class UserPatch(Schema):
    email: str | None = Field(None, max_length=254)
    first_name: str | None = Field(None, max_length=150)
    last_name: str | None = Field(None, max_length=150)
    is_active: bool | None = None
    password: str | None = None


def _user(request: HttpRequest, user_id: int, perm: str, gone: bool = False) -> User:
    users = User.objects.all()
    user = get_object_or_404(deletion.deleted(users) if gone else deletion.live(users), pk=user_id)
    if user.pk != request.user.pk or perm != "users:read":
        require(request, perm)
    problem = access.manageable(request.user, user) if perm != "users:read" else None
    if problem:
        raise HttpError(403, problem)
    return user


def _set_password(user: User, password: str) -> None:
    validate_password(password, user)  # ValidationError: 422 through the API's handler
    user.set_password(password)


@users_router.get("", response=list[UserOut])
@needs("users:read")
def list_users(
    request: HttpRequest,
    team_id: int | None = None,
    active: bool | None = None,
    deleted: bool = False,
) -> QuerySet[User] | list[User]:
    """Accounts; `deleted=true` lists the deleted ones that can still be restored (they
    show the username they will get back)."""
    users = User.objects.prefetch_related("teams").order_by("username")
    if deleted:
        return _as_they_were(deletion.deleted(users).select_related("security"))
    users = deletion.live(users)
    if team_id is not None:
        users = users.filter(teams=team_id)
    if active is not None:
        users = users.filter(is_active=active)
    return users


@users_router.post("", response={201: UserOut})
@needs("users:create")
def create_user(request: HttpRequest, payload: UserIn) -> Status[User]:
    user = User(
        username=payload.username,
        email=payload.email,
        first_name=payload.first_name,
        last_name=payload.last_name,
    )
    if payload.password is not None:
        _set_password(user, payload.password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    return Status(201, user)


@users_router.get("/{user_id}", response=UserOut)
def get_user(request: HttpRequest, user_id: int) -> User:
    """One account (everyone may read their own)."""
    return _user(request, user_id, "users:read")


@users_router.patch("/{user_id}", response=UserOut)
def update_user(request: HttpRequest, user_id: int, payload: UserPatch) -> User:
    """Change an account; `is_active: false` disables it (its keys stop working and its
    console sessions end). Needs `users:update`."""
    user = _user(request, user_id, "users:update")
    changes = payload.dict(exclude_unset=True)
    if changes.get("is_active") is False and user.pk == request.user.pk:
        raise HttpError(409, "You cannot disable your own account.")
    password = changes.pop("password", None)
    if password is not None:
        _set_password(user, password)
    with transaction.atomic():
        apply_edits(user, changes)
    if changes.get("is_active") is False:
        from accounts.sessions import end_sessions

        end_sessions(user)
    return user


@users_router.delete("/{user_id}", response={204: None})
def delete_user(request: HttpRequest, user_id: int) -> Status[None]:
    """Delete an account: it can no longer sign in, its keys are revoked and it leaves
    every list at once; it can be restored until the purge removes it for good (runtime
    setting `accounts.deleted_purge_days`, 30 by default). Needs `users:delete`."""
    user = _user(request, user_id, "users:delete")
    if user.pk == request.user.pk:
        raise HttpError(409, "You cannot delete your own account.")
    deletion.delete_softly(user, by=request.user)
    return Status(204, None)


@users_router.post("/{user_id}/restore", response=UserOut)
def restore_user(request: HttpRequest, user_id: int) -> User:
    """Bring back a deleted account with its username, email, teams and roles, disabled
    (enable it with PATCH `is_active: true`); its keys stay revoked. Needs
    `users:delete`."""
    user = _user(request, user_id, "users:delete", gone=True)
    try:
        deletion.restore(user)
    except deletion.RestoreRefused as refused:
        raise HttpError(409, str(refused)) from None
    return user


def _as_they_were(users: QuerySet[User]) -> list[User]:
    found = list(users)
    for user in found:
        user.username = user.security.deleted_username
        user.email = user.security.deleted_email
    found.sort(key=lambda user: user.username)
    return found


@users_router.post("/{user_id}/logout", response={204: None})
def force_logout(request: HttpRequest, user_id: int) -> Status[None]:
    """End every console session of the account, on every instance. Needs
    `users:update`."""
    from accounts.sessions import end_sessions

    end_sessions(_user(request, user_id, "users:update"))
    return Status(204, None)


# --- Teams and members --------------------------------------------------------------------


class TeamOut(Schema):
    id: int
    name: str
    description: str
    created_at: datetime
    member_ids: list[int]

    @staticmethod
    def resolve_member_ids(team: Team) -> list[int]:
        return sorted(user.pk for user in team.members.all())  # live members: _live_members


class TeamIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    description: str = ""


class TeamPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = None


class MemberIn(Schema):
    user_id: int


def _live_members() -> "Prefetch[Any]":
    return Prefetch("members", queryset=deletion.live(User.objects.all()))


def _team(request: HttpRequest, team_id: int, perm: str) -> Team:
    rights = Rights.of(request.user)
    team = get_object_or_404(Team.objects.prefetch_related(_live_members()), pk=team_id)
    if not rights.has("teams:read", team.pk) and not rights.has(perm, team.pk):
        raise HttpError(404, "Not Found")  # teams one may not see don't exist
    require(request, perm, team.pk)
    return team


@teams_router.get("", response=list[TeamOut])
def list_teams(request: HttpRequest) -> QuerySet[Team]:
    """Teams where the caller holds `teams:read` (all of them with the right held
    globally)."""
    scope = access.team_filter(request.user, "teams:read", "pk")
    return Team.objects.filter(scope).prefetch_related(_live_members())


@teams_router.post("", response={201: TeamOut})
@needs("teams:create")
def create_team(request: HttpRequest, payload: TeamIn) -> Status[Team]:
    return Status(201, apply_edits(Team(), payload.dict()))


@teams_router.get("/{team_id}", response=TeamOut)
def get_team(request: HttpRequest, team_id: int) -> Team:
    return _team(request, team_id, "teams:read")


@teams_router.patch("/{team_id}", response=TeamOut)
def update_team(request: HttpRequest, team_id: int, payload: TeamPatch) -> Team:
    """Needs `teams:update` in the team."""
    return apply_edits(_team(request, team_id, "teams:update"), payload.dict(exclude_unset=True))


@teams_router.delete("/{team_id}", response={204: None})
def delete_team(request: HttpRequest, team_id: int) -> Status[None]:
    """Delete a team that holds no keys any more. Needs `teams:delete`."""
    team = _team(request, team_id, "teams:delete")
    if team.api_keys.exists():
        raise HttpError(409, "This team still has API keys; move or revoke them first.")
    team.delete()
    return Status(204, None)


@teams_router.get("/{team_id}/members", response=list[UserOut])
def list_members(request: HttpRequest, team_id: int) -> QuerySet[User]:
    """Needs `members:read` in the team."""
    team = _team(request, team_id, "members:read")
    return deletion.live(team.members.prefetch_related("teams")).order_by("username")


@teams_router.post("/{team_id}/members", response={201: UserOut})
def add_member(request: HttpRequest, team_id: int, payload: MemberIn) -> Status[User]:
    """Needs `members:manage` in the team."""
    team = _team(request, team_id, "members:manage")
    user = deletion.live(User.objects.filter(pk=payload.user_id)).first()
    if user is None:
        raise HttpError(422, f"There is no user with id {payload.user_id}.")
    Membership.objects.get_or_create(team=team, user=user)
    return Status(201, user)


@teams_router.delete("/{team_id}/members/{user_id}", response={204: None})
def remove_member(request: HttpRequest, team_id: int, user_id: int) -> Status[None]:
    """Needs `members:manage` in the team. The person's keys in the team stay until revoked."""
    team = _team(request, team_id, "members:manage")
    deleted, _ = Membership.objects.filter(Q(team=team) & Q(user_id=user_id)).delete()
    if not deleted:
        raise HttpError(404, "This user is not a member of the team.")
    return Status(204, None)
