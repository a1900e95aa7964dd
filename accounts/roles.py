"""Changing roles: every change is a new version with who made it, and the whole set of
custom roles can be exported and imported as JSON.

Built-in roles are defined by the product (accounts/permissions.py): their permissions
are not edited, exported or imported; their MCP tool patterns and description may change.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import access
from accounts.models import Role, RoleRevision

EXPORT_FORMAT = "thinkwatch.roles/1"
_FIELDS = ("name", "description", "permissions", "mcp_tools")


class ImportRefused(Exception):
    """The file cannot be imported; nothing was changed."""


def snapshot(role: Role) -> dict[str, Any]:
    return {"slug": role.slug, **{name: getattr(role, name) for name in _FIELDS}}


def _revise(role: Role, by: Any, action: str) -> None:
    RoleRevision.objects.create(
        role=role if action != "deleted" else None,
        slug=role.slug,
        version=role.version,
        action=action,
        snapshot=snapshot(role),
        changed_by=by if getattr(by, "pk", None) else None,
        changed_by_name=str(by) if getattr(by, "pk", None) else "",
    )


@transaction.atomic
def save(role: Role, by: Any, action: str) -> Role:
    """Validate and save `role` as a new version (the caller checked the actor's rights)."""
    role.full_clean()
    if role.pk:
        stored = Role.objects.select_for_update().get(pk=role.pk)
        if snapshot(stored) == snapshot(role):
            return role  # nothing changed: no new version
        role.version = stored.version + 1
    role.save()
    _revise(role, by, action)
    return role


@transaction.atomic
def delete(role: Role, by: Any) -> None:
    if role.builtin:
        raise ValidationError("Built-in roles cannot be deleted.")
    role.version += 1
    _revise(role, by, "deleted")
    role.delete()


def export_json() -> str:
    custom = Role.objects.filter(builtin=False).order_by("slug")
    document = {"format": EXPORT_FORMAT, "roles": [snapshot(role) for role in custom]}
    return json.dumps(document, indent=2, sort_keys=True)


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def import_json(data: bytes | str, by: Any) -> ImportResult:
    """Create or update custom roles by slug, all or nothing. The importer must hold every
    right the imported roles give (the same rule as editing them by hand)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ImportRefused("This is not a JSON file.") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ImportRefused(f'Expected a roles export with "format": "{EXPORT_FORMAT}".')
    items = document.get("roles")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ImportRefused('"roles" must be a list of roles.')
    result = ImportResult()
    try:
        with transaction.atomic():
            for item in items:
                _import_one(item, by, result)
    except ValidationError as exc:
        raise ImportRefused("; ".join(exc.messages)) from None
    return result


def _import_one(item: dict[str, Any], by: Any, result: ImportResult) -> None:
    slug = item.get("slug")
    if not isinstance(slug, str) or not slug:
        raise ValidationError("Every role needs a slug.")
    unknown = set(item) - {"slug", *_FIELDS}
    if unknown:
        raise ValidationError(f"Role {slug}: unknown field(s) {', '.join(sorted(unknown))}.")
    role = Role.objects.filter(slug=slug).first()
    if role is not None and role.builtin:
        raise ValidationError(f"Role {slug} is built in; it cannot be imported over.")
    before = snapshot(role) if role else None
    role = role or Role(slug=slug)
    for name in _FIELDS:
        if name in item:
            setattr(role, name, item[name])
    problem = access.definable(by, role.permissions or [])
    if problem:
        raise ValidationError(f"Role {slug}: {problem}")
    if before == snapshot(role):
        result.unchanged.append(slug)
        return
    created = role.pk is None
    save(role, by, "imported")
    (result.created if created else result.updated).append(slug)
