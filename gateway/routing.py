"""Which route serves a request, and what happens when it fails.

A model has one or more routes (provider + upstream model name + weight + optional price).
For each request the routes are put in an order by the model's strategy (or the global
default, runtime setting `gateway.routing_strategy`):

- weighted: random, in proportion to the weights (then the rest, the same way);
- latency: lowest EWMA of the time the provider took to start answering first (the whole
  answer for non-streaming calls, the first bytes for streams), measured by this process;
- healthiest: fewest recent failures (EWMA of the failure rate), then latency;
- cheapest: lowest price per million input + output tokens, then weight.

With affinity (a model's `affinity_seconds`), the route that last served the same user
(or service key) comes first while it stays healthy.

Each route has a circuit breaker: after `gateway.breaker_failures` consecutive failures
(connect errors, timeouts, 408, 429, 5xx, refused credentials, broken streams) it opens
for `gateway.breaker_open_seconds`; then one call per process is let through (half open)
and decides. With REDIS_URL the failure counts and open breakers live in Redis, so every
gateway instance agrees: counts are written only on failures, and each process reads the
open set twice a second in the background, never on a request.

A failed attempt is tried again — on the next route at once, or when every route has been
tried, on the first again after an exponential backoff with full jitter (base
`gateway.retry_backoff_ms`), or the provider's Retry-After — up to `gateway.retry_attempts`
attempts and `gateway.retry_max_wait_ms` of waiting; only for connect errors, connect
timeouts, 408, 429 and 5xx (never other 4xx, never after a stream's first byte). Every
attempt and why its route was chosen go into the request's log record (`routing`).
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings

from accounts.runtime import setting
from gateway.errors import GatewayError, no_route
from providers.cache import ModelPlan, Upstream

logger = logging.getLogger(__name__)

STRATEGIES = ("weighted", "latency", "healthiest", "cheapest")
_ALPHA = 0.2  # weight of the newest sample in the moving averages
_SYNC_SECONDS = 0.5
_FAILURE_WINDOW_SECONDS = 300  # consecutive failures further apart than this don't add up
_AFFINITY_LIMIT = 100_000  # in-process affinity entries kept at most
REDIS_PREFIX = "tw:route:"

T = TypeVar("T")


# --- health: latency and failure rate per route, in this process ----------------------------


@dataclass(slots=True)
class Health:
    latency_ms: float | None = None
    failure_rate: float = 0.0

    def succeeded(self, latency_ms: float) -> None:
        previous = self.latency_ms
        self.latency_ms = (
            latency_ms if previous is None else previous + _ALPHA * (latency_ms - previous)
        )
        self.failure_rate -= _ALPHA * self.failure_rate

    def failed(self) -> None:
        self.failure_rate += _ALPHA * (1.0 - self.failure_rate)


_health: dict[str, Health] = {}


def health(key: str) -> Health:
    found = _health.get(key)
    if found is None:
        found = _health[key] = Health()
    return found


# --- circuit breakers ---------------------------------------------------------------------


@dataclass(slots=True)
class Breaker:
    failures: int = 0
    last_failure: float = 0.0
    open_until: float = 0.0  # epoch seconds; 0: closed
    probing: bool = False  # half open: this process's trial call is under way

    def state(self, now: float) -> str:
        if not self.open_until:
            return "closed"
        return "open" if now < self.open_until or self.probing else "half_open"


class Breakers:
    """Every route's breaker as this process knows it; with Redis, shared."""

    def __init__(self) -> None:
        self.local: dict[str, Breaker] = {}
        self._sync: asyncio.Task[None] | None = None

    def get(self, key: str) -> Breaker:
        found = self.local.get(key)
        if found is None:
            found = self.local[key] = Breaker()
        return found

    def usable(self, key: str, now: float) -> bool:
        """Whether a request may use the route now (closed, or half open and no trial yet)."""
        breaker = self.local.get(key)
        return breaker is None or breaker.state(now) != "open"

    def begin(self, key: str, now: float) -> bool:
        """An attempt on the route starts; True when it is the half-open trial."""
        breaker = self.local.get(key)
        if breaker is None or breaker.state(now) != "half_open":
            return False
        breaker.probing = True
        return True

    async def succeeded(self, key: str) -> None:
        breaker = self.local.get(key)
        if breaker is None or (not breaker.failures and not breaker.open_until):
            return
        breaker.failures, breaker.open_until, breaker.probing = 0, 0.0, False
        logger.info("route.breaker_closed", extra={"route": key})
        if settings.REDIS_URL:
            await _shared(self._forget(key))

    async def failed(self, key: str, now: float) -> None:
        breaker = self.get(key)
        trial, breaker.probing = breaker.probing, False
        if now - breaker.last_failure > _FAILURE_WINDOW_SECONDS:
            breaker.failures = 0
        breaker.last_failure = now
        breaker.failures += 1
        failures = breaker.failures
        if settings.REDIS_URL:
            failures = await _shared(self._count(key)) or failures
        threshold = setting("gateway.breaker_failures")
        if trial or (failures >= threshold and not breaker.open_until):
            breaker.open_until = now + setting("gateway.breaker_open_seconds")
            logger.warning(
                "route.breaker_opened",
                extra={"route": key, "failures": failures, "trial": trial},
            )
            if settings.REDIS_URL:
                await _shared(self._open(key, breaker.open_until))

    # Redis: a counter per route (consecutive failures, expiring after the window) and one
    # hash of the open breakers, route -> open until.

    @staticmethod
    async def _count(key: str) -> int:
        from thinkwatch.lib import redis

        name = f"{REDIS_PREFIX}failures:{key}"
        async with redis.client().pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, _FAILURE_WINDOW_SECONDS)
            count, _ = await pipe.execute()
        return int(count)

    @staticmethod
    async def _open(key: str, until: float) -> None:
        from thinkwatch.lib import redis

        await redis.client().hset(f"{REDIS_PREFIX}open", key, f"{until:.3f}")

    @staticmethod
    async def _forget(key: str) -> None:
        from thinkwatch.lib import redis

        async with redis.client().pipeline(transaction=True) as pipe:
            pipe.delete(f"{REDIS_PREFIX}failures:{key}")
            pipe.hdel(f"{REDIS_PREFIX}open", key)
            await pipe.execute()

    def ensure_sync(self) -> None:
        """Start reading the shared state in the background (once per event loop)."""
        task = self._sync
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        self._sync = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                await self.pull()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep what is known, try again
                logger.warning("route.breaker_sync_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(_SYNC_SECONDS)

    async def pull(self) -> None:
        """Take the open breakers from Redis: opened by another instance, or closed there
        after a successful call."""
        from thinkwatch.lib import redis

        shared = await redis.client().hgetall(f"{REDIS_PREFIX}open")
        opened = {_text(k): float(v) for k, v in shared.items()}
        for key, until in opened.items():
            breaker = self.get(key)
            if breaker.open_until < until:
                breaker.open_until = until
        for key, breaker in self.local.items():
            if breaker.open_until and key not in opened and not breaker.probing:
                breaker.open_until, breaker.failures = 0.0, 0

    def clear(self) -> None:
        self.local.clear()


async def _shared(work: Awaitable[T]) -> T | None:
    """A write to the shared state that must not fail the request: without Redis the
    breaker works from what this process saw."""
    try:
        return await work
    except Exception as exc:
        logger.warning("route.breaker_store_failed", extra={"error": type(exc).__name__})
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


breakers = Breakers()
# Route key -> "provider/upstream model" ("provider/*" for models served by prefix), for
# the metrics: one label value per configured route or provider, never a client's name.
names: dict[str, str] = {}


# --- affinity -------------------------------------------------------------------------------


class Affinity:
    """The route that last served (model, subject), kept for the model's affinity time."""

    def __init__(self) -> None:
        self.local: dict[tuple[str, str], tuple[str, float]] = {}

    async def get(self, model: str, subject: str) -> str | None:
        if settings.REDIS_URL:
            from thinkwatch.lib import redis

            try:
                found = await redis.client().get(f"{REDIS_PREFIX}affinity:{model}:{subject}")
            except Exception as exc:
                logger.warning("route.affinity_failed", extra={"error": type(exc).__name__})
                return None
            return _text(found) if found else None
        entry = self.local.get((model, subject))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    async def put(self, model: str, subject: str, key: str, seconds: int) -> None:
        if settings.REDIS_URL:
            from thinkwatch.lib import redis

            name = f"{REDIS_PREFIX}affinity:{model}:{subject}"
            await _shared(redis.client().set(name, key, ex=seconds))
            return
        if len(self.local) >= _AFFINITY_LIMIT:
            now = time.monotonic()
            self.local = {k: v for k, v in self.local.items() if v[1] >= now}
            if len(self.local) >= _AFFINITY_LIMIT:
                self.local.clear()
        self.local[(model, subject)] = (key, time.monotonic() + seconds)


affinity = Affinity()


# --- ordering -------------------------------------------------------------------------------


def _per_million(plan: ModelPlan, upstream: Upstream) -> float:
    price = plan.price_of(upstream)
    return (price.input + price.output) * 1_000_000


def rank(plan: ModelPlan, strategy: str) -> list[tuple[Upstream, str]]:
    """The plan's routes in the order the strategy tries them, each with why it is there."""
    routes = list(plan.upstreams)
    if strategy == "latency":
        # Routes not measured yet go first: one call measures them.
        routes.sort(key=lambda u: health(u.key).latency_ms or 0.0)
        return [(u, _latency_reason(u)) for u in routes]
    if strategy == "healthiest":
        routes.sort(
            key=lambda u: (round(health(u.key).failure_rate, 3), health(u.key).latency_ms or 0.0)
        )
        return [(u, f"healthiest (failure rate {health(u.key).failure_rate:.2f})") for u in routes]
    if strategy == "cheapest":
        routes.sort(key=lambda u: (_per_million(plan, u), -u.weight))
        return [(u, f"cheapest (${_per_million(plan, u):.4g} per 1M tokens)") for u in routes]
    total = sum(u.weight for u in routes)
    ordered: list[tuple[Upstream, str]] = []
    while routes:
        chosen = (
            routes[0] if len(routes) == 1 else random.choices(routes, [u.weight for u in routes])[0]
        )
        ordered.append((chosen, f"weighted (weight {chosen.weight} of {total})"))
        routes.remove(chosen)
    return ordered


def _latency_reason(upstream: Upstream) -> str:
    latency = health(upstream.key).latency_ms
    if latency is None:
        return "lowest latency (not measured yet)"
    return f"lowest latency (EWMA {latency:.0f} ms)"


def strategy_of(plan: ModelPlan) -> str:
    return plan.strategy or setting("gateway.routing_strategy")


# --- one request's attempts -----------------------------------------------------------------


@dataclass(slots=True)
class Attempts:
    """The routes one request tries, and what became of each (its log record's `routing`)."""

    plan: ModelPlan
    strategy: str
    order: list[tuple[Upstream, str]]
    subject: str | None
    tried: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    current: Upstream | None = None
    reason: str = ""
    keys_tried: set[str] = field(default_factory=set)
    first_ms: float = 0.0  # how long the answering route took to start answering

    def record(self) -> dict[str, Any]:
        found: dict[str, Any] = {"strategy": self.strategy, "attempts": self.tried}
        if self.skipped:
            found["skipped"] = self.skipped
        return found

    async def run(self, call: Any, send: Callable[[Upstream], Awaitable[T]]) -> T:
        """Call `send` with each route in turn until one answers, or the failure is final
        (raised as the last attempt's error)."""
        max_attempts = setting("gateway.retry_attempts")
        while True:
            upstream = self.current
            assert upstream is not None
            call.upstream, call.price = upstream, self.plan.price_of(upstream)
            started = time.perf_counter()
            entry: dict[str, Any] = {
                "route_id": upstream.route_id,
                "provider": upstream.provider_name,
                "upstream_model": upstream.upstream_model,
                "reason": self.reason,
            }
            self.tried.append(entry)
            self.keys_tried.add(upstream.key)
            trial = breakers.begin(upstream.key, time.time())
            if trial:
                entry["trial"] = True
            try:
                result = await send(upstream)
            except GatewayError as error:
                entry["outcome"] = error.outcome or error.code or f"http_{error.status}"
                entry["ms"] = round((time.perf_counter() - started) * 1000, 1)
                if error.unhealthy:
                    health(upstream.key).failed()
                    await breakers.failed(upstream.key, time.time())
                elif trial:
                    breakers.get(upstream.key).probing = False
                if not error.retryable or len(self.tried) >= max_attempts:
                    raise
                if not await self._next(error):
                    raise
                continue
            except BaseException:
                if trial:  # not the route's fault (cancelled, a bug): the next call tries
                    breakers.get(upstream.key).probing = False
                raise
            self.first_ms = (time.perf_counter() - started) * 1000
            entry["outcome"] = "ok"
            entry["ms"] = round(self.first_ms, 1)
            if not call.streamed:  # a stream's outcome is known at its end: stream_ended
                await self.succeeded(upstream, self.first_ms)
            return result

    async def succeeded(self, upstream: Upstream, elapsed_ms: float) -> None:
        health(upstream.key).succeeded(elapsed_ms)
        await breakers.succeeded(upstream.key)
        if self.subject is not None and self.plan.affinity_seconds:
            await affinity.put(
                self.plan.model_id, self.subject, upstream.key, self.plan.affinity_seconds
            )

    def stream_ended(self, ok: bool) -> None:
        """The relay's end hook: a stream that broke after its first bytes counts against
        its route (it is not tried again: the client has part of an answer)."""
        upstream = self.current
        assert upstream is not None
        if ok:
            _background(self.succeeded(upstream, self.first_ms))
        else:
            health(upstream.key).failed()
            _background(breakers.failed(upstream.key, time.time()))

    async def _next(self, error: GatewayError) -> bool:
        """Move to the next route, waiting first when it was tried already; False when
        there is none to try within the waiting allowed."""
        now = time.time()
        usable = [(u, why) for u, why in self.order if breakers.usable(u.key, now)]
        fresh = [(u, why) for u, why in usable if u.key not in self.keys_tried]
        outcome = error.outcome or f"http_{error.status}"
        if fresh:
            self.current = fresh[0][0]
            self.reason = f"failover after {outcome}; {fresh[0][1]}"
            return True
        if not usable:
            return False
        retries = len(self.tried)
        base = setting("gateway.retry_backoff_ms") / 1000
        wait = random.uniform(0, base * 2 ** (retries - 1))
        if error.retry_after is not None:
            wait = error.retry_after
        if wait * 1000 > setting("gateway.retry_max_wait_ms"):
            return False
        await asyncio.sleep(wait)
        self.current = usable[0][0]
        self.reason = f"retry after {outcome}, waited {wait:.2f} s; {usable[0][1]}"
        return True


async def attempts(plan: ModelPlan, subject: str | None) -> Attempts:
    """The plan's routes for one request, the first chosen; raises the 503 when every
    route's breaker is open."""
    if settings.REDIS_URL:
        breakers.ensure_sync()
    strategy = strategy_of(plan)
    order = rank(plan, strategy)
    for upstream, _ in order:
        model = upstream.upstream_model if upstream.route_id is not None else "*"
        names[upstream.key] = f"{upstream.provider_name}/{model}"
    now = time.time()
    usable = [(u, why) for u, why in order if breakers.usable(u.key, now)]
    skipped = [
        {"route_id": u.route_id, "provider": u.provider_name, "reason": "circuit open"}
        for u, _ in order
        if not breakers.usable(u.key, now)
    ]
    if not usable:
        soonest = min(breakers.get(u.key).open_until for u, _ in order) - now
        error = no_route(
            f"Every route of the model '{plan.model_id}' is failing; calls to it are paused "
            "for a while (circuit open)."
        )
        error.headers["Retry-After"] = str(max(1, round(soonest)))
        raise error
    if plan.affinity_seconds and subject is not None and len(usable) > 1:
        kept = await affinity.get(plan.model_id, subject)
        for index, (upstream, _) in enumerate(usable):
            if upstream.key == kept:
                usable.insert(
                    0, (upstream, f"affinity (served this caller within {plan.affinity_seconds} s)")
                )
                del usable[index + 1]
                break
    found = Attempts(plan, strategy, usable, subject, skipped=skipped)
    found.current, found.reason = usable[0]
    return found


_pending: set[asyncio.Task[Any]] = set()


def _background(work: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def clear() -> None:
    """Forget what this process measured (tests; a config change keeps it)."""
    _health.clear()
    breakers.clear()
    affinity.local.clear()
    names.clear()
