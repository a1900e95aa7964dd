"""API keys as the gateway sees them: an in-process projection, so a warm request never
queries the database.

Hits and misses are both cached (misses in a smaller, separate cache, so a flood of
made-up keys cannot push real ones out). Concurrent lookups of one uncached key share a
single database query. Everything is dropped when the config revision changes.
"""

import asyncio
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

from cachetools import TTLCache
from django.conf import settings

from accounts.access import Rights
from accounts.models import ApiKey, KeyState
from thinkwatch.lib.db import off_loop


@dataclass(frozen=True, slots=True)
class KeyGrant:
    id: int
    prefix: str
    name: str
    owner_id: int | None
    team_id: int | None
    surfaces: frozenset[str]
    # Surfaces whose `<surface>:use` right the owner holds in the key's team (service keys:
    # all of them; an admin issued the key for exactly those surfaces).
    usable: frozenset[str]
    model_patterns: tuple[str, ...]
    mcp_tools: tuple[str, ...] | None  # None: as the owner's roles allow
    expires_at: float | None
    grace_ends_at: float | None
    revoked: bool
    owner_active: bool
    inactivity_seconds: float | None
    last_used_at: float  # when the key was last used, as of loading (created_at if never)

    def refusal(self, now: float, used_here: float | None) -> str | None:
        """Why the key cannot be used now, or None. `used_here`: last use in this process."""
        if self.revoked:
            return KeyState.REVOKED
        if not self.owner_active:
            return "owner_disabled"
        if self.grace_ends_at is not None and self.grace_ends_at <= now:
            return KeyState.ROTATED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        if self.inactivity_seconds is not None:
            last = max(self.last_used_at, used_here or 0.0)
            if last + self.inactivity_seconds <= now:
                return KeyState.INACTIVE
        return None

    def allows_model(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.model_patterns)


def _ts(value: object) -> float | None:
    return value.timestamp() if value is not None else None  # type: ignore[attr-defined]


def _usable(key: ApiKey) -> frozenset[str]:
    if key.owner is None:
        return frozenset(key.surfaces)
    rights = Rights.of(key.owner)
    return frozenset(s for s in key.surfaces if rights.has(f"{s}:use", key.team_id))


def grant_of(key: ApiKey) -> KeyGrant:
    return KeyGrant(
        id=key.pk,
        prefix=key.prefix,
        name=key.name,
        owner_id=key.owner_id,
        team_id=key.team_id,
        surfaces=frozenset(key.surfaces),
        usable=_usable(key),
        model_patterns=tuple(key.allowed_models),
        mcp_tools=None if key.mcp_tools is None else tuple(key.mcp_tools),
        expires_at=_ts(key.expires_at),
        grace_ends_at=_ts(key.grace_ends_at),
        revoked=key.revoked_at is not None,
        owner_active=key.owner is None or key.owner.is_active,
        inactivity_seconds=(
            key.inactivity_timeout_days * 86400 if key.inactivity_timeout_days else None
        ),
        last_used_at=(_ts(key.last_used_at) or _ts(key.created_at) or 0.0),
    )


@off_loop
def _load(key_hash: str) -> KeyGrant | None:
    key = ApiKey.objects.select_related("owner").filter(key_hash=key_hash).first()
    return grant_of(key) if key else None


class KeyCache:
    def __init__(self) -> None:
        self._hits: TTLCache[str, KeyGrant] = TTLCache(50_000, settings.KEY_CACHE_SECONDS or 1e-9)
        self._misses: TTLCache[str, bool] = TTLCache(4_096, settings.KEY_CACHE_SECONDS or 1e-9)
        self._loading: dict[str, asyncio.Future[KeyGrant | None]] = {}
        # Bumped by clear(): a load that started before a change must not be cached after it.
        self._generation = 0
        # Last use of each key in this process; the log writer persists it (once a minute).
        self.used: dict[int, float] = {}

    async def get(self, key_hash: str) -> KeyGrant | None:
        grant = self._hits.get(key_hash)
        if grant is not None:
            return grant
        if key_hash in self._misses:
            return None
        task = self._loading.get(key_hash)
        if task is None:
            # A task of its own: the request that started the load may go away meanwhile.
            task = asyncio.ensure_future(self._fill(key_hash, self._generation))
            self._loading[key_hash] = task
        return await asyncio.shield(task)

    async def _fill(self, key_hash: str, generation: int) -> KeyGrant | None:
        try:
            grant = await _load(key_hash)
        finally:
            if self._loading.get(key_hash) is asyncio.current_task():
                del self._loading[key_hash]
        if generation == self._generation:
            if grant is None:
                self._misses[key_hash] = True
            else:
                self._hits[key_hash] = grant
        return grant

    def note_use(self, grant: KeyGrant) -> None:
        self.used[grant.id] = time.time()

    def clear(self) -> None:
        self._generation += 1
        self._loading.clear()
        self._hits.clear()
        self._misses.clear()


keys = KeyCache()
