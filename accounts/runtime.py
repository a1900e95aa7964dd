"""Operator settings changed at runtime: declared here, stored in `RuntimeSetting` rows,
applied without a restart on every process.

Each process keeps the stored values in memory and re-reads the (small) table when its
copy is older than RUNTIME_SETTINGS_TTL seconds, or at once when a save in this process
clears it. A setting nobody has changed takes its declared default, which can itself come
from the environment (the deployment's starting point).
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def _url(value: str) -> None:
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError(f"gateway.public_url: {value!r} is not an http(s) URL.") from None


def _role(value: str) -> None:
    from accounts.models import Role

    if value and not Role.objects.filter(slug=value).exists():
        raise ValidationError(f"accounts.default_role: there is no role {value!r}.")


SPECS: tuple[Spec, ...] = (
    Spec(
        "gateway.public_url",
        "Gateway",
        "Public gateway URL",
        "The address clients use for the gateway (port 3000 behind your proxy); the guide "
        "page fills it into every snippet.",
        str,
        lambda: settings.GATEWAY_PUBLIC_URL,
        check=_url,
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
)

REGISTRY: dict[str, Spec] = {spec.key: spec for spec in SPECS}


class _Store:
    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def values(self) -> dict[str, Any]:
        values = self._values
        if values is not None and time.monotonic() - self._loaded_at < TTL_SECONDS:
            return values
        with self._lock:
            rows = dict(RuntimeSetting.objects.values_list("key", "value"))
            self._values, self._loaded_at = rows, time.monotonic()
        return rows

    def clear(self) -> None:
        self._values = None


store = _Store()


def setting(key: str) -> Any:
    """The current value of a declared setting."""
    spec = REGISTRY[key]
    values = store.values()
    return values[key] if key in values else spec.default()


def current() -> dict[str, Any]:
    values = store.values()
    return {key: values[key] if key in values else spec.default() for key, spec in REGISTRY.items()}


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
                key=key, defaults={"value": value, "updated_by": by if by and by.pk else None}
            )
        transaction.on_commit(store.clear)
    return cleaned
