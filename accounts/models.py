import hashlib
import json
import re
import secrets
import uuid
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from guardian.models import UserObjectPermissionBase

from accounts.permissions import CATALOGUE, validate_permissions
from thinkwatch.lib import crypto

if TYPE_CHECKING:
    from django.contrib.auth.models import User

KEY_PREFIX = "tw-"
KEY_LENGTH = len(KEY_PREFIX) + 96  # 48 random bytes as hex
SHOWN_PREFIX_LENGTH = 11  # "tw-" and 8 hex digits: enough to recognise, useless to guess


class Surface(models.TextChoices):
    AI_GATEWAY = "ai_gateway", "AI gateway"
    MCP_GATEWAY = "mcp_gateway", "MCP gateway"
    CONSOLE = "console", "Console API"


def default_surfaces() -> list[str]:
    return [Surface.AI_GATEWAY]


def all_models() -> list[str]:
    return ["*"]


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def looks_like_key(value: str) -> bool:
    return len(value) == KEY_LENGTH and value.startswith(KEY_PREFIX)


def validate_surfaces(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Choose at least one surface.")
    unknown = sorted(set(map(str, value)) - set(Surface.values))
    if unknown:
        raise ValidationError(f"Unknown surface(s): {', '.join(unknown)}.")


def validate_patterns(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValidationError('Give a list of non-empty patterns, e.g. ["gpt-*", "claude-*"].')


TOOL_PATTERN = re.compile(r"^!?(\*|[a-z0-9_]+__\*|[A-Za-z0-9_.-]+)$")


def validate_tool_patterns(value: object) -> None:
    """MCP tool patterns: `*`, `<prefix>__*` or an exact tool name; `!` in front denies."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError('Give a list of patterns, e.g. ["github__*", "!github__delete"].')
    bad = [p for p in value if not TOOL_PATTERN.match(p)]
    if bad:
        raise ValidationError(
            f"Not a tool pattern: {', '.join(bad)}. Use *, <prefix>__* or an exact tool name, "
            "with ! in front to deny."
        )


def no_tools() -> list[str]:
    return []


def every_tool() -> list[str]:
    return ["*"]


class Organisation(models.Model):
    """The one organisation this installation serves (row 1)."""

    name = models.CharField(max_length=100, default="ThinkWatch")

    def __str__(self) -> str:
        return self.name

    @classmethod
    def current(cls) -> "Organisation":
        org, _ = cls.objects.get_or_create(pk=1)
        return org


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        # The permission strings, as Django permissions: a user's global rights are kept as
        # user permissions, team-scoped rights as django-guardian object permissions on
        # the team (accounts/access.py keeps both in step with role assignments).
        permissions = [(name, text) for name, text, _ in CATALOGUE]

    def __str__(self) -> str:
        return self.name


class TeamUserObjectPermission(UserObjectPermissionBase):
    """A user's right within one team (django-guardian's direct foreign-key form, so the
    rows go with the team)."""

    content_object = models.ForeignKey(Team, on_delete=models.CASCADE)


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class KeyState(models.TextChoices):
    ACTIVE = "active"
    ROTATING = "rotating"  # replaced, still accepted until its grace period ends
    ROTATED = "rotated"
    EXPIRED = "expired"
    INACTIVE = "inactive"
    REVOKED = "revoked"


class KeyLifecycleError(Exception):
    """A key lifecycle change that is not allowed in the key's current state."""


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def current(self) -> "ApiKeyQuerySet":
        """Keys that are neither revoked nor rotated out."""
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(grace_ends_at__lte=now)

    def archived(self) -> "ApiKeyQuerySet":
        now = timezone.now()
        return self.filter(models.Q(revoked_at__isnull=False) | models.Q(grace_ends_at__lte=now))


class ApiKey(models.Model):
    """A virtual key. Only its SHA-256 is stored; the plaintext is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="Leave empty for a service key.",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.PROTECT, related_name="api_keys"
    )
    surfaces = models.JSONField(default=default_surfaces, validators=[validate_surfaces])
    allowed_models = models.JSONField(
        default=all_models,
        validators=[validate_patterns],
        help_text='Model id patterns this key may call; "*" allows every model.',
    )
    mcp_tools = models.JSONField(
        "MCP tools",
        null=True,
        blank=True,
        validators=[validate_tool_patterns],
        help_text="Narrows what the owner's roles allow on the MCP gateway: patterns such as "
        '"github__*", "!github__delete_repo"; empty: as the roles allow; []: no tools.',
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    inactivity_timeout_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Refuse the key after this many days without use."
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    lineage = models.UUIDField(default=uuid.uuid4, editable=False, db_index=True)
    rotated_from = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rotated_to",
        editable=False,
    )
    grace_ends_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_reason = models.TextField(blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def new_secret() -> tuple[str, str, str]:
        plaintext = KEY_PREFIX + secrets.token_hex(48)
        return plaintext, hash_key(plaintext), plaintext[:SHOWN_PREFIX_LENGTH]

    def assign_new_secret(self) -> str:
        """Give this (unsaved) key a fresh secret; returns the plaintext to show once."""
        plaintext, self.key_hash, self.prefix = self.new_secret()
        return plaintext

    def state(self, now: datetime | None = None) -> KeyState:
        now = now or timezone.now()
        if self.revoked_at:
            return KeyState.REVOKED
        if self.grace_ends_at and self.grace_ends_at <= now:
            return KeyState.ROTATED
        if self.expires_at and self.expires_at <= now:
            return KeyState.EXPIRED
        if self.inactivity_timeout_days:
            last = self.last_used_at or self.created_at
            if last and last + timedelta(days=self.inactivity_timeout_days) <= now:
                return KeyState.INACTIVE
        return KeyState.ROTATING if self.grace_ends_at else KeyState.ACTIVE

    def allows_model(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)

    def revoke(self, reason: str, by: "User | None" = None) -> None:
        reason = reason.strip()
        if not reason:
            raise KeyLifecycleError("Give a reason for revoking the key.")
        with transaction.atomic():
            key = ApiKey.objects.select_for_update().get(pk=self.pk)
            if key.revoked_at:
                raise KeyLifecycleError("This key is already revoked.")
            key.revoked_at = timezone.now()
            key.revoked_reason = reason
            key.revoked_by = by
            key.save(update_fields=["revoked_at", "revoked_reason", "revoked_by"])
        self.refresh_from_db()

    def rotate(self, grace: timedelta, by: "User | None" = None) -> tuple["ApiKey", str]:
        """Issue the successor of this key. This key keeps working for `grace`."""
        if grace < timedelta(0):
            raise KeyLifecycleError("The grace period cannot be negative.")
        with transaction.atomic():
            key = ApiKey.objects.select_for_update().get(pk=self.pk)
            state = key.state()
            if state in (KeyState.ROTATING, KeyState.ROTATED):
                raise KeyLifecycleError("This key has already been rotated; rotate its successor.")
            if state == KeyState.REVOKED:
                raise KeyLifecycleError("A revoked key cannot be rotated.")
            successor = ApiKey(
                name=key.name,
                owner=key.owner,
                team=key.team,
                surfaces=key.surfaces,
                allowed_models=key.allowed_models,
                mcp_tools=key.mcp_tools,
                expires_at=key.expires_at,
                inactivity_timeout_days=key.inactivity_timeout_days,
                lineage=key.lineage,
                rotated_from=key,
                created_by=by,
            )
            plaintext = successor.assign_new_secret()
            successor.save()
            key.grace_ends_at = timezone.now() + grace
            key.save(update_fields=["grace_ends_at"])
        self.refresh_from_db()
        return successor, plaintext


class KeyExpiryWarning(models.Model):
    """A warning that a key expires soon (accounts/lifecycle.py): one per key, expiry
    instant and threshold, so each is sent once however often the job runs. A key given a
    new expiry is warned again about that one. `emailed_at` stays empty until the mail went
    out (the next run retries)."""

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="expiry_warnings")
    expires_at = models.DateTimeField()
    days = models.PositiveSmallIntegerField()  # the threshold: 7, 3 or 1 days before
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "expires_at", "days"], name="key_expiry_warning_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key_id} expires in {self.days} day(s)"


def no_permissions() -> list[str]:
    return []


class Role(models.Model):
    """A role users hold, globally or within one team: permission strings (see
    accounts/permissions.py), the MCP tools holders may call, and (quotas app) default rate
    limits and budgets."""

    name = models.CharField(max_length=60, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False, editable=False)
    permissions = models.JSONField(
        default=no_permissions,
        blank=True,
        validators=[validate_permissions],
        help_text='Permission strings or patterns, e.g. "api_keys:*", "logs:read_team"; "!" in '
        "front denies, and a denial in any of a user's roles wins.",
    )
    version = models.PositiveIntegerField(default=1, editable=False)
    mcp_tools = models.JSONField(
        "MCP tools",
        default=every_tool,
        blank=True,
        validators=[validate_tool_patterns],
        help_text='MCP tools holders may call: "*", "<prefix>__*" or exact names; "!" in front '
        "denies, and a denial in any of a user's roles wins.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RoleAssignment(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_assignments"
    )
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="assignments")
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        help_text="Empty: the role holds everywhere. Set: only for this team's keys.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "role", "team"], name="role_assignment_unique"),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=models.Q(team__isnull=True),
                name="role_assignment_global_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role}" + (f" in {self.team}" if self.team_id else "")


class RoleRevision(models.Model):
    """One version of a role: what it was after a change, and who made the change."""

    role = models.ForeignKey(Role, null=True, on_delete=models.SET_NULL, related_name="revisions")
    slug = models.SlugField(max_length=60)  # kept when the role is deleted
    version = models.PositiveIntegerField()
    action = models.CharField(max_length=16)  # created, updated, deleted, imported
    snapshot = models.JSONField()  # name, description, permissions, mcp_tools
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_by_name = models.CharField(max_length=254, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug", "-version"]

    def __str__(self) -> str:
        return f"{self.slug} v{self.version} ({self.action})"


class UserSecurity(models.Model):
    """Per-account sign-in state kept beside Django's user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="security"
    )
    # Console sessions that began before this instant are ended (force logout).
    sessions_revoked_at = models.DateTimeField(null=True, blank=True)
    # Soft delete (accounts.deletion): when, and the username and email set aside.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    deleted_username = models.CharField(max_length=150, blank=True)
    deleted_email = models.EmailField(blank=True)

    def __str__(self) -> str:
        return f"sign-in state of {self.user}"


