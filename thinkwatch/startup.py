"""What a process checks before it serves, so that a misconfigured one refuses to start
with one line naming the problem instead of failing request after request.

- The secrets: THINKWATCH_SECRET_KEY and the master key look random (length, and an
  estimate of their entropy that sees through repetition, runs and sequences), and the
  master key opens what the database holds (every stored secret was sealed by it or by
  one of THINKWATCH_PREVIOUS_MASTER_KEYS): a process given the wrong key, or a fresh key
  generated in its own data directory, would fail every request that needs a secret.
- The database answers and has every migration applied.
- Redis answers, when REDIS_URL is set; ClickHouse answers and has its schema migrations
  applied, when CLICKHOUSE_URL is set.

The gateway runs them first thing in its lifespan (uvicorn then exits with code 3),
`python -m thinkwatch.run` after migrating and before it starts any process, Celery's
worker and beat when they initialise, and `manage.py check_ready` on demand. A message names what is
wrong and where (host, port, database), never a secret: text from a client library is
scrubbed of every configured password and key before it is shown.
"""

import itertools
import logging
import math
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models.functions import Substr

from thinkwatch.lib import crypto

T = TypeVar("T")

TIMEOUT = 5.0  # seconds a dependency may take to answer
MIN_SECRET_KEY_LENGTH = 32
# Estimated bits (see estimated_bits). A random 32-character hex secret (128 bits) is
# estimated at 86-140; a generated key far above. Placeholders, runs and repeated words
# stay well below.
MIN_SECRET_KEY_BITS = 64
MIN_MASTER_KEY_BITS = 128  # a random master key (64 hex characters) is estimated at 190+

# Where secrets sealed with the master key are stored: (model, envelope fields).
SEALED_FIELDS = (
    ("providers.Provider", ("secret", "session_token")),
    ("mcpgw.McpServer", ("static_secret", "oauth_client_secret")),
    ("mcpgw.McpCredential", ("access_token", "refresh_token")),
    ("audit.Forwarder", ("secret",)),
)


class NotReady(Exception):
    """This process must not serve. The message is one line and holds no secret."""


def problems() -> list[str]:
    """Everything that keeps this process from serving, one line each; empty when ready."""
    found = secret_problems()
    database = database_problem()
    if database:
        found.append(database)
    else:
        found += sealed_by_unknown_keys()
    if settings.REDIS_URL:
        found += _some(redis_problem())
    if settings.CLICKHOUSE_URL:
        found += _some(clickhouse_problem())
    return found


def require() -> None:
    """Raise NotReady naming every problem found."""
    found = problems()
    if found:
        raise NotReady("; ".join(found))


def exit_unless_ready() -> None:
    """For a process about to serve: print the problems as one line and exit with code 1."""
    try:
        require()
    except NotReady as exc:
        # The real stderr: Celery's beat has replaced sys.stderr with a logger by now.
        print(f"ThinkWatch cannot start: {exc}", file=sys.__stderr__, flush=True)
        raise SystemExit(1) from None
    finally:
        connections.close_all()


# --- secrets ---------------------------------------------------------------------------


def secret_problems() -> list[str]:
    found = []
    secret_key = settings.SECRET_KEY
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        found.append(
            f"THINKWATCH_SECRET_KEY is too short ({len(secret_key)} characters, "
            f"at least {MIN_SECRET_KEY_LENGTH})"
        )
    elif estimated_bits(secret_key) < MIN_SECRET_KEY_BITS:
        found.append(
            "THINKWATCH_SECRET_KEY is not random enough (a placeholder, a repeated or "
            "sequential pattern); generate one, e.g. "
            '`python -c "import secrets; print(secrets.token_urlsafe(50))"`'
        )
    master_key = settings.MASTER_KEY
    if len(master_key) != 32:
        found.append("THINKWATCH_MASTER_KEY must be 64 hex characters (32 bytes for AES-256)")
    elif estimated_bits(master_key.hex()) < MIN_MASTER_KEY_BITS:
        found.append(
            "THINKWATCH_MASTER_KEY is not random enough (a repeated or sequential pattern); "
            'generate one, e.g. `python -c "import secrets; print(secrets.token_hex(32))"`'
        )
    return found


def estimated_bits(value: str) -> float:
    """A pessimistic estimate of the randomness in `value`, in bits: the characters left
    once repeats are taken out (a stretch that already occurred counts as one), times the
    Shannon entropy per character of its characters or of the steps between neighbours,
    whichever is lower (so "abcdef..." and "0123..." score near zero). It catches
    placeholders and patterns, not a memorable phrase."""
    value = value[:256]
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(value)]
    per_character = min(_shannon(value), _shannon(steps))
    return _novel_length(value) * per_character


def _shannon(symbols: Sequence[object]) -> float:
    if not symbols:
        return 0.0
    total = len(symbols)
    return -sum(n / total * math.log2(n / total) for n in Counter(symbols).values())


