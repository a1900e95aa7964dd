"""Console sessions: bound to the client IP they signed in from, and ended everywhere at
once by a force logout.

Every sign-in (the admin's login, /accounts/login/, the setup wizard, SSO: anything that
calls django.contrib.auth.login) records the client IP and the instant in the session.
`SessionGuardMiddleware` then ends a session
- used from another IP while the runtime setting `security.bind_sessions_to_ip` is on;
- that began before its user's `UserSecurity.sessions_revoked_at` (`end_sessions`, which
  also runs when an account is deactivated).

The revocation instant is read from the database and kept in Django's cache for
REVOCATION_CACHE_SECONDS: with Redis every console process sees a force logout on its
next request; with the in-process cache, within those seconds.
"""

import logging
import time
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth import SESSION_KEY, get_user_model, logout
from django.contrib.auth.signals import user_logged_in
from django.contrib.auth.views import redirect_to_login
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.deprecation import MiddlewareMixin

from accounts.models import UserSecurity
from accounts.runtime import setting
from thinkwatch.proxies import request_ip

logger = logging.getLogger(__name__)

SIGNED_IN_AT = "_tw_signed_in_at"  # epoch seconds
SIGNED_IN_FROM = "_tw_ip"
REVOCATION_CACHE_SECONDS = 2

MOVED = (
    "You were signed out because this session was used from another network address. Sign in again."
)
REVOKED = "You were signed out: every session of your account was ended. Sign in again."


def _cache_key(user_id: Any) -> str:
    return f"sessions-revoked:{user_id}"


def end_sessions(user: Any) -> datetime:
    """End every console session of `user` that exists now, on every console process."""
    now = timezone.now()
    UserSecurity.objects.update_or_create(user=user, defaults={"sessions_revoked_at": now})
    key = _cache_key(user.pk)
    cache.delete(key)
    # Again once committed: a request may have cached the old instant in between.
    transaction.on_commit(lambda: cache.delete(key))
    logger.info("sessions.ended", extra={"user_id": user.pk})
    return now


def revoked_at(user_id: Any) -> float:
    """When `user_id`'s sessions were last ended (epoch seconds; 0 for never)."""
    key = _cache_key(user_id)
    cached = cache.get(key)
    if cached is not None:
        return float(cached)
    instant = (
        UserSecurity.objects.filter(user_id=user_id)
        .values_list("sessions_revoked_at", flat=True)
        .first()
    )
    value = instant.timestamp() if instant else 0.0
    cache.set(key, value, REVOCATION_CACHE_SECONDS)
    return value


def ended_because(session: SessionBase, user_id: Any, ip: str | None) -> str | None:
    """Why this signed-in session must end now, or None when it may go on.

    A session that recorded no sign-in instant (one from before this check existed) counts
    as the oldest possible; one that recorded no address (a test client's force_login) is
    bound to the first address it is used from."""
    if session.get(SIGNED_IN_AT, 0.0) < revoked_at(user_id):
        return REVOKED
    if setting("security.bind_sessions_to_ip"):
        bound = session.get(SIGNED_IN_FROM)
        if bound is None:
            if ip is not None:
                session[SIGNED_IN_FROM] = ip
        elif bound != ip:
            return MOVED
    return None


class SessionGuardMiddleware(MiddlewareMixin):
    """After AuthenticationMiddleware and MessageMiddleware: ends sessions that may not go
    on. Pages redirect to the sign-in page with the reason; /api/ answers 401 JSON."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        user_id = request.session.get(SESSION_KEY)
        if user_id is None:
            return None
        ip = request_ip(request)
        reason = ended_because(request.session, user_id, ip)
        if reason is None:
            return None
        logger.info(
            "session.ended",
            extra={"user_id": user_id, "reason": "moved" if reason == MOVED else "revoked"},
        )
        logout(request)
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": reason}, status=401)
        messages.warning(request, reason)
        login_url = reverse("admin:login" if request.path_info.startswith("/admin/") else "login")
        return redirect_to_login(request.get_full_path(), login_url)


# --- signal receivers (connected in accounts.apps) ---------------------------------------


def record_sign_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return
    request.session[SIGNED_IN_AT] = time.time()
    request.session[SIGNED_IN_FROM] = request_ip(request)


def _note_deactivation(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None or instance.is_active:
        return
    fields = kwargs.get("update_fields")
    if fields is not None and "is_active" not in fields:
        return
    was_active = sender.objects.filter(pk=instance.pk, is_active=True).exists()
    instance._tw_deactivated = was_active


def _end_sessions_if_deactivated(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.__dict__.pop("_tw_deactivated", False):
        end_sessions(instance)


def connect_signals() -> None:
    user = get_user_model()
    user_logged_in.connect(record_sign_in, dispatch_uid="sessions-sign-in")
    pre_save.connect(_note_deactivation, sender=user, dispatch_uid="sessions-deactivation")
    post_save.connect(_end_sessions_if_deactivated, sender=user, dispatch_uid="sessions-ended")