class RuntimeSetting(models.Model):
    """An operator setting changed at runtime; absent rows take the registry's default."""

    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


OIDC_SECRET_PURPOSE = "accounts.OidcConfig.client_secret"  # noqa: S105 (a label, not a secret)
_FINGERPRINT_SALT = "accounts.OidcConfig.fingerprint"
_TEST_STATE = ("tested_fingerprint", "tested_at")


def no_group_roles() -> list[dict[str, str | None]]:
    return []


def validate_group_roles(value: object) -> None:
    """[{"group": "...", "role": "<role slug>", "team": "<team name>" or null}, ...]"""
    example = '[{"group": "engineering", "role": "developer", "team": null}]'
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ValidationError(f"Give a list of mappings, e.g. {example}.")
    for entry in value:
        extra = set(entry) - {"group", "role", "team"}
        group, role, team = entry.get("group"), entry.get("role"), entry.get("team")
        if extra or not isinstance(group, str) or not group.strip():
            raise ValidationError(f"Each mapping has a group, a role and a team: {example}.")
        if not isinstance(role, str) or not role.strip() or not isinstance(team, str | None):
            raise ValidationError(f"The mapping of group {group!r} needs a role slug: {example}.")


class OidcConfig(models.Model):
    """Console sign-in through an OpenID Provider (row 1; accounts/oidc.py runs the flow).

    It can be enabled only once the configuration as it stands has passed a test sign-in:
    `tested_fingerprint` is what it was then, and any change to what the test exercised
    (issuer, client, secret, scopes, claim mapping, group mapping) clears it."""

    enabled = models.BooleanField(
        default=False,
        help_text="Show “Sign in with SSO” on the sign-in pages. Needs a passed test sign-in "
        "of the configuration as it is.",
    )
    issuer = models.CharField(
        max_length=500,
        blank=True,
        help_text="The provider's issuer URL, exactly as its discovery document names it, e.g. "
        "https://login.example.com/realms/acme.",
    )
    client_id = models.CharField(max_length=200, blank=True)
    # An AES-256-GCM envelope; never shown or returned.
    client_secret = models.TextField(blank=True, editable=False)
    scopes = models.CharField(
        max_length=500,
        default="openid email profile",
        help_text="Space-separated; openid is required. Add the scope that releases the "
        "groups claim if your provider needs one (e.g. groups).",
    )
    username_claim = models.CharField(max_length=100, default="email")
    email_claim = models.CharField(max_length=100, default="email", blank=True)
    first_name_claim = models.CharField(max_length=100, default="given_name", blank=True)
    last_name_claim = models.CharField(max_length=100, default="family_name", blank=True)
    groups_claim = models.CharField(
        max_length=100,
        default="groups",
        blank=True,
        help_text="A claim holding a list of group names; a dotted path such as "
        "realm_access.roles reaches into an object.",
    )
    group_roles = models.JSONField(
        default=no_group_roles,
        blank=True,
        validators=[validate_group_roles],
        help_text="Which role members of a group hold, everywhere or in one team. At every "
        "SSO sign-in these roles are given and taken away to match the groups; roles no "
        "mapping names are left alone.",
    )
    create_users = models.BooleanField(
        default=True,
        help_text="Create an account at the first SSO sign-in of someone unknown. Off: only "
        "existing accounts (matched by username) may sign in with SSO.",
    )
    # From the issuer's discovery document.
    authorization_endpoint = models.CharField(max_length=500, blank=True, editable=False)
    token_endpoint = models.CharField(max_length=500, blank=True, editable=False)
    userinfo_endpoint = models.CharField(max_length=500, blank=True, editable=False)
    jwks_uri = models.CharField("JWKS URI", max_length=500, blank=True, editable=False)
    token_auth_method = models.CharField(max_length=32, blank=True, editable=False)
    pkce = models.BooleanField("PKCE", default=False, editable=False)
    discovered_at = models.DateTimeField(null=True, blank=True, editable=False)
    tested_at = models.DateTimeField(null=True, blank=True, editable=False)
    tested_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "single sign-on (OIDC)"
        verbose_name_plural = "single sign-on (OIDC)"

    def __str__(self) -> str:
        return "Single sign-on (OIDC)"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.tested_fingerprint and self.tested_fingerprint != self.fingerprint():
            self.tested_fingerprint, self.tested_at = "", None
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], *_TEST_STATE}
        super().save(*args, **kwargs)

    @classmethod
    def current(cls) -> "OidcConfig":
        config, _ = cls.objects.get_or_create(pk=1)
        return config

    @property
    def has_client_secret(self) -> bool:
        return bool(self.client_secret)

    def set_client_secret(self, plaintext: str) -> None:
        self.client_secret = crypto.encrypt(plaintext, OIDC_SECRET_PURPOSE) if plaintext else ""

    def reveal_client_secret(self) -> str:
        if not self.client_secret:
            return ""
        return crypto.decrypt(self.client_secret, OIDC_SECRET_PURPOSE)

    def fingerprint(self) -> str:
        """What a test sign-in exercised. Keyed with SECRET_KEY, as it covers the secret."""
        tested = {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.reveal_client_secret(),
            "scopes": self.scopes.split(),
            "claims": [
                self.username_claim,
                self.email_claim,
                self.first_name_claim,
                self.last_name_claim,
                self.groups_claim,
            ],
            "group_roles": self.group_roles,
            "create_users": self.create_users,
        }
        payload = json.dumps(tested, sort_keys=True)
        return salted_hmac(_FINGERPRINT_SALT, payload, algorithm="sha256").hexdigest()

    @property
    def tested(self) -> bool:
        return bool(self.tested_fingerprint) and self.tested_fingerprint == self.fingerprint()

    @property
    def complete(self) -> bool:
        return bool(self.issuer and self.client_id and self.client_secret and self.jwks_uri)

    def clean(self) -> None:
        if "openid" not in self.scopes.split():
            raise ValidationError({"scopes": "The scopes must include openid."})
        if not self.username_claim.strip():
            raise ValidationError({"username_claim": "Name the claim that holds the username."})
        self._check_group_roles()
        if self.enabled and not self.complete:
            raise ValidationError(
                {"enabled": "Set the issuer, client id and client secret before enabling SSO."}
            )
        if self.enabled and not self.tested:
            raise ValidationError(
                {
                    "enabled": "This configuration has not passed a test sign-in. Save it with "
                    "SSO off, run “Test sign-in”, then enable SSO. (Changing the issuer, client, "
                    "secret, scopes or mappings needs a new test.)"
                }
            )

    def _check_group_roles(self) -> None:
        if not isinstance(self.group_roles, list):
            return  # the field's validator reports it
        roles = {entry.get("role") for entry in self.group_roles if isinstance(entry, dict)}
        teams = {entry.get("team") for entry in self.group_roles if isinstance(entry, dict)}
        teams.discard(None)
        roles -= set(Role.objects.filter(slug__in=roles).values_list("slug", flat=True))
        teams -= set(Team.objects.filter(name__in=teams).values_list("name", flat=True))
        problems = [f"no role with the slug {slug!r}" for slug in sorted(map(str, roles))]
        problems += [f"no team named {name!r}" for name in sorted(map(str, teams))]
        if problems:
            message = f"The group mapping names {'; '.join(problems)}."
            raise ValidationError({"group_roles": message})

    def mark_tested(self, fingerprint: str) -> bool:
        """Record a passed test of the configuration whose fingerprint it was; False if the
        configuration has changed since the test began."""
        with transaction.atomic():
            config = OidcConfig.objects.select_for_update().get(pk=self.pk)
            if config.fingerprint() != fingerprint:
                return False
            config.tested_fingerprint, config.tested_at = fingerprint, timezone.now()
            config.save(update_fields=["tested_fingerprint", "tested_at"])
        self.refresh_from_db()
        return True
