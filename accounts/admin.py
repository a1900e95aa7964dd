from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.html import format_html

from accounts import access, deletion, roles
from accounts.access import Rights
from accounts.lockout import LockoutAdminAuthenticationForm
from accounts.models import (
    ApiKey,
    KeyLifecycleError,
    Membership,
    Organisation,
    Role,
    RoleAssignment,
    RoleRevision,
    Surface,
    Team,
)
from accounts.permissions import validate_permissions
from accounts.runtime import setting
from thinkwatch.console import Governed, GovernedInline


def _site_name() -> str:
    return Organisation.current().name


admin.site.site_header = lazy(_site_name, str)()
admin.site.login_form = LockoutAdminAuthenticationForm
admin.site.site_title = lazy(_site_name, str)()
admin.site.index_title = "Console"


@admin.register(Organisation)
class OrganisationAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    actions_map = {"view": "read", "add": "update", "change": "update", "delete": "update"}
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
        if isinstance(value, list):
            return value  # a disabled field (a built-in role's) cleans its stored list
        text = super().to_python(value) or ""
        return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


TOOL_PATTERNS_HELP = (
    'One pattern per line: "*" (every tool), "<prefix>__*" (one server\'s tools) or an exact '
    'tool name; "!" in front denies.'
)


class RoleForm(forms.ModelForm):
    permissions = PatternListField(
        required=False,
        help_text='One per line: a permission ("api_keys:create"), an area ("api_keys:*") or '
        '"*"; "!" in front denies, and a denial in any of a user\'s roles wins. The list is '
        "in docs/permissions.md. You can only give rights you hold yourself.",
    )
    mcp_tools = PatternListField(
        label="MCP tools",
        required=False,
        help_text=TOOL_PATTERNS_HELP + " A denial in any of a user's roles wins; empty: none.",
    )

    class Meta:
        model = Role
        fields = ["name", "slug", "description", "permissions", "mcp_tools"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.builtin:
            for name in ("name", "slug", "permissions"):
                self.fields[name].disabled = True  # built-in roles are defined by the product

    def clean_permissions(self) -> list[str]:
        value = self.cleaned_data["permissions"]
        validate_permissions(value)
        actor = getattr(self, "actor", None)
        if actor is not None and value != (self.instance.permissions or []):
            problem = access.definable(actor, value)
            if problem:
                raise forms.ValidationError(problem)
        return value


def _refuse(formset: Any, form: forms.BaseForm, problem: str) -> None:
    """Django ignores the errors of a row marked for deletion: refuse the whole set then."""
    if formset.can_delete and formset._should_delete_form(form):
        raise forms.ValidationError(problem)
    form.add_error(None, problem)


class AssignmentFormSet(BaseInlineFormSet):
    """Role assignments the acting user may make: `roles:assign` where the assignment holds,
    and every right the role gives (nobody grants what they don't hold)."""

    actor: Any = None

    def clean(self) -> None:
        super().clean()
        for form in self.forms:
            if not form.has_changed() or not hasattr(form, "cleaned_data"):
                continue
            data = form.cleaned_data
            if not data:
                continue
            original = form.instance if form.instance.pk else None
            targets = [(data.get("role"), data.get("team"))]
            if original is not None:
                targets.append((original.role, original.team))  # removing it is granting too
            for role, team in targets:
                if role is None:
                    continue
                problem = access.grantable(self.actor, role, team.pk if team else None)
                if problem:
                    _refuse(self, form, problem)
                    break


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    formset = AssignmentFormSet
    extra = 1
    autocomplete_fields = ["user"]

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.actor = request.user  # type: ignore[attr-defined]
        return formset

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return Rights.of(request.user).anywhere("roles:read")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return Rights.of(request.user).anywhere("roles:assign")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return Rights.of(request.user).anywhere("roles:assign")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return Rights.of(request.user).anywhere("roles:assign")


class RoleRevisionInline(admin.TabularInline):
    model = RoleRevision
    fields = readonly_fields = ("version", "action", "changed_by_name", "changed_at", "snapshot")
    extra = 0
    can_delete = False
    verbose_name_plural = "history"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A JSON file exported from a ThinkWatch console.")


@admin.register(Role)
class RoleAdmin(Governed, admin.ModelAdmin):
    area = "roles"
    form = RoleForm
    list_display = ["name", "builtin", "version", "description"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [RoleAssignmentInline, RoleRevisionInline]
    change_list_template = "admin/accounts/role/change_list.html"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (obj is None or not obj.builtin) and super().has_delete_permission(request, obj)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.actor = request.user  # type: ignore[attr-defined]
        return form

    def save_model(self, request: HttpRequest, obj: Role, form: Any, change: bool) -> None:
        roles.save(obj, by=request.user, action="updated" if change else "created")

    def delete_model(self, request: HttpRequest, obj: Role) -> None:
        roles.delete(obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Role]) -> None:
        for role in queryset:
            roles.delete(role, by=request.user)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "export/", self.admin_site.admin_view(self.export_view), name="accounts_role_export"
            ),
            path(
                "import/", self.admin_site.admin_view(self.import_view), name="accounts_role_import"
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        response = HttpResponse(roles.export_json(), content_type="application/json")
        response["Content-Disposition"] = 'attachment; filename="thinkwatch-roles.json"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (
            Rights.of(request.user).has("roles:create")
            and Rights.of(request.user).has("roles:update")
        ):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = roles.import_json(form.cleaned_data["file"].read(), by=request.user)
            except roles.ImportRefused as exc:
                form.add_error("file", str(exc))
            else:
                messages.success(
                    request,
                    f"Imported roles: {len(result.created)} created, {len(result.updated)} "
                    f"updated, {len(result.unchanged)} unchanged.",
                )
                return HttpResponseRedirect(reverse("admin:accounts_role_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Import roles",
        }
        return TemplateResponse(request, "admin/accounts/role/import.html", context)


class MembershipInline(GovernedInline, admin.TabularInline):
    area = "members"
    team_field = "team"
    actions_map = {"view": "read", "add": "manage", "change": "manage", "delete": "manage"}
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]

    def _parent_team(self, obj: Any) -> int | None:
        return obj.pk if isinstance(obj, Team) else getattr(obj, "team_id", None)


