from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.access import Rights
from quotas import scope
from quotas.models import Budget, BudgetAlert, QuotaReset, RateLimitRule
from thinkwatch.console import Governed, GovernedReadOnly


class LimitAdmin(Governed, admin.ModelAdmin):
    """Limits of the subjects the user holds `limits:*` for (quotas/scope.py): every subject
    with a global right; a team and its keys with a team-scoped one, as in the API."""

    area = "limits"
    actions_map = {"view": "read", "add": "update", "change": "update", "delete": "update"}
    list_filter = ["subject_kind", "enabled"]
    search_fields = ["subject_id", "reason"]
    readonly_fields = ["created_at", "created_by"]

    def may(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        perm = self._perm(action)
        if obj is None:
            return Rights.of(request.user).anywhere(perm)
        return scope.may(request.user, perm, obj.subject_kind, obj.subject_id)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        limits = admin.ModelAdmin.get_queryset(self, request)
        return limits.filter(scope.visible(request.user))

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        actor = request.user

        class Scoped(form):  # type: ignore[misc, valid-type]
            def clean(self) -> Any:
                data = super().clean()
                kind, subject = data.get("subject_kind"), data.get("subject_id")
                if kind and subject and not scope.may(actor, "limits:update", kind, subject):
                    raise ValidationError(
                        "You need the limits:update permission for this subject (globally, "
                        "or in the team it belongs to)."
                    )
                return data

        return Scoped

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
