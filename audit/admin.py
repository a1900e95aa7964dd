from django.contrib import admin

from audit.models import AuditEvent, GatewayLog, McpLog
from thinkwatch.lib.admin import ReadOnlyAdmin


@admin.register(GatewayLog)
class GatewayLogAdmin(ReadOnlyAdmin):
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
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "action", "actor", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["action", "actor", "object_id"]
    date_hierarchy = "created_at"


@admin.register(McpLog)
class McpLogAdmin(ReadOnlyAdmin):
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
