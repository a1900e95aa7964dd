"""Sessions of the session-based protocol era (2025-03-26 … 2025-11-25).

A session belongs to the key that created it: the same id presented with another key is
answered as unknown (404), so a leaked id is useless. With REDIS_URL the sessions live in
Redis and any gateway instance can serve them; otherwise in this process. Idle sessions
expire after the `mcp.session_idle_seconds` runtime setting.

What cannot move between processes stays here: requests in flight (for cancellation) and
the open GET stream that carries notifications.
"""

import asyncio
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from django.conf import settings

from accounts.runtime import setting

_REDIS_PREFIX = "tw:mcp:session:"
Queue = asyncio.Queue[dict[str, Any] | None]
_TOUCH_EVERY = 30.0


@dataclass
class Session:
    id: str
    key_id: int
    version: str
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)


class MemoryStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    async def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        now = time.time()
        if session is None:
            return None
        if now - session.seen > setting("mcp.session_idle_seconds"):
            del self._sessions[session_id]
            return None
        session.seen = now
        return session

    async def put(self, session: Session) -> None:
        self._sessions[session.id] = session
        if len(self._sessions) % 1000 == 0:
            self._expire()

    async def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def _expire(self) -> None:
        limit = time.time() - setting("mcp.session_idle_seconds")
        for sid in [s.id for s in self._sessions.values() if s.seen < limit]:
            del self._sessions[sid]


class RedisStore:
    async def get(self, session_id: str) -> Session | None:
        from thinkwatch.lib import redis

        raw = await redis.client().get(_REDIS_PREFIX + session_id)
        if raw is None:
            return None
        session = Session(**orjson.loads(raw))
        now = time.time()
        if now - session.seen > _TOUCH_EVERY:
            session.seen = now
            await self.put(session)
        return session

    async def put(self, session: Session) -> None:
        from thinkwatch.lib import redis

        await redis.client().set(
            _REDIS_PREFIX + session.id,
            orjson.dumps(asdict(session)),
            ex=setting("mcp.session_idle_seconds"),
        )

    async def delete(self, session_id: str) -> bool:
        from thinkwatch.lib import redis

        return bool(await redis.client().delete(_REDIS_PREFIX + session_id))


_store: MemoryStore | RedisStore | None = None


def store() -> MemoryStore | RedisStore:
    global _store
    if _store is None:
        _store = RedisStore() if settings.REDIS_URL else MemoryStore()
    return _store


def new_id() -> str:
    # 32 random bytes as hex: visible ASCII, as the transport requires.
    return secrets.token_hex(32)


class Local:
    """This process's share of the sessions: requests in flight and notification streams."""

    def __init__(self) -> None:
        self.in_flight: dict[tuple[str, Any], asyncio.Task[Any]] = {}
        # The loop is kept with each queue: notifications can come from other threads.
        self.streams: dict[str, tuple[asyncio.AbstractEventLoop, Queue]] = {}

    def cancel(self, session_id: str, request_id: Any) -> bool:
        task = self.in_flight.get((session_id, request_id))
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def open_stream(self, session_id: str) -> Queue:
        """The session's notification stream; a newer GET replaces an older one (a message
        goes to one stream only)."""
        previous = self.streams.get(session_id)
        if previous is not None:
            _post(previous, None)
        queue: Queue = asyncio.Queue(maxsize=100)
        self.streams[session_id] = (asyncio.get_running_loop(), queue)
        return queue

    def close_stream(self, session_id: str, queue: Queue) -> None:
        entry = self.streams.get(session_id)
        if entry is not None and entry[1] is queue:
            del self.streams[session_id]

    def end(self, session_id: str) -> None:
        entry = self.streams.pop(session_id, None)
        if entry is not None:
            _post(entry, None)
        for (sid, _), task in list(self.in_flight.items()):
            if sid == session_id:
                task.cancel()

    def notify_all(self, methods: tuple[str, ...]) -> None:
        """Tell every open stream (thread-safe: config changes arrive from anywhere)."""
        for entry in list(self.streams.values()):
            for method in methods:
                _post(entry, {"jsonrpc": "2.0", "method": method})


def _post(entry: tuple[asyncio.AbstractEventLoop, Queue], message: dict[str, Any] | None) -> None:
    loop, queue = entry

    def put() -> None:
        if not queue.full():
            queue.put_nowait(message)

    if not loop.is_closed():
        loop.call_soon_threadsafe(put)


local = Local()
