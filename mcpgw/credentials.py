"""What the gateway sends upstream on a user's behalf, for every call it forwards.

`upstream_headers` answers from process memory: decrypted tokens (and the absence of one)
are kept for a minute, so a warm call asks the database nothing. A credential saved or
deleted in this process is dropped from memory when its transaction commits (the model
signals below); other processes drop everything on the next config revision, which every
credential save or delete bumps, provided `clear()` runs on revision change (gateway/
revision.py, like the key cache).

An OAuth token that expires within a minute is refreshed first, and only once however many
calls want it at the same moment: one task per (user, server) in this process, under a
Redis lock shared by every gateway process when REDIS_URL is set (else a lock of this
process). The row is read again under the lock, so a token another process has just
refreshed is used rather than refreshed again; a refresh token is only ever redeemed by
one caller. The refreshed tokens are written with `update()`: no signal, no config revision
(other processes keep their still-valid access token until it is due, then find the new one
in the database).
"""

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, TypeVar

from cachetools import TTLCache
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from redis.exceptions import LockError, RedisError

from accounts.runtime import setting
from mcpgw import oauth
from mcpgw.models import (
    STATIC_SECRET_PURPOSE,
    AuthMode,
    CredentialKind,
    McpCredential,
    McpServer,
)
from thinkwatch.lib import crypto, redis
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # seconds before expiry when an OAuth token is renewed
CACHE_SECONDS = 60.0
LOCK_SECONDS = 2 * oauth.HTTP_TIMEOUT  # outlasts any one refresh

Key = tuple[int, int]  # (user id, server id)
T = TypeVar("T")


def console_url() -> str:
    public = setting("console.public_url")
    if public:
        return str(public).rstrip("/")
    host = settings.BIND_ADDRESS
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (listening everywhere; name one of them)
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.CONSOLE_PORT}"


def connect_url(server_id: int) -> str:
    """The console page where a user connects their account to the server."""
    return f"{console_url()}/mcp/connect/{server_id}/"


class CredentialError(Exception):
    def __init__(self, server: McpServer, message: str) -> None:
        super().__init__(message)
        self.server_id = server.pk
        self.server_name = server.name


class CredentialMissing(CredentialError):
    """The user holds no usable credential for the server; `connect_url` is where they get
    one. `reason`: missing, expired (or revoked by the authorization server), or no_user
    (the caller's key belongs to no user)."""

    def __init__(self, server: McpServer, reason: str = "missing") -> None:
        self.reason = reason
        self.connect_url = connect_url(server.pk)
        messages = {
            "missing": f"The MCP server '{server.name}' acts with your own account, which is "
            f"not connected yet. Connect it at {self.connect_url} and try again.",
            "expired": f"Your connection to the MCP server '{server.name}' has expired or was "
            f"revoked. Reconnect it at {self.connect_url} and try again.",
            "no_user": f"The MCP server '{server.name}' acts with each user's own account, and "
            "this API key belongs to no user. Use a personal key.",
        }
        super().__init__(server, messages[reason])


class CredentialUnavailable(CredentialError):
    """The user's token is due and could not be renewed just now (the authorization server
    or the lock is unreachable); trying again later may work."""

    def __init__(self, server: McpServer, error: str) -> None:
        super().__init__(
            server,
            f"Your token for the MCP server '{server.name}' could not be renewed just now "
            f"({error}). Try again in a moment.",
        )


async def upstream_headers(server: McpServer, user_id: int | None) -> dict[str, str]:
    """The headers that authenticate the gateway to `server` for this user."""
    if server.auth_mode == AuthMode.STATIC_HEADER:
        secret = _static_secret(server.static_secret)
        return {server.header_name: _value(server, secret)} if secret else {}
    if not server.per_user:
        return {}
    if user_id is None:
        raise CredentialMissing(server, "no_user")
    return {server.header_name: _value(server, await cache.token(server, user_id))}


def clear() -> None:
    """Forget every credential held in memory: call on every config revision change."""
    cache.clear()


def forget(user_id: int, server_id: int) -> None:
    cache.forget(user_id, server_id)


def _value(server: McpServer, secret: str) -> str:
    return f"{server.header_scheme} {secret}".strip()


@lru_cache(maxsize=256)
def _static_secret(envelope: str) -> str:
    return crypto.decrypt(envelope, STATIC_SECRET_PURPOSE) if envelope else ""


