"""The log explorer: gateway, MCP, admin audit and access records, with filters, pages of
newer to older records (audit/explorer.py), and one record's detail.

Gateway and MCP records are those `accounts.access.log_filter` lets the viewer see; the
admin audit and access tabs need audit:read; captured MCP arguments need audit:read_bodies. The URLs
wrap these views in the console site's `admin_view` (sign-in, console rights, no cache).
"""

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import Denied, Rights
from accounts.models import Team
from audit import explorer
from audit.bodies import PRIVATE_COLUMNS
from audit.explorer import FilterError, Filters

TITLES = {"gateway": "Gateway", "mcp": "MCP", "audit": "Admin audit", "access": "Access"}
# Which filters each tab offers: (parameter, label, placeholder).
FILTER_FIELDS = {
    "gateway": [
        ("user", "User", "id or email"),
        ("team", "Team", "id or name"),
        ("key", "Key", "tw-1a2b3c4d"),
        ("model", "Model", "gpt-4o"),
        ("status", "Status", "ok, error, 429"),
        ("q", "Request id", "exact id"),
    ],
    "mcp": [
        ("user", "User", "id or email"),
        ("team", "Team", "id or name"),
        ("key", "Key", "tw-1a2b3c4d"),
        ("model", "Tool", "github__create_issue"),
        ("status", "Status", "ok, denied, timeout"),
        ("q", "Request id", "exact id"),
    ],
    "audit": [
        ("user", "Actor", "id or email"),
        ("key", "Key", "tw-1a2b3c4d"),
        ("action", "Action", "update, key.*"),
        ("object_type", "Object type", "providers.provider"),
        ("q", "Object", "id or part of its name"),
    ],
    "access": [
        ("user", "User", "id or email"),
        ("status", "Status", "ok, error, 404"),
        ("q", "Request", "request id or /path prefix"),
    ],
}
COLUMNS = {
    "gateway": [
        "Time",
        "Request id",
        "User",
        "Key",
        "Model",
        "Provider",
        "Status",
        "Tokens in/out",
        "Cost (USD)",
        "Latency (ms)",
    ],
    "mcp": [
        "Time",
        "Request id",
        "User",
        "Key",
        "Method",
        "Server",
        "Tool",
        "Status",
        "Latency (ms)",
    ],
    "audit": ["Time", "Action", "Actor", "Key", "Object type", "Object", "Via", "IP address"],
    "access": [
        "Time",
        "Port",
        "Method",
        "Path",
        "Status",
        "Latency (ms)",
        "User",
        "IP address",
    ],
}


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), **context}
    return render(request, f"console/{template}", context, status=status)


@require_GET
def logs(request: HttpRequest) -> HttpResponse:
    kinds = explorer.kinds_for(request.user)
    kind = request.GET.get("tab") or (kinds[0] if kinds else "gateway")
    context: dict[str, Any] = {
        "title": "Logs",
        "tabs": [(k, TITLES[k], _tab_url(k)) for k in kinds],
        "kind": kind if kind in TITLES else "",
        "fields": [
            (name, label, hint, request.GET.get(name, ""))
            for name, label, hint in FILTER_FIELDS.get(kind, [])
        ],
        "values": {name: request.GET.get(name, "") for name in ("since", "until", "range")},
        "ranges": list(explorer.RANGES),
        "columns": COLUMNS.get(kind, []),
    }
    try:
        filters = Filters.parse(request.GET)
        found = explorer.page(kind, request.user, filters, request.GET.get("cursor", ""))
    except Denied as exc:
        context |= {"kind": "", "fields": [], "columns": []}
        return _page(request, "logs.html", status=403, error=str(exc), **context)
    except FilterError as exc:
        return _page(request, "logs.html", status=400, error=str(exc), **context)
    rows = [
        (_detail_url(kind, r), cells)
        for r, cells in zip(found.rows, _cells(kind, found.rows), strict=True)
    ]
    next_url = ""
    if found.next_cursor:
        query = request.GET.copy()
        query["cursor"] = found.next_cursor
        next_url = f"?{query.urlencode()}"
    first_url = ""
    if "cursor" in request.GET:
        query = request.GET.copy()
        del query["cursor"]
        first_url = f"?{query.urlencode()}"
    return _page(request, "logs.html", rows=rows, next_url=next_url, first_url=first_url, **context)


