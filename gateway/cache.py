"""The response cache: exact-match answers, opt-in per key, team or model (CachePolicy).

A request a policy covers is looked up under a key that holds everything that changes the
answer: the ingress format, the tenant (the key's team; a key without a team is a tenant
of its own), the user (or the service key) when the policy is per user, the model, the
headers the gateway forwards to the provider (`anthropic-version`, `anthropic-beta`), and
the whole request body as canonical JSON (messages, tools, tool_choice, sampling, response
format, stream and its options). Two teams never share an answer, whatever they send.
Neither do two ingress formats: an answer converted for one client is not byte for byte
what the other format would have been sent, so it is not offered as such.

An entry is the answer exactly as its first client received it (a JSON body, or the bytes
of an event stream), with that answer's usage, upstream cost and provider. Only complete
200 answers are kept, up to THINKWATCH_CACHE_MAX_ENTRY_BYTES. With REDIS_URL entries live
in Redis under `tw:cache:`, shared by every gateway process, expiring with their policy's
TTL; without it, in each gateway process's memory, an LRU of at most
THINKWATCH_CACHE_MEMORY_BYTES. An entry older than its policy's current TTL, or than the
last purge (`DELETE /api/cache`), is not served.

The cache never fails a request: a store that cannot be reached is a miss, logged.
"""

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.http import HttpResponse, HttpResponseBase
from redis.exceptions import RedisError

from gateway import proxy
from gateway.guardrails import Scope
from providers.pricing import Usage
from quotas import admission
from quotas.counters import Cost
from thinkwatch.lib import redis
from thinkwatch.lib.db import off_loop
from thinkwatch.lib.snapshot import Snapshot

if TYPE_CHECKING:
    from accounts.cache import KeyGrant
    from gateway.accounting import Call
    from gateway.formats import Ingress

logger = logging.getLogger(__name__)

PREFIX = "tw:cache:"
PURGE_ACTION = "cache.purge"
MAX_TTL_SECONDS = 30 * 24 * 3600
STREAM_TYPE = "text/event-stream"

_FREE = Cost(tokens=0, usd=0)
_UNAVAILABLE = (RedisError, OSError, TimeoutError)  # a store that is down
_UNREADABLE = (ValueError, KeyError, TypeError, IndexError)  # an entry that is not one


# --- the policies in force ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy(Scope):
    policy_id: int
    name: str
    ttl_seconds: int
    per_user: bool
    count_rate_limits: bool

    def specificity(self) -> tuple[bool, bool, bool]:
        return (self.key_id is not None, self.team_id is not None, bool(self.model_pattern))


@dataclass(frozen=True, slots=True)
class Policies:
    ranked: tuple[Policy, ...]  # the most specific first; among equals, the oldest
    purged_at: float  # when the cache was last purged (0: never)

    def applicable(self, team_id: int | None, key_id: int, model: str) -> Policy | None:
        return next((p for p in self.ranked if p.covers(team_id, key_id, model)), None)


