"""The console's Guardrails page: content-policy rules (gateway/guardrails.py), managed with
`settings:read` / `settings:update` like the rest of the installation's configuration."""

from django.contrib import admin

from gateway.models import GuardrailRule
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
        ("Where it applies", {"fields": ["team", "api_key", "model_pattern"]}),
    ]
