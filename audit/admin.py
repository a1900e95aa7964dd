"""Read-only changelists of the log tables, scoped like the log explorer (audit/explorer.py):
gateway and MCP records as `accounts.access.log_filter` allows, the admin audit log with
audit:read. The tables grow to millions of rows, so nothing here counts them, lists their
distinct values or groups them by date on every page: pages only know whether another
follows, filters offer fixed choices, and search matches exact values (indexed columns).

With CLICKHOUSE_URL the gateway and MCP records are in ClickHouse, not in these tables:
their pages lead to the log explorer, which reads from it (the admin audit log stays here,
its events are written in the transaction of their change and mirrored to ClickHouse).
"""

from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from accounts.access import Rights, log_filter
from audit.bodies import PRIVATE_COLUMNS
from audit.explorer import LOG_RIGHTS
from audit.models import AuditEvent, GatewayLog, McpLog
from thinkwatch.lib.admin import ReadOnlyAdmin


class UncountedPaginator(Paginator):
    """Pages without COUNT(*): reads one row past the current page to know whether another
    follows. `count` is what has been seen up to there (one more when there is more)."""

    def __init__(self, object_list: Any, per_page: int, current: int = 1, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.current = current

    @cached_property
    def window(self) -> list[Any]:
        start = (self.current - 1) * self.per_page
        return list(self.object_list[start : start + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        return (self.current - 1) * self.per_page + len(self.window)

    @property
    def has_more(self) -> bool:
        return len(self.window) > self.per_page

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if number == self.current:
            return Page(self.window[: self.per_page], number, self)
        return super().page(number)


class UncountedChangeList(ChangeList):
    def newer_url(self) -> str:
        return self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""

    def older_url(self) -> str:
        more = getattr(self.paginator, "has_more", False)
        return self.get_query_string({PAGE_VAR: self.page_num + 1}) if more else ""


class LogAdmin(ReadOnlyAdmin):
    paginator = UncountedPaginator
    show_full_result_count = False
    list_max_show_all = 0  # "Show all" would read the whole table
    exact_search: tuple[str, ...] = ("request_id",)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return UncountedChangeList

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        raw = request.GET.get(PAGE_VAR, "1")
        current = int(raw) if raw.isdigit() and int(raw) > 0 else 1
        return UncountedPaginator(queryset, per_page, current=current)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q()
        for name in self.exact_search:
            match |= Q(**{name: term})
        return queryset.filter(match), False

    def may_view(self, request: HttpRequest) -> bool:
        rights = Rights.of(request.user)
        return any(rights.anywhere(p) for p in LOG_RIGHTS)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.may_view(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.may_view(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(log_filter(request.user))


class StoredLogAdmin(LogAdmin):
    """A log family that lives in ClickHouse when CLICKHOUSE_URL is set."""

    explorer_tab = ""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if settings.CLICKHOUSE_URL and self.may_view(request):
            return HttpResponseRedirect(f"{reverse('console-logs')}?tab={self.explorer_tab}")
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if settings.CLICKHOUSE_URL and self.may_view(request) and object_id.isdigit():
            # A ClickHouse record's id is its seq, as the explorer shows it.
            url = reverse("console-log-record", args=[self.explorer_tab, int(object_id)])
            return HttpResponseRedirect(url)
        return super().change_view(request, object_id, form_url, extra_context)


class GatewayStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("ok", "Answered (< 400)"), ("4xx", "Refused (4xx)"), ("5xx", "Failed (5xx)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        ranges = {"ok": (0, 400), "4xx": (400, 500), "5xx": (500, 1000)}
        if self.value() not in ranges:
            return queryset
        low, high = ranges[str(self.value())]
        return queryset.filter(status_code__gte=low, status_code__lt=high)


class FixedChoicesFilter(admin.SimpleListFilter):
    """Filters on a column by a fixed list of values (no SELECT DISTINCT over the table)."""

    field = ""
    values: tuple[str, ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in self.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class McpStatusFilter(FixedChoicesFilter):
    title = parameter_name = field = "status"
    values = (
        "ok",
        "tool_error",
        "denied",
        "invalid",
        "credential_missing",
        "rate_limited",
        "upstream_error",
        "timeout",
        "cancelled",
    )


class AuditActionFilter(FixedChoicesFilter):
    title = parameter_name = field = "action"
    values = (
        "create",
        "update",
        "delete",
        "key.revoke",
        "key.rotate",
        "role.assign",
        "role.unassign",
        "auth.sign_in",
        "auth.sign_out",
        "auth.sign_in_failed",
        "quota.reset",
        "budget.threshold_crossed",
    )


@admin.register(GatewayLog)
class GatewayLogAdmin(StoredLogAdmin):
    explorer_tab = "gateway"
    list_display = [
        "created_at",
        "request_id",
        "api_key_prefix",
        "model",
        "provider",
        "status_code",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "streamed",
        "disconnected",
    ]
    list_filter = [GatewayStatusFilter, "streamed", "disconnected"]
    search_fields = ["request_id", "api_key_prefix", "model"]
    search_help_text = "An exact request id, key prefix or model id."
    exact_search = ("request_id", "api_key_prefix", "model")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return _without_bodies(request, super().get_fields(request, obj))


@admin.register(AuditEvent)
class AuditEventAdmin(LogAdmin):
    list_display = ["created_at", "action", "actor", "via", "object_type", "object_repr"]
    list_filter = [AuditActionFilter, "via"]
    search_fields = ["actor", "object_type", "object_id"]
    search_help_text = "An exact actor, object type (e.g. providers.provider) or object id."
    exact_search = ("actor", "object_type", "object_id")

    def may_view(self, request: HttpRequest) -> bool:
        return Rights.of(request.user).has("audit:read")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return AuditEvent.objects.all()


@admin.register(McpLog)
class McpLogAdmin(StoredLogAdmin):
    explorer_tab = "mcp"
    list_display = [
        "created_at",
        "request_id",
        "api_key_prefix",
        "method",
        "server",
        "name",
        "status",
        "error_code",
        "latency_ms",
    ]
    list_filter = [McpStatusFilter]
    search_fields = ["request_id", "name", "api_key_prefix"]
    search_help_text = "An exact request id, tool name or key prefix."
    exact_search = ("request_id", "name", "api_key_prefix")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return _without_bodies(request, super().get_fields(request, obj))


def _without_bodies(request: HttpRequest, fields: Any) -> list[str]:
    """Captured bodies (and MCP arguments) only for holders of audit:read_bodies."""
    if Rights.of(request.user).has("audit:read_bodies"):
        return list(fields)
    return [f for f in fields if f not in PRIVATE_COLUMNS]


from audit import admin_forwarders  # noqa: E402, F401  (registers the forwarding pages)