# --- what users do in the console ----------------------------------------------------


def save_token(user: User, server: McpServer, token: str) -> McpCredential:
    """Store (or replace) the user's personal token for a per_user_token server."""
    if server.auth_mode != AuthMode.PER_USER_TOKEN:
        raise ValidationError({"token": f"'{server.name}' does not take a personal token."})
    token = token.strip()
    if not oauth.TOKEN_PATTERN.fullmatch(token):
        raise ValidationError(
            {"token": "Paste the token alone: no 'Bearer' before it, no spaces or line breaks."}
        )
    return McpCredential.store(user, server, CredentialKind.TOKEN, token)


def remove_connection(user: User, server: McpServer) -> bool:
    deleted, _ = McpCredential.objects.filter(user=user, server=server).delete()
    return deleted > 0


@receiver((post_save, post_delete), sender=McpCredential, dispatch_uid="mcpgw.credentials")
def _changed(sender: type, instance: McpCredential, **kwargs: Any) -> None:
    transaction.on_commit(partial(forget, instance.user_id, instance.server_id))


# --- the rows, read and written off the event loop -----------------------------------


@dataclass(frozen=True, slots=True)
class _Held:
    access: str = field(repr=False)
    expires_at: float | None
    refreshable: bool

    def due(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - now <= REFRESH_MARGIN

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    held: _Held
    refresh: str = field(repr=False)
    sealed_refresh: str = field(repr=False)  # as stored: what a write compares against
    token_endpoint: str
    auth_method: str


def _read_row(user_id: int, server_id: int) -> _Row | None:
    credential = McpCredential.objects.filter(user_id=user_id, server_id=server_id).first()
    if credential is None:
        return None
    try:
        access, refresh = credential.reveal_access_token(), credential.reveal_refresh_token()
    except crypto.DecryptionError as exc:
        logger.error(
            "mcp.credential_unreadable",
            extra={"user_id": user_id, "server_id": server_id, "error": str(exc)},
        )
        return None
    expires = credential.expires_at
    return _Row(
        id=credential.pk,
        held=_Held(access, expires.timestamp() if expires else None, bool(refresh)),
        refresh=refresh,
        sealed_refresh=credential.refresh_token,
        token_endpoint=credential.token_endpoint,
        auth_method=credential.token_auth_method,
    )


def _write_refreshed(user_id: int, server_id: int, row: _Row, tokens: oauth.Tokens) -> _Row | None:
    sealed = McpCredential()
    sealed.set_tokens(tokens.access, tokens.refresh or row.refresh)
    now = timezone.now()
    changes: dict[str, Any] = {
        "access_token": sealed.access_token,
        "refresh_token": sealed.refresh_token,
        "expires_at": tokens.expires_at(now),
        "updated_at": now,
    }
    if tokens.scope:
        changes["scopes"] = tokens.scope[:500]
    # Only over the row that was refreshed: a reconnect meanwhile wins.
    McpCredential.objects.filter(pk=row.id, refresh_token=row.sealed_refresh).update(**changes)
    return _read_row(user_id, server_id)


def _drop_row(row: _Row) -> None:
    McpCredential.objects.filter(pk=row.id, refresh_token=row.sealed_refresh).delete()


_read = off_loop(_read_row)
_write = off_loop(_write_refreshed)
_drop = off_loop(_drop_row)


# --- the in-process cache ------------------------------------------------------------


class CredentialCache:
    def __init__(self) -> None:
        self._hits: TTLCache[Key, _Held] = TTLCache(100_000, CACHE_SECONDS)
        self._misses: TTLCache[Key, bool] = TTLCache(10_000, CACHE_SECONDS)
        self._loading: dict[Key, asyncio.Future[_Held | None]] = {}
        self._renewing: dict[Key, asyncio.Future[str]] = {}
        # Bumped by clear() and forget(): a read that started before must not be kept.
        self._generation = 0
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()

    async def token(self, server: McpServer, user_id: int) -> str:
        key = (user_id, server.pk)
        held = self._hits.get(key)
        if held is None:
            if key in self._misses:
                raise CredentialMissing(server)
            held = await _single(self._loading, key, partial(self._load, key))
            if held is None:
                raise CredentialMissing(server)
        now = time.time()
        if not held.due(now):
            return held.access
        if not held.refreshable:
            if held.expired(now):
                raise CredentialMissing(server, "expired")
            return held.access
        return await _single(self._renewing, key, partial(self._renew, server, key, held))

    def forget(self, user_id: int, server_id: int) -> None:
        key = (user_id, server_id)
        self._generation += 1
        self._hits.pop(key, None)
        self._misses.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._hits.clear()
        self._misses.clear()
        self._loading.clear()
        # A refresh under way finishes on its own; one started meanwhile waits for the lock,
        # reads the row again and finds the token fresh.
        self._renewing.clear()

    def _keep(self, key: Key, held: _Held | None, generation: int) -> None:
        if generation != self._generation:
            return
        if held is None:
            self._hits.pop(key, None)
            self._misses[key] = True
        else:
            self._misses.pop(key, None)
            self._hits[key] = held

    async def _load(self, key: Key) -> _Held | None:
        generation = self._generation
        row = await _read(*key)
        held = row.held if row else None
        self._keep(key, held, generation)
        return held

    @contextlib.asynccontextmanager
    async def _exclusive(self, key: Key) -> AsyncIterator[None]:
        """Held while one user's token for one server is refreshed: by every gateway
        process sharing Redis, else by this one."""
        if settings.REDIS_URL:
            lock = redis.client().lock(
                f"tw:mcp:refresh:{key[0]}:{key[1]}",
                timeout=LOCK_SECONDS,
                blocking_timeout=LOCK_SECONDS,
                sleep=0.05,
                raise_on_release_error=False,
            )
            async with lock:
                yield
            return
        local = self._locks.get(key)
        if local is None:
            local = self._locks[key] = asyncio.Lock()
        async with local:
            yield

    async def _renew(self, server: McpServer, key: Key, held: _Held) -> str:
        try:
            async with self._exclusive(key):
                return await self._renew_locked(server, key)
        except (LockError, RedisError) as exc:
            logger.warning(
                "mcp.credential.lock_failed",
                extra={"user_id": key[0], "server_id": key[1], "error": type(exc).__name__},
            )
            if not held.expired(time.time()):
                return held.access
            raise CredentialUnavailable(server, "the lock service is unavailable") from None

    async def _renew_locked(self, server: McpServer, key: Key) -> str:
        generation = self._generation
        row = await _read(*key)
        if row is None:
            self._keep(key, None, generation)
            raise CredentialMissing(server)
        now = time.time()
        endpoint = row.token_endpoint or server.oauth_token_endpoint
        if not row.held.due(now) or not row.refresh or not endpoint:
            self._keep(key, row.held, generation)
            if row.held.expired(now):
                raise CredentialMissing(server, "expired")
            return row.held.access
        try:
            tokens = await oauth.refresh(server, endpoint, row.auth_method, row.refresh)
        except oauth.OAuthError as exc:
            logger.warning(
                "mcp.credential.refresh_failed",
                extra={"user_id": key[0], "server_id": key[1], "error": exc.error},
            )
            if exc.error == "invalid_grant":
                await _drop(row)
                self.forget(*key)
                raise CredentialMissing(server, "expired") from None
            if not row.held.expired(now):
                return row.held.access
            raise CredentialUnavailable(server, exc.error) from None
        fresh = await _write(key[0], key[1], row, tokens)
        logger.info("mcp.credential.refreshed", extra={"user_id": key[0], "server_id": key[1]})
        if fresh is None:
            raise CredentialMissing(server)
        self._keep(key, fresh.held, generation)
        return fresh.held.access


async def _single(
    running: dict[Key, asyncio.Future[T]], key: Key, start: Callable[[], Awaitable[T]]
) -> T:
    """One task per key does the work; everyone asking meanwhile shares its outcome."""
    task = running.get(key)
    if task is None:
        # A task of its own: the call that started it may be cancelled meanwhile.
        task = asyncio.ensure_future(start())
        running[key] = task
        task.add_done_callback(partial(_finished, running, key))
    return await asyncio.shield(task)


def _finished(running: dict[Key, asyncio.Future[Any]], key: Key, task: asyncio.Future[Any]) -> None:
    if running.get(key) is task:
        del running[key]
    if not task.cancelled():
        task.exception()  # retrieved, even if every caller has gone


cache = CredentialCache()