@admin.register(Team)
class TeamAdmin(Governed, admin.ModelAdmin):
    area = "teams"
    team_field = "pk"
    list_display = ["name", "member_count", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def team_of(self, obj: Any) -> int | None:
        return obj.pk

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        teams = admin.ModelAdmin.get_queryset(self, request)
        return teams.filter(access.team_filter(request.user, "teams:read", "pk"))

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

    actor: Any = None

    def clean(self) -> dict[str, Any]:
        # null (as the roles allow) and [] (no tools) differ; the checkbox tells them apart.
        data = super().clean() or {}
        _check_issuer_rights(self, data)
        if not data.get("limit_mcp_tools"):
            if data.get("mcp_tools"):
                self.add_error("limit_mcp_tools", "Tick this to limit the key to those patterns.")
            data["mcp_tools"] = None
        return data


def _check_issuer_rights(form: "ApiKeyForm", data: dict[str, Any]) -> None:
    """The same rule as the API (access.key_placement_problems), for what the form changes."""
    actor = form.actor
    if actor is None:
        return
    team, owner = data.get("team"), data.get("owner")
    key = form.instance
    new = key.pk is None
    problems = access.key_placement_problems(
        actor,
        owner,
        team,
        placing=new or key.team_id != (team.pk if team else None),
        assigning=new or key.owner_id != (owner.pk if owner else None),
    )
    for problem in problems:
        form.add_error(problem.field, problem.message)


class RevokeForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=500)


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0,
        max_value=24 * 30,
        initial=lambda: setting("keys.rotation_grace_hours"),
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
class ApiKeyAdmin(Governed, admin.ModelAdmin):
    """Keys of the teams where the user holds api_keys rights, and always their own."""

    area = "api_keys"
    team_field = "team"
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

    def _own(self, request: HttpRequest, obj: Any) -> bool:
        return obj is not None and obj.owner_id == request.user.pk

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list is everyone's (they always see their own keys); get_queryset narrows it.
        return obj is None or self._own(request, obj) or super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._own(request, obj) or super().has_change_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return True  # everyone may always see and manage their own keys

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        keys = admin.ModelAdmin.get_queryset(self, request)
        return keys.filter(
            access.team_filter(request.user, "api_keys:read") | Q(owner_id=request.user.pk)
        )

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.actor = request.user  # type: ignore[attr-defined]
        return form

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
        """Post/Redirect/Get: the plaintext waits in the (server-side) session for the one
        page that shows it, so reloading that page never submits the form again."""
        request.session[f"tw-secret-{key.pk}"] = {"plaintext": plaintext, "verb": verb}
        return HttpResponseRedirect(reverse("admin:accounts_apikey_secret", args=[key.pk]))

    def secret_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(self.get_queryset(request), pk=pk)
        shown = request.session.pop(f"tw-secret-{key.pk}", None)
        if shown is None:
            messages.info(request, "A key's plaintext is shown once, when it is issued.")
            return HttpResponseRedirect(reverse("admin:accounts_apikey_change", args=[key.pk]))
        plaintext, verb = shown["plaintext"], shown["verb"]
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
            path(
                "<int:pk>/secret/",
                self.admin_site.admin_view(self.secret_view),
                name="accounts_apikey_secret",
            ),
            *super().get_urls(),
        ]

    def _key_for(self, request: HttpRequest, pk: int, perm: str) -> ApiKey:
        """As the API: keys one may not see are 404; one's own need no right; others' need
        `perm` (api_keys:rotate or api_keys:revoke, not update) in the key's team."""
        key = get_object_or_404(self.get_queryset(request), pk=pk)
        if not (self._own(request, key) or Rights.of(request.user).has(perm, key.team_id)):
            raise PermissionDenied
        return key

    def revoke_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = self._key_for(request, pk, "api_keys:revoke")
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
        key = self._key_for(request, pk, "api_keys:rotate")
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


