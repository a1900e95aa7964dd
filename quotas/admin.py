from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from quotas.models import Budget, BudgetAlert, QuotaReset, RateLimitRule
from thinkwatch.console import Governed, GovernedReadOnly


class LimitAdmin(Governed, admin.ModelAdmin):
    area = "limits"
    actions_map = {"view": "read", "add": "update", "change": "update", "delete": "update"}
    list_filter = ["subject_kind", "enabled"]
    search_fields = ["subject_id", "reason"]
    readonly_fields = ["created_at", "created_by"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(RateLimitRule)
class RateLimitRuleAdmin(LimitAdmin):
    list_display = ["label", "subject_id", "surface", "limit", "enabled", "expires_at", "reason"]
    list_filter = ["subject_kind", "surface", "metric", "window", "enabled"]


@admin.register(Budget)
class BudgetAdmin(LimitAdmin):
    list_display = ["label", "subject_id", "limit", "unit", "enabled", "expires_at", "reason"]
    list_filter = ["subject_kind", "period", "unit", "enabled"]


@admin.register(BudgetAlert)
class BudgetAlertAdmin(GovernedReadOnly, admin.ModelAdmin):
    area = "limits"
    list_display = [
        "fired_at",
        "budget",
        "subject_id",
        "period_key",
        "threshold",
        "spent",
        "delivered_at",
    ]
    list_filter = ["threshold"]


@admin.register(QuotaReset)
class QuotaResetAdmin(GovernedReadOnly, admin.ModelAdmin):
    area = "limits"
    list_display = ["at", "subject_kind", "subject_id", "by", "reason"]
