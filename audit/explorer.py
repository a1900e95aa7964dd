"""The log explorer's queries: gateway, MCP, admin audit and access records, filtered,
limited to what the viewer may see, and paged by keyset on (created_at, id), newest first.

A page is `created_at <= t AND (created_at < t OR id < i) ORDER BY created_at DESC, id
DESC LIMIT n+1`: no COUNT(*) and no OFFSET, so the thousandth page costs what the first
does. The range condition comes first so that the database walks one of the
(..., created_at, id) indexes (audit/models.py) backwards instead of sorting. The console
page (audit/log_views.py) and the API (audit/api_logs.py) share these functions.

Filters, scope and cursor are built once, as one Q over the log model. With CLICKHOUSE_URL
the same Q is translated for ClickHouse (audit/clickhouse/query.py), where a record's id is
its seq; without, the ORM runs it.
"""

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Model, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts import access
from accounts.access import Denied, Rights
from accounts.models import ApiKey, Team
from audit.models import AccessLog, AuditEvent, GatewayLog, McpLog

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
KINDS = ("gateway", "mcp", "audit", "access")
LOG_RIGHTS = ("logs:read_all", "logs:read_team", "logs:read_own")
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
_MODELS: dict[str, type[Model]] = {
    "gateway": GatewayLog,
    "mcp": McpLog,
    "audit": AuditEvent,
    "access": AccessLog,
}
# The log family (audit/chain.py) each tab shows.
FAMILIES = {"gateway": "gateway", "mcp": "mcp", "audit": "admin", "access": "access"}
# Rights the tabs other than gateway and MCP need.
_RIGHT = {"audit": "audit:read", "access": "audit:read"}