@require_GET
def log_record(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    try:
        found = explorer.record(kind, request.user, pk)
    except Denied as exc:
        return _page(request, "logs.html", status=403, title="Logs", error=str(exc))
    except FilterError as exc:
        raise Http404(str(exc)) from None
    if found is None:
        raise Http404("No such record, or not one you may see.")
    bodies = Rights.of(request.user).has("audit:read_bodies")
    return _page(
        request,
        "logs_record.html",
        title=f"{TITLES[kind]} record {pk}",
        kind=kind,
        back_url=_tab_url(kind),
        fields=_fields(found, hidden=set() if bodies else set(PRIVATE_COLUMNS)),
        changes=_changes(found) if kind == "audit" else [],
    )


def _tab_url(kind: str) -> str:
    return f"{reverse('console-logs')}?tab={kind}"


def _detail_url(kind: str, row: Any) -> str:
    return reverse("console-log-record", args=[kind, row.pk])


def _when(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def _cells(kind: str, rows: list[Any]) -> Iterable[list[Any]]:
    if kind == "audit":
        for e in rows:
            actor = e.actor or ("—" if e.actor_id is None else f"user {e.actor_id}")
            yield [
                _when(e.created_at),
                e.action,
                actor,
                e.api_key_prefix,
                e.object_type,
                e.object_repr or e.object_id,
                e.get_via_display(),
                e.client_ip or "",
            ]
        return
    users = _names(get_user_model(), {r.user_id for r in rows}, "username")
    if kind == "access":
        for r in rows:
            yield [
                _when(r.created_at),
                r.port,
                r.method,
                r.path,
                r.status_code,
                f"{r.latency_ms:.0f}",
                users.get(r.user_id, r.user_id or ""),
                r.client_ip or "",
            ]
        return
    if kind == "gateway":
        for r in rows:
            yield [
                _when(r.created_at),
                r.request_id,
                users.get(r.user_id, r.user_id or ""),
                r.api_key_prefix,
                r.model,
                r.provider,
                r.status_code,
                f"{r.input_tokens} / {r.output_tokens}",
                f"{r.cost_usd:.6f}",
                f"{r.latency_ms:.0f}",
            ]
        return
    for r in rows:
        yield [
            _when(r.created_at),
            r.request_id,
            users.get(r.user_id, r.user_id or ""),
            r.api_key_prefix,
            r.method,
            r.server,
            r.name,
            r.status,
            f"{r.latency_ms:.0f}",
        ]


def _names(model: Any, ids: set[Any], attribute: str) -> dict[Any, str]:
    ids.discard(None)
    return dict(model._default_manager.filter(pk__in=ids).values_list("pk", attribute))


def _fields(record: Any, hidden: set[str]) -> list[tuple[str, Any]]:
    shown = []
    for f in record._meta.concrete_fields:
        if f.name in hidden or f.name in ("before", "after"):
            continue
        value = getattr(record, f.name)
        if f.name == "user_id" and value is not None:
            value = _names(get_user_model(), {value}, "username").get(value, value)
        elif f.name == "team_id" and value is not None:
            value = _names(Team, {value}, "name").get(value, value)
        elif f.name == "created_at":
            value = _when(value)
        elif f.choices:
            value = getattr(record, f"get_{f.name}_display")()
        shown.append((str(f.verbose_name), _show(value)))
    return shown


def _changes(event: Any) -> list[tuple[str, str, str]]:
    before, after = event.before or {}, event.after or {}
    names = list(dict.fromkeys([*before, *after]))
    return [(name, _show(before.get(name)), _show(after.get(name))) for name in names]


def _show(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return value
