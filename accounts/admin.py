from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.html import format_html

from accounts.lockout import LockoutAdminAuthenticationForm
from accounts.models import (
    ApiKey,
    KeyLifecycleError,
    Membership,
    Organisation,
    Role,
    RoleAssignment,
    Surface,
    Team,
)


def _site_name() -> str:
    return Organisation.current().name


admin.site.site_header = lazy(_site_name, str)()
admin.site.login_form = LockoutAdminAuthenticationForm
admin.site.site_title = lazy(_site_name, str)()
admin.site.index_title = "Console"


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PatternListField(forms.CharField):
    """A list of patterns, edited one per line."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


TOOL_PATTERNS_HELP = (
    'One pattern per line: "*" (every tool), "<prefix>__*" (one server\'s tools) or an exact '
    'tool name; "!" in front denies.'
)


class RoleForm(forms.ModelForm):
    mcp_tools = PatternListField(
        label="MCP tools",
        required=False,
        help_text=TOOL_PATTERNS_HELP + " A denial in any of a user's roles wins; empty: none.",
    )

    class Meta:
        model = Role
        fields = ["name", "slug", "description", "mcp_tools"]


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    form = RoleForm
    list_display = ["name", "builtin", "description"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [RoleAssignmentInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None or not obj.builtin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "member_count", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, team: Team) -> int:
        return team.members.count()


class ApiKeyForm(forms.ModelForm):
    surfaces = forms.MultipleChoiceField(
        choices=Surface.choices, widget=forms.CheckboxSelectMultiple, initial=[Surface.AI_GATEWAY]
    )
    allowed_models = PatternListField(
        initial="*",
        help_text='One pattern per line, e.g. "gpt-4o*" or "claude-*"; "*" allows every model.',
    )
    limit_mcp_tools = forms.BooleanField(
        label="Limit MCP tools",
        required=False,
        help_text="Off: the key may call the MCP tools its owner's roles allow. On: only those "
        "that also match the patterns below (none if there are none).",
    )
    mcp_tools = PatternListField(label="MCP tools", required=False, help_text=TOOL_PATTERNS_HELP)

    class Meta:
        model = ApiKey
        fields = [
            "name",
            "owner",
            "team",
            "surfaces",
            "allowed_models",
            "limit_mcp_tools",
            "mcp_tools",
            "expires_at",
            "inactivity_timeout_days",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["limit_mcp_tools"].initial = self.instance.mcp_tools is not None

    def clean(self) -> dict[str, Any]:
        # null (as the roles allow) and [] (no tools) differ; the checkbox tells them apart.
        data = super().clean() or {}
        if not data.get("limit_mcp_tools"):
            if data.get("mcp_tools"):
                self.add_error("limit_mcp_tools", "Tick this to limit the key to those patterns.")
            data["mcp_tools"] = None
        return data


class RevokeForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=500)


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0,
        max_value=24 * 30,
        initial=settings.KEY_ROTATION_GRACE_HOURS,
        help_text="How long the current key keeps working next to its successor.",
    )


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("current", "Current"), ("archived", "Archived (revoked or rotated out)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "current":
            return queryset.current()  # type: ignore[attr-defined]
        if self.value() == "archived":
            return queryset.archived()  # type: ignore[attr-defined]
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "owner", "team", "state_badge", "last_used_at", "expires_at"]
    list_filter = [KeyStateFilter, "team"]
    search_fields = ["name", "prefix", "owner__email"]
    autocomplete_fields = ["owner"]
    readonly_fields = [
        "prefix",
        "state_badge",
        "created_at",
        "created_by",
        "last_used_at",
        "lineage",
        "rotated_from",
        "grace_ends_at",
        "revoked_at",
        "revoked_reason",
        "revoked_by",
    ]
    actions = None

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        editable = list(ApiKeyForm.Meta.fields)
        return editable if obj is None else editable + self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked (with a reason), then purged after 30 days

    @admin.display(description="state")
    def state_badge(self, key: ApiKey) -> str:
        return key.state().label

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
            request._tw_plaintext = obj.assign_new_secret()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None
    ) -> HttpResponse:
        return self._show_secret(request, obj, request._tw_plaintext, "created")  # type: ignore[attr-defined]

    def _show_secret(
        self, request: HttpRequest, key: ApiKey, plaintext: str, verb: str
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "key": key,
            "plaintext": plaintext,
            "verb": verb,
            "title": f"API key {verb}",
        }
        response = TemplateResponse(request, "admin/accounts/apikey/secret.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="accounts_apikey_revoke",
            ),
            path(
                "<int:pk>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="accounts_apikey_rotate",
            ),
            *super().get_urls(),
        ]

    def _key_for_change(self, request: HttpRequest, pk: int) -> ApiKey:
        key = get_object_or_404(ApiKey, pk=pk)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        return key

    def revoke_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = self._key_for_change(request, pk)
        form = RevokeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                key.revoke(form.cleaned_data["reason"], by=request.user)  # type: ignore[arg-type]
            except KeyLifecycleError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"{key} revoked.")
            return HttpResponseRedirect(reverse("admin:accounts_apikey_change", args=[key.pk]))
        return self._form_page(
            request, key, form, "Revoke", "The key stops working within a second on every gateway."
        )

    def rotate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = self._key_for_change(request, pk)
        form = RotateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                successor, plaintext = key.rotate(
                    timedelta(hours=form.cleaned_data["grace_hours"]),
                    by=request.user,  # type: ignore[arg-type]
                )
            except KeyLifecycleError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(reverse("admin:accounts_apikey_change", args=[key.pk]))
            return self._show_secret(request, successor, plaintext, "rotated")
        return self._form_page(
            request, key, form, "Rotate", "A new key is issued with the same settings."
        )

    def _form_page(
        self, request: HttpRequest, key: ApiKey, form: forms.Form, action: str, note: str
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "key": key,
            "form": form,
            "action": action,
            "note": note,
            "title": f"{action} {key}",
        }
        return TemplateResponse(request, "admin/accounts/apikey/action.html", context)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        key = context.get("original")
        if key is not None and key.revoked_at is None:
            context["key_actions"] = format_html(
                '<a class="button" href="{}">Rotate</a> <a class="button" href="{}">Revoke</a>',
                reverse("admin:accounts_apikey_rotate", args=[key.pk]),
                reverse("admin:accounts_apikey_revoke", args=[key.pk]),
            )
        context["now"] = timezone.now()
        return super().render_change_form(request, context, *args, **kwargs)
