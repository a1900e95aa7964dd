"""The console page of single sign-on: the `OidcConfig` row, its "Test sign-in" button, and
the rule that SSO is enabled only after a passed test. Reading it needs settings:read,
changing it and testing it settings:update."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from accounts import oidc
from accounts.access import Rights
from accounts.models import OidcConfig
from thinkwatch.console import Governed
from thinkwatch.headers import form_redirects_anywhere

GROUP_ROLES_HELP = (
    "One mapping per line: “group | role slug” for a role everywhere, or "
    "“group | role slug | team name” for a role within one team. At every SSO "
    "sign-in these roles are given and taken away to match the groups claim; roles assigned "
    "by hand that no line names are left alone."
)


class GroupRolesField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return "\n".join(
            " | ".join([e["group"], e["role"], *([e["team"]] if e.get("team") else [])])
            for e in value
        )

    def to_python(self, value: Any) -> list[dict[str, str | None]]:  # type: ignore[override]
        mappings: list[dict[str, str | None]] = []
        for line in (super().to_python(value) or "").splitlines():
            if not line.strip():
                continue
            parts = [part.strip() for part in line.split("|")]
            if len(parts) not in (2, 3) or not all(parts):
                raise forms.ValidationError(
                    f"Not a mapping: {line.strip()!r}. Write group | role slug [| team name]."
                )
            mappings.append(
                {"group": parts[0], "role": parts[1], "team": parts[2] if len(parts) == 3 else None}
            )
        return mappings


class OidcConfigForm(forms.ModelForm):
    new_client_secret = forms.CharField(
        label="Client secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: stored encrypted, never shown. Leave empty to keep the current one.",
    )
    group_roles = GroupRolesField(label="Group mapping", required=False, help_text=GROUP_ROLES_HELP)

    class Meta:
        model = OidcConfig
        fields = [
            "enabled",
            "issuer",
            "client_id",
            "scopes",
            "username_claim",
            "email_claim",
            "first_name_claim",
            "last_name_claim",
            "create_users",
            "groups_claim",
            "group_roles",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("new_client_secret"):
            self.instance.set_client_secret(data["new_client_secret"])
        if "issuer" in self.changed_data and "issuer" not in self.errors:
            try:
                oidc.apply_discovery(self.instance, data.get("issuer", ""))
            except oidc.SignInError as exc:
                self.add_error("issuer", str(exc))
        return data


@admin.register(OidcConfig)
class OidcConfigAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    form = OidcConfigForm
    readonly_fields = [
        "test_status",
        "client_secret_stored",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "token_auth_method",
        "pkce",
        "discovered_at",
    ]
    fieldsets = [
        (None, {"fields": ["enabled", "test_status"]}),
        (
            "Provider",
            {
                "fields": [
                    "issuer",
                    "client_id",
                    "client_secret_stored",
                    "new_client_secret",
                    "scopes",
                ]
            },
        ),
        (
            "Accounts",
            {
                "fields": [
                    "username_claim",
                    "email_claim",
                    "first_name_claim",
                    "last_name_claim",
                    "create_users",
                ]
            },
        ),
        ("Roles from groups", {"fields": ["groups_claim", "group_roles"]}),
        (
            "Discovered from the issuer",
            {
                "fields": [
                    "authorization_endpoint",
                    "token_endpoint",
                    "userinfo_endpoint",
                    "jwks_uri",
                    "token_auth_method",
                    "pkce",
                    "discovered_at",
                ],
                "classes": ["collapse"],
            },
        ),
    ]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="test sign-in")
    def test_status(self, config: OidcConfig) -> str:
        if config.tested and config.tested_at:
            return f"Passed on {config.tested_at:%Y-%m-%d %H:%M} UTC with this configuration."
        return "Not passed with this configuration: save it, then use “Test sign-in” above."

    @admin.display(boolean=True, description="client secret stored")
    def client_secret_stored(self, config: OidcConfig) -> bool:
        return config.has_client_secret

    def get_urls(self) -> list[Any]:
        test = self.admin_site.admin_view(require_POST(self.test_view))
        return [path("test/", test, name="accounts_oidcconfig_test"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        config = OidcConfig.current()
        return HttpResponseRedirect(reverse("admin:accounts_oidcconfig_change", args=[config.pk]))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "redirect_uri": oidc.callback_url(request),
            "can_test": Rights.of(request.user).has("settings:update"),
        }
        # "Test sign-in" is a form answered with a redirect to the provider.
        view = form_redirects_anywhere(super().change_view)
        return view(request, object_id, form_url, extra)

    def test_view(self, request: HttpRequest) -> HttpResponse:
        """Run the sign-in flow in test mode with the saved configuration."""
        if not Rights.of(request.user).has("settings:update"):
            raise PermissionDenied
        config = OidcConfig.current()
        try:
            oidc.rediscover(config)
            url = oidc.begin(request, config, oidc.TEST)
        except oidc.SignInError as exc:
            messages.error(request, str(exc))
            change = reverse("admin:accounts_oidcconfig_change", args=[config.pk])
            return HttpResponseRedirect(change)
        return HttpResponseRedirect(url)
