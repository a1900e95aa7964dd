"""Key and account operations used by the console, the API and the setup wizard."""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q

from accounts.models import ApiKey, Organisation, RoleAssignment, Surface, Team

# Key id -> when its last_used_at was last written. last_used_at is kept to the minute:
# one UPDATE per key per minute at most, whatever the traffic.
_LAST_USE_RESOLUTION = 60.0
_persisted: dict[int, float] = {}


def persist_key_use(records: Iterable[dict[str, Any]]) -> None:
    latest: dict[int, datetime] = {}
    for record in records:
        key_id = record.get("api_key_id")  # set only once the key was accepted
        if key_id is not None:
            seen = latest.get(key_id)
            if seen is None or record["created_at"] > seen:
                latest[key_id] = record["created_at"]
    now = time.monotonic()
    due = {k: t for k, t in latest.items() if now - _persisted.get(k, -1e9) >= _LAST_USE_RESOLUTION}
    for key_id, used_at in due.items():
        ApiKey.objects.filter(pk=key_id).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=used_at)
        ).update(last_used_at=used_at)
        _persisted[key_id] = now


def issue_key(
    *,
    name: str,
    owner: User | None,
    team: Team | None = None,
    surfaces: list[str] | None = None,
    allowed_models: list[str] | None = None,
    mcp_tools: list[str] | None = None,
    expires_at: datetime | None = None,
    inactivity_timeout_days: int | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with its plaintext, which is never available again."""
    key = ApiKey(
        name=name,
        owner=owner,
        team=team,
        mcp_tools=mcp_tools,
        expires_at=expires_at,
        inactivity_timeout_days=inactivity_timeout_days,
        created_by=created_by,
    )
    if surfaces is not None:
        key.surfaces = surfaces
    if allowed_models is not None:
        key.allowed_models = allowed_models
    plaintext = key.assign_new_secret()
    key.full_clean()
    key.save()
    return key, plaintext


def purge_deleted_keys(older_than_days: int) -> int:
    """Hard-delete keys revoked or rotated out more than `older_than_days` ago."""
    cutoff = datetime.fromtimestamp(time.time() - older_than_days * 86400, UTC)
    stale = ApiKey.objects.filter(Q(revoked_at__lt=cutoff) | Q(grace_ends_at__lt=cutoff))
    # A successor points at its predecessor; that link is history and may go.
    _, deleted = stale.delete()
    return deleted.get("accounts.ApiKey", 0)


class SetupRefused(Exception):
    """The setup wizard only runs while no admin exists."""


# The provider types the wizards offer: those that need nothing beyond a base URL and a key.
SETUP_PROVIDER_TYPES = ("openai", "openai_compatible")


@dataclass
class SetupResult:
    admin: Any
    organisation: Organisation
    provider: Any = None
    key: ApiKey | None = None
    api_key: str | None = None


def admin_exists() -> bool:
    return get_user_model().objects.filter(is_superuser=True).exists()


def validate_admin(email: str, password: str) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    try:
        validate_email(email)
    except ValidationError as exc:
        problems["admin_email"] = list(exc.messages)
    user = get_user_model()(username=email, email=email)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        problems["admin_password"] = list(exc.messages)
    return problems


@transaction.atomic
def initialize_site(
    *,
    admin_email: str,
    admin_password: str,
    site_name: str,
    provider: dict[str, str] | None = None,
    key_name: str | None = None,
) -> SetupResult:
    """Create the first super admin, name the site, optionally add a provider and a key.

    `provider` holds type, name, base_url and api_key. Refuses once an admin exists.
    """
    from accounts.access import builtin_role
    from providers.logic import create_provider

    # Serialises concurrent wizards: the second waits here, then sees the first's admin.
    organisation, _ = Organisation.objects.select_for_update().get_or_create(pk=1)
    if admin_exists():
        raise SetupRefused("ThinkWatch is already set up: an admin account exists.")
    organisation.name = site_name
    organisation.full_clean()
    organisation.save()
    admin = get_user_model().objects.create_superuser(
        username=admin_email, email=admin_email, password=admin_password
    )
    RoleAssignment.objects.create(user=admin, role=builtin_role("super-admin"), team=None)
    result = SetupResult(admin=admin, organisation=organisation)
    if provider:
        result.provider = create_provider(**provider)
    if key_name:
        result.key, result.api_key = issue_key(
            name=key_name, owner=admin, surfaces=list(Surface.values), created_by=admin
        )
    return result
