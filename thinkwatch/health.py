"""Liveness and readiness, served on both ports, and `/api/health` for operators.

Readiness asks every dependency the configuration names, all at once, each within
CHECK_TIMEOUT seconds: the database (and that a provider is enabled: a gateway without one
cannot serve anything), Redis with REDIS_URL, ClickHouse with CLICKHOUSE_URL, and the
bucket captured bodies are offloaded to with THINKWATCH_BODY_S3_BUCKET. A failure is
reported by the exception's type only: messages of database and Redis clients can quote
the URL they were given, password included.
"""

import asyncio
import platform
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any, cast

import orjson
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema

from providers.models import Provider
from thinkwatch.guard import needs
from thinkwatch.lib.db import off_loop

CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class Result:
    name: str
    problem: str | None  # None: ok
    latency_ms: float
    facts: dict[str, Any]  # what the check learnt: the server's version, ...

    @property
    def version(self) -> str | None:
        return self.facts.get("version")

    def public(self) -> dict[str, Any]:
        """What /health/ready shows anyone who asks: no versions."""
        shown: dict[str, Any] = {
            "name": self.name,
            "status": "failed" if self.problem else "ok",
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.problem:
            shown["problem"] = self.problem
        return shown


Check = Callable[[], Awaitable[dict[str, Any]]]


async def _timed(name: str, check: Check) -> Result:
    started = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT)
    except TimeoutError:
        problem: str | None = f"{name} did not answer within {CHECK_TIMEOUT:g} s"
        outcome = {}
    except Exception as exc:
        problem, outcome = f"{name} unreachable: {type(exc).__name__}", {}
    else:
        problem = None
    return Result(name, problem, (time.perf_counter() - started) * 1000, outcome)


@off_loop
def _database() -> dict[str, Any]:
    # One trip to the worker thread for both questions.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    enabled = Provider.objects.filter(enabled=True).exists()
    if connection.vendor == "postgresql":
        major, minor = divmod(cast(Any, connection).pg_version, 10000)  # the backend's
        version = f"PostgreSQL {major}.{minor}"
    else:
        import sqlite3

        version = f"SQLite {sqlite3.sqlite_version}"
    return {"version": version, "providers_enabled": enabled}


async def _redis() -> dict[str, Any]:
    from thinkwatch.lib import redis

    info = await redis.client().info("server")
    return {"version": f"Redis {info.get('redis_version', '?')}"}


def _clickhouse_ping() -> None:
    from audit import store

    store.current().ping()


# clickhouse-driver is synchronous: a ping that hangs holds its thread past the check's
# timeout (until the driver's own). One thread, and one ping in flight that every check
# shares, so a stuck server cannot take more threads with each probe.
_clickhouse_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-clickhouse")
_clickhouse_ping_running: Future[None] | None = None


async def _clickhouse() -> dict[str, Any]:
    global _clickhouse_ping_running
    ping = _clickhouse_ping_running
    if ping is None or ping.done():
        ping = _clickhouse_ping_running = _clickhouse_thread.submit(_clickhouse_ping)
    await asyncio.shield(asyncio.wrap_future(ping))
    return {}


@off_loop
def _body_storage() -> dict[str, Any]:
    """The bucket captured bodies are offloaded to exists and these credentials reach it."""
    from audit import bodies

    found = bodies.storage()
    if found is not None:
        found.connection.meta.client.head_bucket(Bucket=settings.BODY_S3_BUCKET)
    return {}


def configured() -> dict[str, Check]:
    """The dependencies this configuration has, by name."""
    checks: dict[str, Check] = {"database": _database}
    if settings.REDIS_URL:
        checks["redis"] = _redis
    if settings.CLICKHOUSE_URL:
        checks["clickhouse"] = _clickhouse
    if settings.BODY_S3_BUCKET:
        checks["body_storage"] = _body_storage
    return checks


async def check_all() -> tuple[list[Result], list[str]]:
    """Every dependency's result, and the problems that make the process not ready."""
    checks = configured()
    results = list(await asyncio.gather(*(_timed(n, c) for n, c in checks.items())))
    problems = [r.problem for r in results if r.problem]
    if results[0].facts.get("providers_enabled") is False:
        problems.append("no provider is enabled")  # nothing to serve
    return results, problems


def _json(body: dict[str, object], status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


async def live(request: HttpRequest) -> HttpResponse:
    return _json({"status": "ok"})


async def ready(request: HttpRequest) -> HttpResponse:
    results, problems = await check_all()
    body: dict[str, object] = {
        "status": "unavailable" if problems else "ok",
        "dependencies": [r.public() for r in results],
    }
    if problems:
        body["problems"] = problems
        return _json(body, status=503)
    return _json(body)


# --- /api/health (console, management API) ----------------------------------------------------


class DependencyOut(Schema):
    name: str
    status: str
    latency_ms: float
    problem: str | None = None
    version: str | None = None


class HealthOut(Schema):
    status: str
    problems: list[str]
    dependencies: list[DependencyOut]
    pools: dict[str, Any]
    versions: dict[str, str]


router = Router(tags=["health"])


def _database_pool() -> dict[str, Any] | None:
    """The psycopg pool's counters (PostgreSQL with the pool option); None without one."""
    pool = getattr(connection, "pool", None)
    if pool is None:
        return None
    return dict(pool.get_stats())


def _redis_pool() -> dict[str, int] | None:
    """This process's Redis connections on the current event loop."""
    if not settings.REDIS_URL:
        return None
    from thinkwatch.lib import redis

    pool = redis.client().connection_pool
    # redis-py keeps these counts behind underscore accessors; they are what it reports too.
    in_use = len(list(pool._get_in_use_connections()))
    available = len(list(pool._get_free_connections()))
    return {"in_use": in_use, "available": available, "max": pool.max_connections}


async def _audit_queue() -> dict[str, Any] | None:
    """The audit pipeline's figures (with Redis they include a count of its streams, which
    may not answer: then none)."""
    from audit import pipeline

    try:
        return await asyncio.wait_for(asyncio.to_thread(pipeline.stats), timeout=CHECK_TIMEOUT)
    except Exception:
        return None


def _versions(results: list[Result]) -> dict[str, str]:
    import django

    try:
        ours = metadata.version("thinkwatch")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        ours = "unknown"
    found = {
        "thinkwatch": ours,
        "python": platform.python_version(),
        "django": django.get_version(),
    }
    found.update({r.name: r.version for r in results if r.version})
    return found


async def _report() -> dict[str, Any]:
    results, problems = await check_all()
    return {
        "status": "unavailable" if problems else "ok",
        "problems": problems,
        "dependencies": [{**r.public(), "version": r.version} for r in results],
        "pools": {
            "database": await off_loop(_database_pool)(),
            "redis": _redis_pool(),
            "audit_queue": await _audit_queue(),
        },
        "versions": _versions(results),
    }


@router.get("", response=HealthOut)
@needs("settings:read")
def health(request: HttpRequest) -> dict[str, Any]:
    """Each dependency's status and latency, the connection pools' and the audit queue's
    figures, and the versions in use. A failing dependency is reported, not an error."""
    return async_to_sync(_report)()
