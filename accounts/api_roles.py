"""`/api/roles`: roles, their versions, who holds them, and JSON export/import.

Nobody gives a right they don't hold: defining a role needs every permission it grants,
assigning one needs `roles:assign` and every permission the role grants, in the scope
(global or the team) of the assignment.
"""

import json
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from accounts import access, roles
from accounts.models import Role, RoleAssignment, RoleRevision, Team
from accounts.permissions import CATALOGUE
from thinkwatch.guard import needs

router = Router(tags=["roles"])


class RoleOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    builtin: bool
    permissions: list[str]
    mcp_tools: list[str]
    version: int


class RoleIn(Schema):
    name: str = Field(..., min_length=1, max_length=60)
    slug: str = Field(..., min_length=1, max_length=60, pattern=r"^[-a-zA-Z0-9_]+$")
    description: str = ""
    permissions: list[str] = Field([], description="Permission strings; see docs/permissions.md")
    mcp_tools: list[str] = ["*"]


class RolePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=60)
    description: str | None = None
    permissions: list[str] | None = None
    mcp_tools: list[str] | None = None


class RevisionOut(Schema):
    version: int
    action: str
    snapshot: dict[str, Any]
    changed_by_id: int | None
    changed_by_name: str
    changed_at: datetime


class PermissionOut(Schema):
    name: str
    description: str
    team_scopable: bool


class AssignmentOut(Schema):
    id: int
    user_id: int
    role_id: int
    team_id: int | None
    created_at: datetime


class AssignmentIn(Schema):
    user_id: int
    role_id: int
    team_id: int | None = Field(None, description="Empty: the role holds everywhere.")


class ImportOut(Schema):
    created: list[str]
    updated: list[str]
    unchanged: list[str]


@router.get("/permissions", response=list[PermissionOut])
@needs("roles:read")
def list_permissions(request: HttpRequest) -> list[dict[str, Any]]:
    """Every permission string roles are built from."""
    return [{"name": n, "description": d, "team_scopable": s} for n, d, s in CATALOGUE]


@router.get("", response=list[RoleOut])
@needs("roles:read")
def list_roles(request: HttpRequest) -> QuerySet[Role]:
    return Role.objects.all()


@router.post("", response={201: RoleOut})
@needs("roles:create")
def create_role(request: HttpRequest, payload: RoleIn) -> Status[Role]:
    _definable(request, payload.permissions)
    role = Role(**payload.dict())
    return Status(201, roles.save(role, by=request.user, action="created"))


@router.get("/export", response={200: dict})
@needs("roles:read")
def export_roles(request: HttpRequest) -> HttpResponse:
    """Every custom role as JSON, for `POST /api/roles/import` on this or another
    installation."""
    response = HttpResponse(roles.export_json(), content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="thinkwatch-roles.json"'
    return response


class ImportIn(Schema):
    format: str = Field(..., description=f'"{roles.EXPORT_FORMAT}"')
    roles: list[dict[str, Any]]


@router.post("/import", response=ImportOut)
@needs("roles:update")
def import_roles(request: HttpRequest, payload: ImportIn) -> roles.ImportResult:
    """Create or update custom roles from an export, all or nothing (needs `roles:create`
    and `roles:update`, and every right the roles grant)."""
    access.require(request.user, "roles:create")
    try:
        return roles.import_json(json.dumps(payload.dict()), by=request.user)
    except roles.ImportRefused as exc:
        raise HttpError(422, str(exc)) from None


@router.get("/assignments", response=list[AssignmentOut])
@needs("roles:read")
def list_assignments(
    request: HttpRequest, user_id: int | None = None, role_id: int | None = None
) -> QuerySet[RoleAssignment]:
    assignments = RoleAssignment.objects.order_by("id")
    if user_id is not None:
        assignments = assignments.filter(user_id=user_id)
    if role_id is not None:
        assignments = assignments.filter(role_id=role_id)
    return assignments


@router.post("/assignments", response={201: AssignmentOut})
def assign_role(request: HttpRequest, payload: AssignmentIn) -> Status[RoleAssignment]:
    """Give a role to a user, globally or within one team. Needs `roles:assign` there and
    every right the role gives."""
    role = get_object_or_404(Role, pk=payload.role_id)
    user = User.objects.filter(pk=payload.user_id).first()
    if user is None:
        raise HttpError(422, f"There is no user with id {payload.user_id}.")
    team = None
    if payload.team_id is not None:
        team = Team.objects.filter(pk=payload.team_id).first()
        if team is None:
            raise HttpError(422, f"There is no team with id {payload.team_id}.")
    _grantable(request, role, payload.team_id)
    assignment, _ = RoleAssignment.objects.get_or_create(user=user, role=role, team=team)
    return Status(201, assignment)


@router.delete("/assignments/{assignment_id}", response={204: None})
def unassign_role(request: HttpRequest, assignment_id: int) -> Status[None]:
    """Take a role away (the same rights are needed as to give it)."""
    assignment = get_object_or_404(RoleAssignment, pk=assignment_id)
    _grantable(request, assignment.role, assignment.team_id)
    assignment.delete()
    return Status(204, None)


@router.get("/{role_id}", response=RoleOut)
@needs("roles:read")
def get_role(request: HttpRequest, role_id: int) -> Role:
    return get_object_or_404(Role, pk=role_id)


@router.get("/{role_id}/revisions", response=list[RevisionOut])
@needs("roles:read")
def role_revisions(request: HttpRequest, role_id: int) -> QuerySet[RoleRevision]:
    """Every version of the role, newest first, with who made each change."""
    role = get_object_or_404(Role, pk=role_id)
    return RoleRevision.objects.filter(slug=role.slug).order_by("-version", "-id")


@router.patch("/{role_id}", response=RoleOut)
@needs("roles:update")
def update_role(request: HttpRequest, role_id: int, payload: RolePatch) -> Role:
    role = get_object_or_404(Role, pk=role_id)
    changes = payload.dict(exclude_unset=True)
    if role.builtin and set(changes) & {"name", "permissions"}:
        raise HttpError(409, "A built-in role's name and permissions are defined by ThinkWatch.")
    if "permissions" in changes:
        _definable(request, changes["permissions"])
    for name, value in changes.items():
        setattr(role, name, value)
    return roles.save(role, by=request.user, action="updated")


@router.delete("/{role_id}", response={204: None})
@needs("roles:delete")
def delete_role(request: HttpRequest, role_id: int) -> Status[None]:
    role = get_object_or_404(Role, pk=role_id)
    if role.builtin:
        raise HttpError(409, "Built-in roles cannot be deleted.")
    roles.delete(role, by=request.user)
    return Status(204, None)


def _definable(request: HttpRequest, permissions: list[str]) -> None:
    from accounts.permissions import validate_permissions

    validate_permissions(permissions)  # ValidationError: 422
    problem = access.definable(request.user, permissions)
    if problem:
        raise access.Denied(problem)


def _grantable(request: HttpRequest, role: Role, team_id: int | None) -> None:
    problem = access.grantable(request.user, role, team_id)
    if problem:
        raise access.Denied(problem)
