"""Operator settings changed at runtime: declared here, stored in `RuntimeSetting` rows,
applied without a restart on every process.

Each process keeps the stored values in memory and re-reads the (small) table when its
copy is older than TTL_SECONDS, or at once when a save in this process clears it. Code
running on an event loop (the gateway) never waits for the database: it reads the copy in
memory, which a gateway process loads when it starts and reloads, off the loop, whenever
its config revision moves (gateway/revision.py); every save bumps that revision.

A setting nobody has changed takes its declared default, which can itself come from the
environment (the deployment's starting point).
"""

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from accounts.models import RuntimeSetting

TTL_SECONDS = 1.0


@dataclass(frozen=True)
class Spec:
    key: str
    category: str
    label: str
    help: str
    kind: type  # bool, int, str or list (of str)
    default: Callable[[], Any]
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], None] | None = None
    # Shown next to the field in the console and API.
    extra: dict[str, Any] = field(default_factory=dict)
    # Holds a credential (a URL with a token): written, never shown back in full.
    secret: bool = False

    def public(self, value: Any) -> Any:
        """The value as the console and the API may show it."""
        if not self.secret or not value:
            return value
        parts = urlsplit(str(value))
        if parts.scheme and parts.hostname:
            return f"{parts.scheme}://{parts.hostname}/…"
        return "…"

    def clean(self, value: Any) -> Any:
        """The value as stored, or ValidationError with a message naming the setting."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValidationError(f"{self.key}: give true or false.")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{self.key}: give a whole number.")
            if self.minimum is not None and value < self.minimum:
                raise ValidationError(f"{self.key}: at least {self.minimum}.")
            if self.maximum is not None and value > self.maximum:
                raise ValidationError(f"{self.key}: at most {self.maximum}.")
        elif kind is str:
            if not isinstance(value, str):
                raise ValidationError(f"{self.key}: give a text value.")
            value = value.strip()
            if self.choices is not None and value not in self.choices:
                raise ValidationError(f"{self.key}: one of {', '.join(self.choices)}.")
        elif kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValidationError(f"{self.key}: give a list of text values.")
            value = [v.strip() for v in value if v.strip()]
        if self.check is not None:
            self.check(value)
        return value


def _origins(value: list[str]) -> None:
    url = URLValidator(schemes=["http", "https"])
    for origin in value:
        try:
            url(origin)
        except ValidationError:
            raise ValidationError(
                f"security.cors_allowed_origins: {origin!r} is not an origin such as "
                "https://tools.example.com."
            ) from None
        if origin.rstrip("/").count("/") > 2:
            raise ValidationError(
                f"security.cors_allowed_origins: {origin!r} has a path; give scheme://host[:port]."
            )


def _http_url(key: str, optional: bool = False) -> Callable[[str], None]:
    def check(value: str) -> None:
        if optional and not value:
            return
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError:
            # A secret setting's value is never echoed back, not even when it is wrong.
            shown = "" if REGISTRY[key].secret else f"{value!r} "
            raise ValidationError(f"{key}: {shown}is not an http(s) URL.") from None

    return check


def _role(value: str) -> None:
    from accounts.models import Role

    if value and not Role.objects.filter(slug=value).exists():
        raise ValidationError(f"accounts.default_role: there is no role {value!r}.")


def _retention(family: str, log: str, days: int) -> Spec:
    return Spec(
        f"audit.retention_days.{family}",
        "Audit",
        f"Keep the {log} for (days)",
        f"Records of the {log} older than this are deleted by the nightly retention job; the "
        "chain stays verifiable from the oldest record kept. 0: keep them forever.",
        int,
        lambda: days,
        minimum=0,
        maximum=36500,
    )


SPECS: tuple[Spec, ...] = (
    Spec(
        "gateway.public_url",
        "Gateway",
        "Public gateway URL",
        "The address clients use for the gateway (port 3000 behind your proxy); the guide "
        "page fills it into every snippet.",
        str,
        lambda: settings.GATEWAY_PUBLIC_URL,
        check=_http_url("gateway.public_url"),
    ),
    Spec(
        "gateway.routing_strategy",
        "Gateway",
        "Routing strategy",
        "How the routes of a model are ordered when the model does not say: weighted "
        "(random by weight), latency (lowest moving average), healthiest (fewest recent "
        "failures) or cheapest (route price).",
        str,
        lambda: "weighted",
        choices=("weighted", "latency", "healthiest", "cheapest"),
    ),
    Spec(
        "gateway.retry_attempts",
        "Gateway",
        "Attempts per request",
        "How many routes (or times) a request is tried when the provider fails with a "
        "connect error, 408, 429 or 5xx; 1: no retry.",
        int,
        lambda: 3,
        minimum=1,
        maximum=10,
    ),
    Spec(
        "gateway.retry_backoff_ms",
        "Gateway",
        "Retry backoff base (ms)",
        "Before trying a route again: a random wait up to this, doubled at each retry (a "
        "provider's Retry-After takes its place). Another route is tried without waiting.",
        int,
        lambda: 250,
        minimum=0,
        maximum=60000,
    ),
    Spec(
        "gateway.retry_max_wait_ms",
        "Gateway",
        "Longest retry wait (ms)",
        "A retry that would wait longer than this (e.g. for a long Retry-After) is not made: "
        "the client gets the provider's answer.",
        int,
        lambda: 10000,
        minimum=0,
        maximum=300000,
    ),
    Spec(
        "gateway.breaker_failures",
        "Gateway",
        "Circuit breaker: failures to open",
        "Consecutive failures of a route (connect errors, timeouts, 408, 429, 5xx, broken "
        "streams) after which the gateway stops using it for a while.",
        int,
        lambda: 5,
        minimum=1,
        maximum=1000,
    ),
    Spec(
        "gateway.breaker_open_seconds",
        "Gateway",
        "Circuit breaker: pause (seconds)",
        "How long an open route is left alone before one trial call decides whether it is back.",
        int,
        lambda: 30,
        minimum=1,
        maximum=3600,
    ),
    Spec(
        "accounts.default_role",
        "Accounts",
        "Role for new accounts",
        "The role every new account holds everywhere (a role slug); empty: none.",
        str,
        lambda: settings.DEFAULT_ROLE,
        check=_role,
    ),
    Spec(
        "keys.rotation_grace_hours",
        "Keys",
        "Rotation grace period (hours)",
        "How long a rotated key keeps working beside its successor, unless the rotation says.",
        int,
        lambda: settings.KEY_ROTATION_GRACE_HOURS,
        minimum=0,
        maximum=24 * 30,
    ),
    Spec(
        "security.login_failures_before_lock",
        "Security",
        "Failed sign-ins before a lock",
        "Wrong passwords in a row before the account is locked for a while; each further "
        "failure doubles the lock.",
        int,
        lambda: settings.LOGIN_FAILURES_BEFORE_LOCK,
        minimum=1,
        maximum=100,
    ),
    Spec(
        "security.login_lock_seconds",
        "Security",
        "First lock (seconds)",
        "How long the first lock lasts.",
        int,
        lambda: settings.LOGIN_LOCK_SECONDS,
        minimum=1,
        maximum=86400,
    ),
    Spec(
        "security.bind_sessions_to_ip",
        "Security",
        "Bind console sessions to the client IP",
        "A console session used from another IP address than the one it signed in from is ended.",
        bool,
        lambda: True,
    ),
    Spec(
        "security.cors_allowed_origins",
        "Security",
        "CORS origins for the management API",
        "Browser origins (scheme://host[:port]) allowed to call /api/ from their pages.",
        list,
        lambda: list(settings.CORS_ALLOWED_ORIGINS_DEFAULT),
        check=_origins,
    ),
    Spec(
        "keys.deleted_purge_days",
        "Keys",
        "Delete revoked keys after (days)",
        "Revoked and rotated-out keys are deleted for good this many days later (by the daily "
        "purge); until then they are listed as archived.",
        int,
        lambda: settings.DELETED_KEY_PURGE_DAYS,
        minimum=1,
        maximum=3650,
    ),
    Spec(
        "keys.inactivity_disable_days",
        "Keys",
        "Revoke unused keys after (days)",
        "Keys without an inactivity timeout of their own are revoked after this many days "
        "without use (by the hourly job; never used: counted from creation). 0: never.",
        int,
        lambda: 0,
        minimum=0,
        maximum=3650,
    ),
    Spec(
        "accounts.deleted_purge_days",
        "Accounts",
        "Remove deleted accounts after (days)",
        "A deleted account cannot sign in, its keys are revoked and it leaves every list at "
        "once; it can be restored until its row is removed for good this many days later "
        "(by the daily purge).",
        int,
        lambda: 30,
        minimum=1,
        maximum=3650,
    ),
    Spec(
        "providers.deleted_purge_days",
        "Providers",
        "Remove deleted providers after (days)",
        "A deleted provider leaves routing, the console and the API at once; its row is "
        "removed for good this many days later (by the daily purge).",
        int,
        lambda: 30,
        minimum=1,
        maximum=3650,
    ),
    _retention("gateway", "gateway log", 90),
    _retention("mcp", "MCP log", 90),
    _retention("admin", "admin audit log", 365),
    _retention("access", "access log", 30),
    Spec(
        "console.public_url",
        "Console",
        "Public console URL",
        "The console's address as users reach it (port 3001 behind your proxy): the links in "
        'MCP "connect your account" errors and the OAuth redirect URI use it. Empty: '
        "http://<bind address>:<console port>, and the address a browser used for the redirect.",
        str,
        lambda: settings.CONSOLE_PUBLIC_URL,
        check=_http_url("console.public_url", optional=True),
    ),
    Spec(
        "mcp.default_timeout_seconds",
        "MCP",
        "Call timeout of a new server (seconds)",
        "The timeout a newly registered MCP server starts with in the console and the API; "
        "each server keeps its own afterwards.",
        int,
        lambda: 30,
        minimum=1,
        maximum=3600,
    ),
    Spec(
        "mcp.session_idle_seconds",
        "MCP",
        "Session idle time (seconds)",
        "An MCP session unused this long is forgotten; its client starts a new one.",
        int,
        lambda: settings.MCP_SESSION_IDLE_SECONDS,
        minimum=60,
        maximum=7 * 86400,
    ),
    Spec(
        "quotas.budget_alert_webhook_url",
        "Quotas",
        "Budget alert webhook",
        "Where budget alerts are POSTed when a budget names no webhook of its own (signed "
        "with THINKWATCH_WEBHOOK_SECRET). Empty: nowhere. Write-only: it may hold a token.",
        str,
        lambda: settings.BUDGET_ALERT_WEBHOOK_URL,
        check=_http_url("quotas.budget_alert_webhook_url", optional=True),
        secret=True,
    ),
)

# Body capture (audit/bodies.py, docs/bodies.md).
SPECS += (
    Spec(
        "audit.capture_bodies",
        "Audit",
        "Capture request and response bodies",
        "Gateway records keep the request and response bodies, MCP records the arguments and "
        "results, with e-mail addresses, phone numbers, card numbers, IP addresses and secrets "
        "redacted. Reading them needs audit:read_bodies.",
        bool,
        lambda: False,
    ),
    Spec(
        "audit.body_max_bytes",
        "Audit",
        "Bodies kept in the record (bytes)",
        "Larger bodies go to S3-compatible storage when THINKWATCH_BODY_S3_BUCKET is set, and "
        "are truncated to this size otherwise.",
        int,
        lambda: 32 * 1024,
        minimum=1024,
        maximum=1024 * 1024,
    ),
    Spec(
        "audit.body_hard_cap_bytes",
        "Audit",
        "Largest body kept (bytes)",
        "With S3-compatible storage, bodies are truncated to this size before they are stored "
        "there (never below the size kept in the record).",
        int,
        lambda: 4 * 1024 * 1024,
        minimum=1024,
        maximum=64 * 1024 * 1024,
    ),
)

REGISTRY: dict[str, Spec] = {spec.key: spec for spec in SPECS}


class _Store:
    def __init__(self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._values: dict[str, Any] | None = None
        self._loaded_at = -math.inf
        self._lock = threading.Lock()

    def values(self) -> dict[str, Any]:
        values = self._values
        if values is not None and self._clock() - self._loaded_at < self.ttl:
            return values
        if _on_event_loop():
            # No database on the loop: the copy in memory, which the gateway's revision
            # watcher keeps current (before the first load: the defaults).
            return values if values is not None else {}
        return self.reload()

    def reload(self) -> dict[str, Any]:
        """Read the stored values now (a sync context: a worker thread on the gateway)."""
        with self._lock:
            rows = dict(RuntimeSetting.objects.values_list("key", "value"))
            self._values, self._loaded_at = rows, self._clock()
        return rows

    def clear(self) -> None:
        """Have the next read outside an event loop read the table again."""
        self._loaded_at = -math.inf


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


store = _Store()


def setting(key: str) -> Any:
    """The current value of a declared setting."""
    spec = REGISTRY[key]
    values = store.values()
    return values[key] if key in values else spec.default()


def current() -> dict[str, Any]:
    values = store.values()
    return {key: values[key] if key in values else spec.default() for key, spec in REGISTRY.items()}


@dataclass(frozen=True)
class Entry:
    """A setting as the console and the API show it: secrets only in part."""

    spec: Spec
    value: Any
    default: Any
    is_default: bool
    updated_at: datetime | None
    updated_by: str | None


def describe() -> list[Entry]:
    """Every declared setting with its stored value, read from the table (not the copy)."""
    rows = {row.key: row for row in RuntimeSetting.objects.select_related("updated_by")}
    entries = []
    for key, spec in REGISTRY.items():
        row = rows.get(key)
        default = spec.default()
        entries.append(
            Entry(
                spec=spec,
                value=spec.public(default if row is None else row.value),
                default=spec.public(default),
                is_default=row is None,
                updated_at=row.updated_at if row else None,
                updated_by=row.updated_by.get_username() if row and row.updated_by else None,
            )
        )
    return entries


def update(changes: dict[str, Any], by: Any = None) -> dict[str, Any]:
    """Validate every change first (all or nothing), then store them; returns the values."""
    unknown = sorted(set(changes) - set(REGISTRY))
    if unknown:
        raise ValidationError({key: ["There is no such setting."] for key in unknown})
    cleaned: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for key, value in changes.items():
        try:
            cleaned[key] = REGISTRY[key].clean(value)
        except ValidationError as exc:
            problems[key] = list(exc.messages)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        for key, value in cleaned.items():
            RuntimeSetting.objects.update_or_create(
                key=key, defaults={"value": value, "updated_by": _user(by)}
            )
            _audit("setting.changed", key, by, {"value": REGISTRY[key].public(value)})
        _changed_here()
    return cleaned


def reset(key: str, by: Any = None) -> bool:
    """Put a setting back to its default; False when it already was."""
    if key not in REGISTRY:
        raise KeyError(key)
    with transaction.atomic():
        deleted, _ = RuntimeSetting.objects.filter(key=key).delete()
        if deleted:
            _audit("setting.reset", key, by, {})
        _changed_here()
    return bool(deleted)


def _user(by: Any) -> Any:
    return by if by is not None and getattr(by, "pk", None) else None


def _audit(action: str, key: str, by: Any, detail: dict[str, Any]) -> None:
    from audit.models import AuditEvent

    user = _user(by)
    AuditEvent.objects.create(
        action=action,
        actor_id=user.pk if user else None,
        actor=user.get_username() if user else "",
        object_type="setting",
        object_id=key,
        detail=detail,
    )


def _changed_here() -> None:
    # This process reads its own change at once (inside the transaction too); others, and
    # this one again, once it commits. The row's signal bumps the gateway's config revision.
    store.clear()
    transaction.on_commit(store.clear)