class FilterError(ValueError):
    """A filter or cursor that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    user: str = ""  # id, username or email (audit: the actor)
    team: str = ""  # id or name
    key: str = ""  # a key's shown prefix, e.g. tw-1a2b3c4d
    model: str = ""  # gateway: the model asked for; MCP: the tool (or prompt, URI) called
    status: str = ""  # gateway: ok, error or a status code; MCP: ok, denied, timeout, ...
    action: str = ""  # audit: create, update, key.revoke, or a family such as "key.*"
    object_type: str = ""  # audit: app_label.model, e.g. providers.provider
    q: str = ""  # gateway, MCP: a request id; audit: an object's id or part of its name;
    # access: a request id or the start of a path

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "Filters":
        """From query parameters; `range` (1h, 24h, 7d, 30d) stands for a `since`."""
        text = {name: str(data.get(name) or "").strip() for name in _TEXT}
        since = _moment("since", data.get("since"))
        period = str(data.get("range") or "")
        if period:
            if period not in RANGES:
                raise FilterError(f"range must be one of {', '.join(RANGES)}, got {period!r}.")
            since = timezone.now() - RANGES[period]
        return cls(since=since, until=_moment("until", data.get("until")), **text)


_TEXT = ("user", "team", "key", "model", "status", "action", "object_type", "q")


@dataclass
class Page:
    rows: list[Any] = field(default_factory=list)
    next_cursor: str | None = None


def kinds_for(user: Any) -> list[str]:
    """The tabs `user` may open."""
    rights = Rights.of(user)
    kinds = ["gateway", "mcp"] if any(rights.anywhere(p) for p in LOG_RIGHTS) else []
    return kinds + [kind for kind, right in _RIGHT.items() if rights.has(right)]


def scope(kind: str, user: Any) -> Q:
    """Which records of `kind` `user` may see; Denied when none at all."""
    if kind not in _MODELS:
        raise FilterError(f"Unknown log {kind!r}: use one of {', '.join(KINDS)}.")
    if kind in _RIGHT:
        access.require(user, _RIGHT[kind])
        return Q()
    if kind not in kinds_for(user):
        raise Denied("You need logs:read_own, logs:read_team or logs:read_all.")
    return access.log_filter(user)


def visible(kind: str, user: Any) -> QuerySet[Any]:
    """The records of `kind` that `user` may see in the SQL database."""
    return _MODELS[kind]._default_manager.filter(scope(kind, user))


def page(kind: str, user: Any, filters: Filters, cursor: str = "", limit: int = PAGE_SIZE) -> Page:
    if settings.CLICKHOUSE_URL:
        rows = _from_clickhouse(kind, user, filters, cursor, limit)
    else:
        rows = list(page_query(kind, user, filters, cursor, limit))
    if len(rows) <= limit:
        return Page(rows)
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].created_at, rows[-1].pk))


def page_query(
    kind: str, user: Any, filters: Filters, cursor: str = "", limit: int = PAGE_SIZE
) -> QuerySet[Any]:
    """The rows of one page and the first of the next (which says whether there is one)."""
    queryset = visible(kind, user).filter(_conditions(kind, filters) & _after(cursor))
    return queryset.order_by("-created_at", "-id")[: limit + 1]


def record(kind: str, user: Any, pk: int) -> Any:
    """One record `user` may see, or None."""
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse import explorer

        condition = scope(kind, user) & Q(pk=pk)
        return explorer.one(_family(kind), condition)
    return visible(kind, user).filter(pk=pk).first()


def _from_clickhouse(kind: str, user: Any, filters: Filters, cursor: str, limit: int) -> list[Any]:
    from audit.clickhouse import explorer

    condition = scope(kind, user) & _conditions(kind, filters) & _after(cursor)
    return explorer.newest(_family(kind), condition, limit + 1)


def _family(kind: str) -> str:
    family = FAMILIES[kind]
    if family == "admin":
        from audit.clickhouse.mirror import mirror_admin

        mirror_admin()  # admin events reach ClickHouse after SQL: show the latest
    return family


def _after(cursor: str) -> Q:
    """The records after the cursor's, in the explorer's order (newest first)."""
    if not cursor:
        return Q()
    created_at, pk = decode_cursor(cursor)
    return Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(pk__lt=pk))


# --- filters ------------------------------------------------------------------------------


def _conditions(kind: str, f: Filters) -> Q:
    q = Q()
    if f.since:
        q &= Q(created_at__gte=f.since)
    if f.until:
        q &= Q(created_at__lt=f.until)
    if kind == "audit":
        return q & _audit_conditions(f)
    if kind == "access":
        return q & _access_conditions(f)
    if f.key:
        q &= _key_condition(f.key)
    if f.user:
        q &= Q(user_id__in=_user_ids(f.user))
    if f.team:
        q &= Q(team_id__in=_team_ids(f.team))
    if f.model:
        q &= Q(model=f.model) if kind == "gateway" else Q(name=f.model)
    if f.status:
        q &= _gateway_status(f.status) if kind == "gateway" else Q(status=f.status)
    if f.q:
        q &= Q(request_id=f.q)
    return q


def _audit_conditions(f: Filters) -> Q:
    q = Q()
    if f.key:
        q &= Q(api_key_prefix=f.key)
    if f.user:
        ids = _user_ids(f.user)
        # A failed sign-in names an account that may not exist: match the name as typed.
        q &= Q(actor_id__in=ids) if ids else Q(actor=f.user)
    if f.action:
        family = f.action.removesuffix("*")
        q &= Q(action__startswith=family) if f.action.endswith("*") else Q(action=f.action)
    if f.object_type:
        q &= Q(object_type=f.object_type)
    if f.q:
        q &= Q(object_id=f.q) | Q(object_repr__icontains=f.q)
    return q


def _access_conditions(f: Filters) -> Q:
    q = Q()
    if f.user:
        q &= Q(user_id__in=_user_ids(f.user))
    if f.status:
        q &= _gateway_status(f.status)
    if f.q:
        q &= Q(request_id=f.q) | Q(path__startswith=f.q)
    return q


def _gateway_status(value: str) -> Q:
    if value == "ok":
        return Q(status_code__lt=400)
    if value == "error":
        return Q(status_code__gte=400)
    if value.isdigit():
        return Q(status_code=int(value))
    raise FilterError(f"status must be ok, error or an HTTP status code, got {value!r}.")


def _key_condition(prefix: str) -> Q:
    """By key id where the key still exists (an indexed column); a purged key's records are
    found by the prefix they carry."""
    ids = list(ApiKey.objects.filter(prefix=prefix).values_list("pk", flat=True))
    return Q(api_key_id__in=ids) if ids else Q(api_key_prefix=prefix)


def _user_ids(value: str) -> list[int]:
    if value.isdigit():
        return [int(value)]
    users = get_user_model()._default_manager.filter(
        Q(username__iexact=value) | Q(email__iexact=value)
    )
    return list(users.values_list("pk", flat=True))


def _team_ids(value: str) -> list[int]:
    if value.isdigit():
        return [int(value)]
    return list(Team.objects.filter(name__iexact=value).values_list("pk", flat=True))


def _moment(name: str, raw: Any) -> datetime | None:
    """A datetime, or an ISO 8601 date or date and time; without a zone: UTC."""
    if raw is None or raw == "":
        return None
    moment = raw if isinstance(raw, datetime) else None
    if moment is None:
        try:
            moment = parse_datetime(str(raw).strip())
        except ValueError:
            moment = None
    if moment is None:
        raise FilterError(f"{name} must be an ISO 8601 date or date and time, got {raw!r}.")
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


# --- cursors ------------------------------------------------------------------------------


def encode_cursor(created_at: datetime, pk: int) -> str:
    raw = f"{created_at.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, pk = raw.split("|")
        created_at = datetime.fromisoformat(moment)
        if not timezone.is_aware(created_at):
            raise ValueError(moment)
        return created_at, int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise FilterError("The cursor is not valid: start again from the first page.") from None
