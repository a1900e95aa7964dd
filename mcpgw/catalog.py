"""One catalog out of many servers: every upstream's tools, resources, resource templates
and prompts, renamed into the gateway's namespace, filtered by the caller's rights,
in a deterministic order (servers by prefix, each server's items in its own order) and
paged with the gateway's own cursor.

Names: `<prefix>__<name>` for tools and prompts, kept within 64 characters including the
client's own `mcp__<server>__` prefix (THINKWATCH_MCP_CLIENT_PREFIX); an item whose name
cannot fit is left out and logged. Resource URIs become `twmcp://<prefix>/<original>`,
which reverses exactly (a prefix never contains `/`).
"""

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing

from mcpgw.models import TOOL_NAME_LIMIT, McpServer

logger = logging.getLogger(__name__)

SEPARATOR = "__"
URI_SCHEME = "twmcp://"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_CURSOR_SALT = "mcpgw.cursor"
_MAX_UPSTREAM_PAGES = 100


@dataclass(frozen=True)
class Kind:
    method: str  # the list method
    field: str  # the list in its result
    key: str  # the field that names an item
    uri: bool  # named by URI (resources) rather than by name


KINDS = {
    "tools/list": Kind("tools/list", "tools", "name", uri=False),
    "prompts/list": Kind("prompts/list", "prompts", "name", uri=False),
    "resources/list": Kind("resources/list", "resources", "uri", uri=True),
    "resources/templates/list": Kind(
        "resources/templates/list", "resourceTemplates", "uriTemplate", uri=True
    ),
}


class InvalidCursor(Exception):
    pass


def public_name(server: McpServer, name: str) -> str | None:
    full = f"{server.prefix}{SEPARATOR}{name}"
    if not _NAME.match(name) or len(settings.MCP_CLIENT_PREFIX) + len(full) > TOOL_NAME_LIMIT:
        return None
    return full


def split_name(name: str) -> tuple[str, str] | None:
    prefix, separator, rest = name.partition(SEPARATOR)
    return (prefix, rest) if separator and prefix and rest else None


def public_uri(server: McpServer, uri: str) -> str:
    return f"{URI_SCHEME}{server.prefix}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith(URI_SCHEME):
        return None
    prefix, slash, rest = uri[len(URI_SCHEME) :].partition("/")
    return (prefix, rest) if slash and prefix and rest else None


def rename(server: McpServer, kind: Kind, item: dict[str, Any]) -> dict[str, Any] | None:
    value = item.get(kind.key)
    if not isinstance(value, str):
        return None
    if kind.uri:
        return {**item, kind.key: public_uri(server, value)}
    name = public_name(server, value)
    if name is None:
        _warn_once(server, value)
        return None
    return {**item, kind.key: name}


_warned: set[tuple[int, str]] = set()


def _warn_once(server: McpServer, name: str) -> None:
    if (server.pk, name) not in _warned:
        _warned.add((server.pk, name))
        logger.warning(
            "mcp.name_left_out",
            extra={
                "server": server.name,
                "item": name[:200],
                "reason": f"does not fit {TOOL_NAME_LIMIT} characters with "
                f"'{settings.MCP_CLIENT_PREFIX}' or has characters other than A-Z a-z 0-9 _ . -",
            },
        )


def page(items: list[dict[str, Any]], kind: Kind, cursor: object) -> dict[str, Any]:
    offset = 0
    if cursor is not None:
        try:
            state = signing.loads(str(cursor), salt=_CURSOR_SALT)
            offset = int(state["o"])
            if state["m"] != kind.method or offset < 0:
                raise ValueError
        except (signing.BadSignature, KeyError, TypeError, ValueError):
            raise InvalidCursor(
                "Invalid cursor: pass back a nextCursor this gateway gave."
            ) from None
    size = settings.MCP_PAGE_SIZE
    result: dict[str, Any] = {kind.field: items[offset : offset + size]}
    if offset + size < len(items):
        result["nextCursor"] = signing.dumps(
            {"m": kind.method, "o": offset + size}, salt=_CURSOR_SALT
        )
    return result


class ListCache:
    """Upstream lists per (server, user, kind), for THINKWATCH_MCP_LIST_CACHE_SECONDS or
    until the server says its list changed."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int | None, str], tuple[float, list[dict[str, Any]]]] = {}

    def get(self, key: tuple[int, int | None, str]) -> list[dict[str, Any]] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[int, int | None, str], items: list[dict[str, Any]]) -> None:
        ttl = settings.MCP_LIST_CACHE_SECONDS
        if ttl > 0:
            self._entries[key] = (time.monotonic() + ttl, items)

    def invalidate(self, server_id: int | None = None, method: str | None = None) -> None:
        for key in list(self._entries):
            if (server_id is None or key[0] == server_id) and (method is None or key[2] == method):
                del self._entries[key]


lists = ListCache()
