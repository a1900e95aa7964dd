"""What the MCP gateway knows without asking the database on a request: the enabled
upstream servers and the tool patterns of users' roles. Dropped on every config change
(gateway/revision.py), which also tells open sessions that their lists changed."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from django.db.models import Q

from accounts.models import RoleAssignment
from mcpgw.models import McpServer
from thinkwatch.lib.db import off_loop
from thinkwatch.lib.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """Which namespaced tools a caller may use: allowed by one of the owner's roles, by
    the key's own list when it has one, and denied by none of either."""

    role_allow: tuple[str, ...]
    key_allow: tuple[str, ...] | None
    deny: tuple[str, ...]

    def allows(self, name: str) -> bool:
        if any(fnmatchcase(name, pattern) for pattern in self.deny):
            return False
        if not any(fnmatchcase(name, pattern) for pattern in self.role_allow):
            return False
        return self.key_allow is None or any(fnmatchcase(name, p) for p in self.key_allow)


def policy_of(role_patterns: Iterable[str], key_patterns: Iterable[str] | None) -> ToolPolicy:
    roles = list(role_patterns)
    key = None if key_patterns is None else list(key_patterns)
    deny = [p[1:] for p in roles + (key or []) if p.startswith("!")]
    return ToolPolicy(
        role_allow=tuple(p for p in roles if not p.startswith("!")),
        key_allow=None if key is None else tuple(p for p in key if not p.startswith("!")),
        deny=tuple(deny),
    )


@off_loop
def _load_servers() -> list[McpServer]:
    return list(McpServer.objects.filter(enabled=True).order_by("prefix"))


@off_loop
def _load_role_patterns(user_id: int, team_id: int | None) -> list[str]:
    scope = Q(team__isnull=True) | Q(team_id=team_id) if team_id else Q(team__isnull=True)
    rows = RoleAssignment.objects.filter(scope, user_id=user_id).values_list(
        "role__mcp_tools", flat=True
    )
    return [pattern for patterns in rows for pattern in (patterns or [])]


class Registry:
    def __init__(self) -> None:
        self._servers: Snapshot[list[McpServer]] = Snapshot(_load_servers)
        self._roles: dict[tuple[int, int | None], list[str]] = {}
        self._generation = 0
        self._subscribers: list[Callable[[], None]] = []

    async def servers(self) -> list[McpServer]:
        return await self._servers.get()

    async def server_by_prefix(self, prefix: str) -> McpServer | None:
        for server in await self.servers():
            if server.prefix == prefix:
                return server
        return None

    async def role_patterns(self, user_id: int, team_id: int | None) -> list[str]:
        key = (user_id, team_id)
        patterns = self._roles.get(key)
        if patterns is None:
            generation = self._generation
            patterns = await _load_role_patterns(user_id, team_id)
            if generation == self._generation:
                self._roles[key] = patterns
        return patterns

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when anything changes (from whichever thread committed the
        change: callbacks must be thread-safe)."""
        self._subscribers.append(callback)

    def clear(self) -> None:
        self._generation += 1
        self._servers.clear()
        self._roles.clear()
        for callback in list(self._subscribers):
            callback()


registry = Registry()