def _novel_length(value: str, shortest: int = 3) -> int:
    """Characters and back-references of an LZ77 parse: a run or a repeated stretch of at
    least `shortest` characters counts once."""
    count = i = 0
    while i < len(value):
        length = 0
        while i + length < len(value) and value[i : i + length + 1] in value[: i + length]:
            length += 1
        i += length if length >= shortest else 1
        count += 1
    return count


def sealed_by_unknown_keys() -> list[str]:
    """Stored secrets this process's master keys cannot open, by the key that sealed them."""
    known = {crypto.key_id(k) for k in (settings.MASTER_KEY, *settings.PREVIOUS_MASTER_KEYS)}
    unknown: set[str] = set()
    try:
        for label, fields in SEALED_FIELDS:
            model = apps.get_model(label)
            for field in fields:
                # An envelope is `tw1.<8 hex digits of key id>.<body>`.
                ids = (
                    model._base_manager.exclude(**{field: ""})
                    .annotate(kid=Substr(field, len(crypto.VERSION) + 2, 8))
                    .values_list("kid", flat=True)
                    .distinct()
                )
                unknown.update(set(ids) - known)
    except DatabaseError as exc:
        return [f"the database ({_database_where()}) could not be read: {_reason(exc)}"]
    if not unknown:
        return []
    return [
        f"stored secrets were sealed by master key {', '.join(sorted(unknown))}, which is "
        "neither THINKWATCH_MASTER_KEY nor in THINKWATCH_PREVIOUS_MASTER_KEYS: give every "
        "process the same master key (the id is the first 8 hex digits of its SHA-256)"
    ]


# --- dependencies ----------------------------------------------------------------------


def database_problem(migrated: bool = True) -> str | None:
    connection = connections[DEFAULT_DB_ALIAS]
    where = _database_where()
    try:
        _connect_directly(connection)
        connection.ensure_connection()
        if not migrated:
            return None
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return f"the database ({where}) is unreachable: {_reason(exc)}"
    if not pending:
        return None
    names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in pending[:3])
    more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
    return (
        f"the database ({where}) has {len(pending)} unapplied migration(s) ({names}{more}); "
        "run `manage.py migrate`"
    )


def _connect_directly(connection: Any) -> None:
    """PostgreSQL: one connection outside the pool, with a timeout. The pool retries in the
    background, logging each failure, and then says only that it gave up; this says why."""
    if connection.vendor != "postgresql":
        return
    import psycopg

    params = connection.get_connection_params()
    try:
        psycopg.connect(**params, connect_timeout=max(1, round(TIMEOUT))).close()
    except psycopg.Error as exc:
        raise DatabaseError(_reason(exc)) from None


def redis_problem() -> str | None:
    import redis

    where = _url_where(settings.REDIS_URL)
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis ({where}) is unreachable: {_reason(exc)}"
    finally:
        client.close()
    return None


def clickhouse_problem() -> str | None:
    from audit.clickhouse import migrate

    where = _url_where(settings.CLICKHOUSE_URL)

    def pending() -> list[str]:
        return [s.migration.label for s in migrate.status() if s.applied_at is None]

    # The driver logs each failed connection attempt with a traceback; the problem line
    # says it once.
    driver_log = logging.getLogger("clickhouse_driver")
    level, driver_log.level = driver_log.level, logging.CRITICAL
    try:
        # clickhouse-driver waits up to its send/receive timeout (a minute) on a server
        # that accepts and never answers; a startup check gives up sooner.
        labels = _within(TIMEOUT, pending)
    except TimeoutError:
        return f"ClickHouse ({where}) did not answer within {TIMEOUT:g} s"
    except Exception as exc:  # the driver's errors share no base class with OSError's
        return f"ClickHouse ({where}) is unreachable: {_reason(exc)}"
    finally:
        driver_log.setLevel(level)
    if not labels:
        return None
    return (
        f"ClickHouse ({where}) has unapplied schema migrations ({', '.join(labels)}); "
        "run `manage.py clickhouse_migrate`"
    )


def _within(seconds: float, work: Callable[[], T]) -> T:
    """`work()` in a daemon thread (one that hangs cannot hold the process at exit)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="startup-check", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _some(problem: str | None) -> list[str]:
    return [problem] if problem else []


def _database_where() -> str:
    db = settings.DATABASES[DEFAULT_DB_ALIAS]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite {db['NAME']}"
    return f"PostgreSQL {db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _url_where(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or parts.path  # unix:///path/to/redis.sock
    return f"{host}:{port}" if port else host


def _secrets() -> list[str]:
    found = [settings.SECRET_KEY, settings.MASTER_KEY.hex()]
    found.append(str(settings.DATABASES[DEFAULT_DB_ALIAS].get("PASSWORD") or ""))
    for url in (settings.REDIS_URL, settings.CLICKHOUSE_URL):
        password = urlsplit(url).password or ""
        found += [password, unquote(password)]
    return [s for s in found if s]


def _reason(exc: BaseException) -> str:
    """A client library's message on one line, without any configured secret."""
    text = " ".join(str(exc).split()).split(" Stack trace:")[0]  # ClickHouse appends one
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text[:300] or type(exc).__name__
