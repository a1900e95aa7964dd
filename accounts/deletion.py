"""Deleting people: softly at first, for good after the purge delay.

Deleting an account (console or API) ends it at once — it cannot sign in, its keys are
revoked, its console sessions end, it leaves every list — but the row stays for
`accounts.deleted_purge_days` (30 by default) so the audit trail still resolves its id and an
admin can restore it. The username and email are set aside in its UserSecurity row and
the account's own are replaced, so the name can be given to someone else meanwhile (single
sign-on matches accounts by username: the person signing in again gets a new account).

For the admin audit log and the gateways' config revision the soft delete is the deletion
(they hear `post_delete`, as for providers); the purge removes the row later with one
`user.purge` event of its own.
"""

import logging
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.db.models.signals import post_delete
from django.utils import timezone

from accounts.models import ApiKey, UserSecurity

logger = logging.getLogger(__name__)

REVOKE_REASON = "Its owner's account was deleted."


class RestoreRefused(Exception):
    """The account cannot be restored as it was (its username was taken meanwhile)."""


def live(users: QuerySet[User]) -> QuerySet[User]:
    """`users` without the softly deleted."""
    return users.exclude(security__deleted_at__isnull=False)


def deleted(users: QuerySet[User]) -> QuerySet[User]:
    return users.filter(security__deleted_at__isnull=False)


def is_deleted(user: User) -> bool:
    return UserSecurity.objects.filter(user=user, deleted_at__isnull=False).exists()


def _placeholder(user: User) -> str:
    return f"~deleted-{user.pk}"  # "~" is not allowed in usernames people choose


def delete_softly(user: User, by: Any = None) -> None:
    """Delete `user` as far as anyone can tell (see the module's docstring)."""
    from accounts.sessions import end_sessions

    with transaction.atomic():
        row = User.objects.select_for_update().get(pk=user.pk)
        security, _ = UserSecurity.objects.select_for_update().get_or_create(user=row)
        if security.deleted_at is not None:
            return
        before = User.objects.get(pk=row.pk)  # as it was, for the audit event
        security.deleted_at = timezone.now()
        security.deleted_username = row.username
        security.deleted_email = row.email
        security.save(update_fields=["deleted_at", "deleted_username", "deleted_email"])
        row.set_unusable_password()
        # Queryset update: the audit log records the deletion below, not a rename.
        User.objects.filter(pk=row.pk).update(
            username=_placeholder(row), email="", is_active=False, password=row.password
        )
        for key in ApiKey.objects.filter(owner=row, revoked_at__isnull=True):
            key.revoke(REVOKE_REASON, by=by if isinstance(by, User) else None)
        end_sessions(row)
        post_delete.send(sender=User, instance=before, using=row._state.db, origin=before)
    user.refresh_from_db()
    logger.info("user.deleted", extra={"user_id": user.pk})


def restore(user: User) -> None:
    """Undo a soft delete: the account gets its username and email back, inactive (an
    admin enables it). Its revoked keys stay revoked."""
    with transaction.atomic():
        security = UserSecurity.objects.select_for_update().get(user=user, deleted_at__isnull=False)
        name = security.deleted_username
        if User.objects.filter(username=name).exclude(pk=user.pk).exists():
            raise RestoreRefused(
                f"The username {name!r} now belongs to another account; rename that one first."
            )
        user.username = name
        user.email = security.deleted_email
        user.is_active = False
        user.save(update_fields=["username", "email", "is_active"])
        security.deleted_at = None
        security.deleted_username = ""
        security.deleted_email = ""
        security.save(update_fields=["deleted_at", "deleted_username", "deleted_email"])
    logger.info("user.restored", extra={"user_id": user.pk})


def purge_deleted_users(older_than_days: int) -> list[int]:
    """Remove for good the accounts deleted more than `older_than_days` ago (their keys,
    memberships and role assignments go with them); returns their ids. Log records keep
    the ids; the purge is one admin audit event naming who went."""
    from audit.models import AuditEvent

    cutoff = timezone.now() - timedelta(days=older_than_days)
    purged: dict[int, str] = {}
    with transaction.atomic():
        doomed = UserSecurity.objects.filter(
            Q(deleted_at__lt=cutoff) & Q(user__is_active=False)
        ).select_related("user")
        for security in doomed.order_by("user_id"):
            purged[security.user_id] = security.deleted_username
            security.user.delete()
        if purged:
            AuditEvent.objects.create(
                action="user.purge",
                object_type="auth.user",
                object_repr=f"{len(purged)} deleted account(s)",
                detail={"users": [{"id": pk, "username": name} for pk, name in purged.items()]},
            )
    logger.info("user.purged", extra={"users": len(purged)})
    return list(purged)
