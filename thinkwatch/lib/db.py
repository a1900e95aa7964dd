"""The database, as the gateway's async code reaches it: rarely, and off the event loop."""

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def off_loop(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run a sync ORM function in a worker thread and give its connection back afterwards.

    The gateway does not run Django's per-request connection signals (they would cost two
    thread hops per request), so every cold-path function returns its connection here.
    """

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=True)
