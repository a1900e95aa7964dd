"""An in-process copy of something loaded from the database (a route table, the quota
rules, the MCP servers): loaded on first use by one task however many ask at once,
replaced by `reload`, dropped by `clear`. A load that started before a `clear` is not
kept after it, so a change can never be overwritten by the state it replaced."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(
        self, load: Callable[[], Awaitable[T]], fresh: Callable[[T], bool] | None = None
    ) -> None:
        self._load = load
        self._fresh = fresh  # besides `clear`, when a loaded value goes stale by itself
        self._value: T | None = None
        self._loading: asyncio.Future[T] | None = None
        self._generation = 0

    async def get(self) -> T:
        value = self._value
        if value is not None and (self._fresh is None or self._fresh(value)):
            return value
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self.reload())
        return await asyncio.shield(self._loading)

    def peek(self) -> T | None:
        """The value loaded last, without loading (None before the first load): for
        readers that must not wait, such as the metrics' label check."""
        return self._value

    async def reload(self) -> T:
        generation = self._generation
        value = await self._load()
        if generation == self._generation:
            self._value = value
        return value

    def clear(self) -> None:
        self._generation += 1
        self._value = None
