"""The console's Guardrails and Cache policies pages: content-policy rules
(gateway/guardrails.py) and response-cache policies (gateway/cache.py), managed with
`settings:read` / `settings:update` like the rest of the installation's configuration."""

from django.contrib import admin

from gateway.models import CachePolicy, GuardrailRule
from thinkwatch.console import Governed


@admin.register(GuardrailRule)
class GuardrailRuleAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    actions_map = {"view": "read", "add": "update", "change": "update", "delete": "update"}
    list_display = [
        "name",
        "enabled",
        "preset",
        "kind",
        "applies",
        "action",
        "team",
        "model_pattern",
    ]
    list_filter = ["enabled", "action", "applies", "preset"]
    search_fields = ["name"]
    autocomplete_fields = ["team", "api_key"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "action", "applies"]}),
        ("What it matches", {"fields": ["preset", "kind", "patterns", "case_sensitive"]}),
        ("Redaction", {"fields": ["placeholder", "fail_closed"]}),
        ("Where it applies", {"fields": ["team", "api_key", "model_pattern"]}),
    ]


@admin.register(CachePolicy)
class CachePolicyAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    actions_map = {"view": "read", "add": "update", "change": "update", "delete": "update"}
    list_display = ["name", "enabled", "team", "api_key", "model_pattern", "ttl_seconds"]
    list_filter = ["enabled", "per_user", "count_rate_limits"]
    search_fields = ["name"]
    autocomplete_fields = ["team", "api_key"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "ttl_seconds"]}),
        ("Where it applies", {"fields": ["team", "api_key", "model_pattern"]}),
        ("Sharing and limits", {"fields": ["per_user", "count_rate_limits"]}),
    ]
