"""The connection to ClickHouse: the one place that opens it.

clickhouse-driver's Client is not thread-safe, so each thread gets its own (kept for the
thread's life, one per CLICKHOUSE_URL). Clients connect without naming the database,
because it may not exist yet: the first use in a process creates it, and every query names
its tables as `database.table` (the name is checked here and by settings.py, so it is safe
to put in SQL). Values always travel as parameters (`%(name)s`), which the driver escapes.
"""

import re
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.util.helpers import parse_url
from django.conf import settings


@dataclass(frozen=True)
class Target:
    host: str
    options: tuple[tuple[str, Any], ...]  # user, password, port, secure, timeouts
    database: str

    def __repr__(self) -> str:
        # Never the password, wherever a Target ends up printed.
        return f"Target(host={self.host!r}, database={self.database!r})"


_DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_local = threading.local()
_created: set[Target] = set()  # databases known to exist, per server
_created_lock = threading.Lock()


@cache
def target(url: str) -> Target:
    host, options = parse_url(url)
    database = options.pop("database", "")
    if not _DATABASE.fullmatch(database):  # settings.py checks it too; it goes into SQL
        raise ValueError("the ClickHouse database name must be letters, digits, underscores")
    options.setdefault("connect_timeout", 5)
    options.setdefault("send_receive_timeout", 60)
    return Target(host, tuple(sorted(options.items())), database)


def current() -> Target:
    url = settings.CLICKHOUSE_URL
    if not url:
        raise RuntimeError("CLICKHOUSE_URL is not set")
    return target(url)


def client(where: Target | None = None) -> Client:
    """This thread's client for `where` (by default CLICKHOUSE_URL's server), its database
    created if it was missing."""
    where = where or current()
    clients: dict[Target, Client] = _local.__dict__.setdefault("clients", {})
    found = clients.get(where)
    if found is None:
        found = clients[where] = Client(where.host, **dict(where.options))
    if where not in _created:
        with _created_lock:
            # target() checked the name: letters, digits, underscores.
            found.execute(f"CREATE DATABASE IF NOT EXISTS {where.database}")
            _created.add(where)
    return found


def forget_database(where: Target) -> None:
    """After a DROP DATABASE (tests): the next use creates it again."""
    with _created_lock:
        _created.discard(where)


def execute(query: str, params: Any = None, **kwargs: Any) -> Any:
    return client().execute(query, params, **kwargs)


@cache
def _version_of(where: Target) -> tuple[int, ...]:
    raw = client(where).execute("SELECT version()")[0][0]
    return tuple(int(part) for part in re.findall(r"\d+", raw)[:3])


def version(where: Target | None = None) -> tuple[int, ...]:
    """The server's version, e.g. (18, 16, 1); asked once per process."""
    return _version_of(where or current())