def load_policies() -> Policies:
    from audit.models import AuditEvent
    from gateway.models import CachePolicy

    found = [
        Policy(
            team_id=row.team_id,
            key_id=row.api_key_id,
            model_pattern=row.model_pattern,
            policy_id=row.pk,
            name=row.name,
            ttl_seconds=row.ttl_seconds,
            per_user=row.per_user,
            count_rate_limits=row.count_rate_limits,
        )
        for row in CachePolicy.objects.filter(enabled=True).order_by("pk")
    ]
    found.sort(key=Policy.specificity, reverse=True)  # stable: the oldest first among equals
    purged = (
        AuditEvent.objects.filter(action=PURGE_ACTION)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    purged_at = purged.timestamp() if purged is not None else 0.0
    memory.forget_before(purged_at)
    return Policies(tuple(found), purged_at)


policies: Snapshot[Policies] = Snapshot(off_loop(load_policies))


# --- entries and where they are kept ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # what the client was sent
    content_type: str
    usage: Usage  # of the answer as the provider billed it
    cost_usd: float
    provider: str
    stored_at: float

    @property
    def streamed(self) -> bool:
        return self.content_type.startswith(STREAM_TYPE)

    def encode(self) -> bytes:
        usage = self.usage
        head = {
            "type": self.content_type,
            "usage": [usage.input, usage.output, usage.cached, usage.reasoning],
            "cost": self.cost_usd,
            "provider": self.provider,
            "stored_at": self.stored_at,
        }
        return orjson.dumps(head) + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> "Entry":
        head, _, body = raw.partition(b"\n")
        meta = orjson.loads(head)
        return cls(
            body,
            str(meta["type"]),
            Usage(*(int(n) for n in meta["usage"])),
            float(meta["cost"]),
            str(meta["provider"]),
            float(meta["stored_at"]),
        )


def _footprint(key: str, entry: Entry) -> int:
    return len(key) + len(entry.body) + len(entry.content_type) + len(entry.provider) + 200


class MemoryStore:
    """This process's entries: the least recently used go first once the store holds
    THINKWATCH_CACHE_MEMORY_BYTES."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()  # -> expiry
        self._size = 0
        self._lock = threading.Lock()
        self.purged_at = 0.0  # the last purge whose entries were dropped

    async def get(self, key: str) -> Entry | None:
        now = time.time()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[1] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return found[0]

    async def put(self, key: str, entry: Entry, ttl: int) -> None:
        capacity, size = settings.CACHE_MEMORY_BYTES, _footprint(key, entry)
        if size > capacity:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (entry, entry.stored_at + ttl)
            self._size += size
            while self._size > capacity:
                self._drop(next(iter(self._entries)))

    async def purge(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._size = 0
        return count

    def forget_before(self, moment: float) -> None:
        """Drop what was stored before a purge (once per purge)."""
        if moment <= self.purged_at:
            return
        with self._lock:
            self.purged_at = moment
            for key in [k for k, (e, _) in self._entries.items() if e.stored_at <= moment]:
                self._drop(key)

    @property
    def size(self) -> int:
        return self._size

    def _drop(self, key: str) -> None:
        entry, _ = self._entries.pop(key)
        self._size -= _footprint(key, entry)


class RedisStore:
    """Entries shared by every gateway process, each expiring with its policy's TTL."""

    async def get(self, key: str) -> Entry | None:
        raw = await redis.client().get(PREFIX + key)
        if raw is None:
            return None
        assert isinstance(raw, bytes)  # the client does not decode responses
        try:
            return Entry.decode(raw)
        except _UNREADABLE as exc:
            logger.warning("cache.unreadable_entry", extra={"error": type(exc).__name__})
            return None

    async def put(self, key: str, entry: Entry, ttl: int) -> None:
        await redis.client().set(PREFIX + key, entry.encode(), ex=ttl)

    async def purge(self) -> int:
        client, removed, batch = redis.client(), 0, []
        async for name in client.scan_iter(match=PREFIX + "*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                removed += await client.unlink(*batch)
                batch = []
        if batch:
            removed += await client.unlink(*batch)
        return removed


memory = MemoryStore()
_shared = RedisStore()


def store() -> MemoryStore | RedisStore:
    return _shared if settings.REDIS_URL else memory


class _Warnings:
    """One warning a minute while the store is unavailable, with how many were left out."""

    def __init__(self) -> None:
        self.last = float("-inf")
        self.left_out = 0


_warnings = _Warnings()
_pending: set[asyncio.Task[None]] = set()


def _unavailable(operation: str, exc: Exception) -> None:
    now = time.monotonic()
    if now - _warnings.last < 60:
        _warnings.left_out += 1
        return
    logger.warning(
        "cache.unavailable",
        extra={
            "operation": operation,
            "error": type(exc).__name__,
            "detail": str(exc)[:200],
            "since_last_warning": _warnings.left_out,
        },
    )
    _warnings.last, _warnings.left_out = now, 0


# --- one request ----------------------------------------------------------------------------


def key_of(
    ingress: "Ingress",
    grant: "KeyGrant",
    policy: Policy,
    model: str,
    payload: dict[str, Any],
    headers: Mapping[str, str],
) -> str:
    """The entry's name: a digest of everything that changes the answer, tenant first."""
    tenant = f"team:{grant.team_id}" if grant.team_id is not None else f"key:{grant.id}"
    user = ""
    if policy.per_user:
        user = f"user:{grant.owner_id}" if grant.owner_id is not None else f"key:{grant.id}"
    forwarded = [[name, headers[name]] for name in ingress.forwarded_headers if name in headers]
    material = [ingress.name, tenant, user, model, forwarded, payload]
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _directives(value: str) -> frozenset[str]:
    return frozenset(part.split("=", 1)[0].strip().lower() for part in value.split(","))


@dataclass(slots=True)
class Reuse:
    """The cache's part in one request a policy covers: the entry found, if any, and
    whether the answer is to be kept."""

    policy: Policy
    key: str  # empty when the client asked for no-store
    entry: Entry | None = None

    @property
    def stores(self) -> bool:
        return bool(self.key) and self.policy.ttl_seconds > 0


async def lookup(
    call: "Call",
    grant: "KeyGrant",
    ingress: "Ingress",
    payload: dict[str, Any],
    headers: Mapping[str, str],
) -> Reuse | None:
    """The request's entry, when a policy covers it (None: no policy, nothing to do).
    `Cache-Control: no-store` neither reads nor keeps; `no-cache` keeps without reading."""
    table = await policies.get()
    policy = table.applicable(grant.team_id, grant.id, call.model)
    if policy is None:
        return None
    directives = _directives(headers.get("cache-control", ""))
    if "no-store" in directives:
        call.cache = {"status": "bypass"}
        return Reuse(policy, "")
    try:
        key = key_of(ingress, grant, policy, call.model, payload, headers)
    except orjson.JSONEncodeError:  # nested deeper than canonical JSON goes: not cached
        call.cache = {"status": "bypass", "reason": "unkeyable"}
        return Reuse(policy, "")
    reuse = Reuse(policy, key)
    if "no-cache" in directives:
        call.cache = {"status": "miss", "reason": "no-cache"}
        return reuse
    try:
        entry = await store().get(reuse.key)
    except _UNAVAILABLE as exc:
        _unavailable("read", exc)
        call.cache = {"status": "miss", "reason": "unavailable"}
        return reuse
    if entry is not None and _fresh(entry, policy, table.purged_at):
        reuse.entry = entry
    else:
        call.cache = {"status": "miss"}
    return reuse


def _fresh(entry: Entry, policy: Policy, purged_at: float) -> bool:
    """Stored after the last purge, and within the policy's TTL as it is now (a shorter
    TTL applies at once to what is already stored)."""
    return purged_at < entry.stored_at and time.time() - entry.stored_at < policy.ttl_seconds


async def replay(call: "Call", reuse: Reuse) -> HttpResponseBase:
    """The stored answer, as its first client received it, at no cost. It counts against
    the rate limits of the key, its user, its team and the model when the policy says so
    (a request, no tokens, no spend): past a limit the request is refused with its 429."""
    entry, policy = reuse.entry, reuse.policy
    assert entry is not None and call.grant is not None
    if policy.count_rate_limits:
        others = (("team", call.grant.team_id), ("model", call.model))
        await admission.admit(call, "ai_gateway", others, _FREE)
    age = max(0, int(time.time() - entry.stored_at))
    call.status = 200
    call.first_byte()
    call.cache = {
        "status": "hit",
        "policy_id": policy.policy_id,
        "age_seconds": age,
        "provider": entry.provider,
        "saved_usd": round(entry.cost_usd, 10),
        "saved_input_tokens": entry.usage.input,
        "saved_output_tokens": entry.usage.output,
    }
    response: HttpResponseBase
    if entry.streamed:
        call.streamed = True
        if call.capture is not None:
            call.capture.stream(entry.body)
        response = proxy.EventStream(_Replay(entry.body))
    else:
        if call.capture is not None:
            call.capture.respond(entry.body)
        response = HttpResponse(entry.body, content_type=entry.content_type)
    response["x-cache"] = "hit"
    response["age"] = str(age)
    response["x-thinkwatch-cost-usd"] = "0"
    return response


class _Replay:
    """A stored stream as the source of an EventStream."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        yield self.body

    def close(self) -> None:
        return None


def keep(call: "Call", reuse: Reuse, response: HttpResponseBase) -> None:
    """Mark an answer that did not come from the cache, and keep it when it is complete:
    a 200 JSON answer now, a stream once it has ended cleanly (`Sink`)."""
    response["x-cache"] = "miss" if reuse.key else "bypass"
    if not reuse.stores:
        return
    source = getattr(response, "source", None)
    if isinstance(source, proxy.Relay):
        source.sink = Sink(call, reuse)
        return
    if isinstance(response, HttpResponse) and response.status_code == 200 and call.status == 200:
        _store(call, reuse, response.content, response["Content-Type"])


class Sink:
    """A stream's bytes as its client receives them (up to the entry size limit), kept
    when the stream has run to its end without an error."""

    def __init__(self, call: "Call", reuse: Reuse) -> None:
        self.call, self.reuse = call, reuse
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        limit = settings.CACHE_MAX_ENTRY_BYTES
        if self.size > limit:
            return
        self.size += len(data)
        if self.size > limit:
            self.parts = []
            return
        self.parts.append(data)

    def ended(self, complete: bool) -> None:
        """After the relay closed: the call holds the stream's final usage and outcome."""
        call = self.call
        clean = complete and call.status == 200 and not call.error_code and not call.disconnected
        if clean and self.size <= settings.CACHE_MAX_ENTRY_BYTES:
            _store(call, self.reuse, b"".join(self.parts), STREAM_TYPE)


def _store(call: "Call", reuse: Reuse, body: bytes, content_type: str) -> None:
    """Write the entry in the background: the client does not wait for the store."""
    if len(body) > settings.CACHE_MAX_ENTRY_BYTES:
        return
    upstream = call.upstream
    entry = Entry(
        body,
        content_type,
        call.usage,
        call.cost(),
        upstream.provider_name if upstream is not None else "",
        time.time(),
    )
    task = asyncio.get_running_loop().create_task(_put(reuse.key, entry, reuse.policy.ttl_seconds))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def writes_in_flight() -> int:
    """Entries this process is still writing."""
    return len(_pending)


async def _put(key: str, entry: Entry, ttl: int) -> None:
    try:
        await store().put(key, entry, ttl)
    except _UNAVAILABLE as exc:
        _unavailable("write", exc)


# --- purging (the management API) ---------------------------------------------------------------


def purge(actor: dict[str, Any]) -> dict[str, Any]:
    """Drop every entry. Redis entries are deleted here; gateway processes holding entries
    in memory drop them when they reload their config, which the purge announces (its
    admin audit event is the mark older entries are judged by). `actor`: the event's
    who-and-from-where fields."""
    from asgiref.sync import async_to_sync
    from django.db import transaction

    from audit.models import AuditEvent
    from gateway import revision

    detail: dict[str, Any] = {"store": "memory", "entries": None}
    if settings.REDIS_URL:
        detail = {"store": "redis", "entries": async_to_sync(_shared.purge)()}
    with transaction.atomic():
        AuditEvent.objects.create(
            action=PURGE_ACTION,
            object_type="gateway.cache",
            object_repr="response cache",
            detail=detail,
            **actor,
        )
        revision.bump()
    logger.info("cache.purged", extra=detail)
    return detail
