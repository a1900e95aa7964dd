from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent, GatewayLog, McpLog


class ReadOnlyLogAdmin(admin.ModelAdmin):
    """A log is evidence: it can be read and searched, never added to, edited or deleted."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GatewayLog)
class GatewayLogAdmin(ReadOnlyLogAdmin):
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
    list_filter = ["status_code", "streamed", "disconnected", "provider", "ingress"]
    search_fields = ["request_id", "model", "api_key_prefix"]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyLogAdmin):
    list_display = ["created_at", "action", "actor", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["action", "actor", "object_id"]
    date_hierarchy = "created_at"


@admin.register(McpLog)
class McpLogAdmin(ReadOnlyLogAdmin):
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
    list_filter = ["status", "server", "method"]
    search_fields = ["name", "request_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