class UserRoleInline(RoleAssignmentInline):
    fk_name = "user"
    autocomplete_fields = ["role", "team"]
    verbose_name_plural = "roles"


class MembershipFormSet(BaseInlineFormSet):
    """Adding someone to a team or removing them needs members:manage in that team."""

    actor: Any = None

    def clean(self) -> None:
        super().clean()
        rights = Rights.of(self.actor)
        for form in self.forms:
            if not form.has_changed() or not getattr(form, "cleaned_data", None):
                continue
            teams = [form.cleaned_data.get("team"), getattr(form.instance, "team", None)]
            for team in filter(None, teams):
                if not rights.has("members:manage", team.pk):
                    _refuse(self, form, f"You need the members:manage permission in {team}.")
                    break


class UserMembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 0
    autocomplete_fields = ["team"]
    verbose_name_plural = "teams"

    def _may(self, request: HttpRequest) -> bool:
        return Rights.of(request.user).anywhere("members:manage")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return Rights.of(request.user).anywhere("members:read") or self._may(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.actor = request.user  # type: ignore[attr-defined]
        return formset


class DeletedFilter(admin.SimpleListFilter):
    """Deleted accounts stay out of the list unless asked for (until the purge)."""

    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return [("yes", "Deleted, restorable")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == "yes":
            return deletion.deleted(queryset)
        return deletion.live(queryset)


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(Governed, DjangoUserAdmin):
    """People: their details, roles and teams. `is_staff` is not edited: it follows from
    holding any console right. Superuser status is given only by superusers."""

    area = "users"
    list_display = ["account", "email", "first_name", "last_name", "is_active", "last_login"]
    list_filter = [DeletedFilter, "is_active", "is_superuser", "teams"]
    inlines = [UserRoleInline, UserMembershipInline]
    actions = ["sign_out_everywhere", "restore"]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Person", {"fields": ("first_name", "last_name", "email")}),
        ("Status", {"fields": ("is_active", "is_superuser", "last_login", "date_joined")}),
    )
    readonly_fields = ["last_login", "date_joined"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).select_related("security")

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        if request.path.endswith("/autocomplete/"):
            queryset = deletion.live(queryset)  # nobody picks a deleted account
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="username", ordering="username")
    def account(self, user: User) -> str:
        security = getattr(user, "security", None)
        if security is not None and security.deleted_at is not None:
            return f"{security.deleted_username} (deleted {security.deleted_at:%Y-%m-%d})"
        return user.username

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields.append("is_superuser")
        return fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        rights = Rights.of(request.user)
        if obj is not None and obj.pk == request.user.pk:
            return True
        return rights.anywhere("users:read") or super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return Rights.of(request.user).anywhere("users:read")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and access.manageable(request.user, obj):
            return False  # a superuser, or an account holding rights the user lacks
        if obj is not None and deletion.is_deleted(obj):
            return False  # restore it first
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and (obj.pk == request.user.pk or access.manageable(request.user, obj)):
            return False
        if obj is not None and deletion.is_deleted(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        if not Rights.of(request.user).has("users:update"):
            actions.pop("sign_out_everywhere", None)
        if not Rights.of(request.user).has("users:delete"):
            actions.pop("restore", None)
        return actions

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # The confirmation page would list the keys, memberships and roles a real delete
        # removes; a soft delete removes none of them (the purge does, 30 days later).
        return [str(obj) for obj in objs], {}, set(), []

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        deletion.delete_softly(obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            if user.pk != request.user.pk and not access.manageable(request.user, user):
                deletion.delete_softly(user, by=request.user)

    @admin.action(description="Restore (deleted accounts come back disabled)")
    def restore(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        access.require(request.user, "users:delete")
        restored = 0
        for user in deletion.deleted(queryset):
            try:
                deletion.restore(user)
            except deletion.RestoreRefused as refused:
                messages.error(request, str(refused))
                continue
            restored += 1
        messages.success(request, f"Restored {restored} account(s); enable them to let them in.")

    @admin.action(description="Sign out everywhere (end their console sessions)")
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        from accounts.sessions import end_sessions

        access.require(request.user, "users:update")
        count = 0
        for user in queryset:
            end_sessions(user)
            count += 1
        messages.success(request, f"Signed out {count} account(s) everywhere.")


# The single sign-on page (a module of its own: it is a flow as much as a form).
from accounts import admin_oidc  # noqa: E402, F401
