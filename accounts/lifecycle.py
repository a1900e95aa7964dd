"""Key policy the worker applies on a schedule: warnings before a key expires, and
revocation of keys nobody uses.

Both are safe to run any number of times. A warning is recorded (KeyExpiryWarning, unique
per key, expiry and threshold) before its mail goes out, and the mail is retried by later
runs until it is sent; a key revoked for inactivity is no longer a candidate.
"""

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, KeyExpiryWarning, KeyLifecycleError
from audit.models import AuditEvent

logger = logging.getLogger(__name__)

# Days before expires_at at which the key's owner is warned.
EXPIRY_WARNING_DAYS = (7, 3, 1)


# --- expiry warnings -------------------------------------------------------------------------


def due_threshold(remaining: timedelta) -> int | None:
    """The warning a key `remaining` away from expiry is due: the nearest threshold it has
    reached (two days left: the 3-day warning; the 7-day one is no longer news)."""
    reached = [days for days in EXPIRY_WARNING_DAYS if remaining <= timedelta(days=days)]
    return min(reached) if reached else None


def warn_expiring_keys() -> int:
    """Record the due warning of every working key close to its expiry, then mail what is
    still unsent; returns how many warnings were recorded."""
    now = timezone.now()
    horizon = now + timedelta(days=max(EXPIRY_WARNING_DAYS))
    keys = (
        ApiKey.objects.current()
        # A key being rotated out is replaced; its successor carries the expiry and is warned.
        .filter(grace_ends_at__isnull=True, expires_at__gt=now, expires_at__lte=horizon)
        .filter(Q(owner__isnull=True) | Q(owner__is_active=True))
    )
    recorded = 0
    for key in keys:
        assert key.expires_at is not None  # filtered above
        days = due_threshold(key.expires_at - now)
        if days is not None and _record_warning(key, key.expires_at, days):
            recorded += 1
    send_pending_warnings(now)
    return recorded


def _record_warning(key: ApiKey, expires_at: datetime, days: int) -> bool:
    warned = KeyExpiryWarning.objects.filter(key=key, expires_at=expires_at)
    if warned.filter(days__lte=days).exists():
        return False
    try:
        with transaction.atomic():
            KeyExpiryWarning.objects.create(key=key, expires_at=expires_at, days=days)
            AuditEvent.objects.create(
                action="key.expiry_warning",
                object_type="accounts.apikey",
                object_id=str(key.pk),
                object_repr=str(key)[:200],
                detail={
                    "days": days,
                    "expires_at": expires_at.isoformat(),
                    "owner_id": key.owner_id,
                },
            )
    except IntegrityError:
        return False  # another run recorded it first
    logger.info("key.expiry_warning", extra={"key_id": key.pk, "days": days})
    return True


def send_pending_warnings(now: datetime) -> int:
    """Mail each recorded warning not yet sent, while its key still has that expiry and has
    not expired; returns how many were sent. A warning superseded by a nearer one is not
    sent late."""
    nearer = KeyExpiryWarning.objects.filter(
        key=OuterRef("key"), expires_at=OuterRef("expires_at"), days__lt=OuterRef("days")
    )
    pending = (
        KeyExpiryWarning.objects.filter(
            emailed_at__isnull=True, expires_at__gt=now, key__expires_at=F("expires_at")
        )
        .filter(
            Q(key__owner__email__gt="") | Q(key__owner__isnull=True, key__created_by__email__gt="")
        )
        .exclude(Exists(nearer))
        .select_related("key__owner", "key__created_by")
    )
    sent = 0
    for warning in pending:
        # Claiming the row first means two overlapping runs send one mail.
        claimed = KeyExpiryWarning.objects.filter(pk=warning.pk, emailed_at__isnull=True)
        if not claimed.update(emailed_at=timezone.now()):
            continue
        try:
            _mail(warning)
        except (smtplib.SMTPException, OSError):
            KeyExpiryWarning.objects.filter(pk=warning.pk).update(emailed_at=None)
            logger.warning(
                "key.expiry_mail_failed", extra={"key_id": warning.key_id}, exc_info=True
            )
            continue
        sent += 1
    return sent


def _recipient(key: ApiKey) -> User | None:
    return key.owner or key.created_by


def _mail(warning: KeyExpiryWarning) -> None:
    key = warning.key
    recipient = _recipient(key)
    assert recipient is not None and key.expires_at is not None
    kind = "service key" if key.owner_id is None else "key"
    when = key.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"The ThinkWatch API {kind} “{key.name}” ({key.prefix}…) expires on {when}, "
        f"in less than {_days(warning.days)}.\n\n"
        "Requests made with it will be refused from then on. Rotate it before then (the "
        "successor keeps its settings) and put the new key where the old one is used:\n\n"
        f"  {_console_url()}{reverse('admin:accounts_apikey_change', args=[key.pk])}\n"
        f"  or POST /api/keys/{key.pk}/rotate\n"
    )
    subject = f"ThinkWatch: your API {kind} “{key.name}” expires in less than {_days(warning.days)}"
    send_mail(subject, body, None, [recipient.email], fail_silently=False)


def _days(days: int) -> str:
    return "a day" if days == 1 else f"{days} days"


def _console_url() -> str:
    # The console's address as users reach it; the MCP gateway's connect links use it too.
    from mcpgw.credentials import console_url

    return console_url()


# --- inactivity ------------------------------------------------------------------------------


def disable_inactive_keys(default_days: int) -> list[int]:
    """Revoke every working key unused for longer than its inactivity timeout, or
    `default_days` for keys without one (0: those are left alone); returns their ids.

    Revocation goes through ApiKey.revoke, so gateways drop the key within a second, and
    leaves one `key.revoke` event in the admin audit log giving the reason."""
    now = timezone.now()
    keys = ApiKey.objects.current()
    if not default_days:
        keys = keys.filter(inactivity_timeout_days__gt=0)
    revoked = []
    for key in keys:
        days = key.inactivity_timeout_days or default_days
        last = key.last_used_at or key.created_at
        if last + timedelta(days=days) <= now and _revoke_inactive(key, days, last):
            revoked.append(key.pk)
    return revoked


def _revoke_inactive(key: ApiKey, days: int, last: datetime) -> bool:
    reason = f"inactive for {days} day{'' if days == 1 else 's'}"
    try:
        with transaction.atomic():
            key.revoke(reason)
            AuditEvent.objects.create(
                action="key.revoke",
                object_type="accounts.apikey",
                object_id=str(key.pk),
                object_repr=str(key)[:200],
                before={"revoked_at": None, "revoked_reason": ""},
                after=_revoked_fields(key),
                detail={"reason": reason, "inactive_days": days, "last_used": last.isoformat()},
            )
    except KeyLifecycleError:
        return False  # revoked meanwhile by someone else
    logger.info("key.revoked_inactive", extra={"key_id": key.pk, "days": days})
    return True


def _revoked_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "revoked_reason": key.revoked_reason,
    }
