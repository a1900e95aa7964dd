"""Liveness and readiness, served on both ports."""

import asyncio

import orjson
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse

from providers.models import Provider
from thinkwatch.lib.db import off_loop


def _json(body: dict[str, object], status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


async def live(request: HttpRequest) -> HttpResponse:
    return _json({"status": "ok"})


@off_loop
def _database_check() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not Provider.objects.filter(enabled=True).exists():
            return "no provider is enabled"
    except Exception as exc:
        return f"database unreachable: {type(exc).__name__}"
    return None


async def _redis_check() -> str | None:
    if not settings.REDIS_URL:
        return None
    from thinkwatch.lib import redis

    try:
        await asyncio.wait_for(redis.client().ping(), timeout=2)
    except Exception as exc:
        return f"redis unreachable: {type(exc).__name__}"
    return None


async def ready(request: HttpRequest) -> HttpResponse:
    problems = [p for p in await asyncio.gather(_database_check(), _redis_check()) if p]
    if problems:
        return _json({"status": "unavailable", "problems": problems}, status=503)
    return _json({"status": "ok"})
