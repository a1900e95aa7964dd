"""Progressive lockout of console sign-in: after THINKWATCH_LOGIN_FAILURES_BEFORE_LOCK
failed attempts for one account, it is locked for THINKWATCH_LOGIN_LOCK_SECONDS, twice as
long after each further failure (up to a day); a successful sign-in clears the count.

Counted per account name (whoever tries it, from wherever), in the Django cache: Redis
when configured, so every console process agrees. The lock holds even for the right
password, so guessing gains nothing while it lasts.
"""

import time
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

from accounts.runtime import setting

_PREFIX = "login-failures:"
_LONGEST = 86_400


@dataclass
class Record:
    failures: int = 0
    locked_until: float = 0.0


def _key(username: str) -> str:
    return _PREFIX + username.strip().lower()[:254]


def _load(username: str) -> Record:
    raw = cache.get(_key(username))
    return Record(**raw) if isinstance(raw, dict) else Record()


def locked_for(username: str, now: float | None = None) -> int:
    """Seconds the account stays locked (0: not locked)."""
    remaining = _load(username).locked_until - (now or time.time())
    return max(0, int(remaining + 0.999))


def failed(username: str, now: float | None = None) -> Record:
    now = now or time.time()
    record = _load(username)
    record.failures += 1
    over = record.failures - setting("security.login_failures_before_lock")
    if over >= 0:
        seconds = min(setting("security.login_lock_seconds") * 2**over, _LONGEST)
        record.locked_until = now + seconds
    cache.set(_key(username), record.__dict__, timeout=_LONGEST * 2)
    return record


def succeeded(username: str) -> None:
    cache.delete(_key(username))


class _Lockout:
    """Mixed into the sign-in forms: refuse a locked account before checking its
    password, and count the outcome."""

    def clean(self: Any) -> dict[str, Any]:
        username = self.data.get("username", "")
        wait = locked_for(username) if username else 0
        if wait:
            raise forms.ValidationError(
                f"Too many failed sign-ins for this account. Try again in {wait} s.",
                code="locked",
            )
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            if username:
                failed(username)
            raise
        if username:
            succeeded(username)
        return cleaned


class LockoutAuthenticationForm(_Lockout, AuthenticationForm):
    pass


class LockoutAdminAuthenticationForm(_Lockout, AdminAuthenticationForm):
    pass
