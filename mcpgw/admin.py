from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import construct_instance
from django.http import HttpRequest

from accounts.runtime import setting
from mcpgw import logic
from mcpgw.models import McpCredential, McpServer
from thinkwatch.console import Governed


def _secret_input() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


# The form's names for the secrets, which check_server reports under the model's names.
_FORM_NAMES = {"static_secret": "shared_secret", "oauth_client_secret": "client_secret"}


class McpServerForm(forms.ModelForm):
    shared_secret = forms.CharField(
        required=False,
        strip=True,
        widget=_secret_input(),
        help_text="Sent in the header above to the server. Write-only: stored encrypted, "
        "never shown. Leave empty to keep the current secret.",
    )
    clear_shared_secret = forms.BooleanField(required=False, help_text="Remove the stored secret.")
    client_secret = forms.CharField(
        label="OAuth client secret",
        required=False,
        strip=True,
        widget=_secret_input(),
        help_text="Write-only. Leave empty to keep the current one; none for a public client.",
    )
    clear_client_secret = forms.BooleanField(
        required=False, help_text="Remove the stored client secret."
    )

    class Meta:
        model = McpServer
        fields = [
            "name",
            "prefix",
            "url",
            "description",
            "enabled",
            "timeout_seconds",
            "auth_mode",
            "header_name",
            "header_scheme",
            "oauth_issuer",
            "oauth_authorization_endpoint",
            "oauth_token_endpoint",
            "oauth_client_id",
            "oauth_scopes",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("clear_shared_secret"):
            self.instance.set_static_secret("")
        elif data.get("shared_secret"):
            self.instance.set_static_secret(data["shared_secret"])
        if data.get("clear_client_secret"):
            self.instance.set_client_secret("")
        elif data.get("client_secret"):
            self.instance.set_client_secret(data["client_secret"])
        # The model's own rules run after this; these need the values typed in this form.
        construct_instance(self, self.instance, self._meta.fields, self._meta.exclude)
        urls = [f for f in logic.CHECKED_URLS if f in self.changed_data and f not in self.errors]
        try:
            logic.check_server(self.instance, urls=urls)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(_FORM_NAMES.get(field, field), messages)
        return data


@admin.register(McpServer)
class McpServerAdmin(Governed, admin.ModelAdmin):
    area = "mcp_servers"
    form = McpServerForm
    list_display = ["name", "prefix", "url", "auth_mode", "enabled"]
    list_filter = ["auth_mode", "enabled"]
    search_fields = ["name", "prefix", "url"]
    readonly_fields = ["shared_secret_set", "client_secret_set"]
    fieldsets = [
        (
            None,
            {"fields": ["name", "prefix", "url", "description", "enabled", "timeout_seconds"]},
        ),
        ("Authentication", {"fields": ["auth_mode", "header_name", "header_scheme"]}),
        (
            "Shared secret header (write-only)",
            {"fields": ["shared_secret_set", "shared_secret", "clear_shared_secret"]},
        ),
        (
            "OAuth per user",
            {
                "description": "Leave the issuer and both endpoints empty to discover them "
                "from the server's metadata when a user connects.",
                "fields": [
                    "oauth_issuer",
                    "oauth_authorization_endpoint",
                    "oauth_token_endpoint",
                    "oauth_client_id",
                    "client_secret_set",
                    "client_secret",
                    "clear_client_secret",
                    "oauth_scopes",
                ],
                "classes": ["collapse"],
            },
        ),
    ]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("timeout_seconds", setting("mcp.default_timeout_seconds"))
        return initial

    @admin.display(boolean=True, description="secret stored")
    def shared_secret_set(self, server: McpServer) -> bool:
        return server.has_static_secret

    @admin.display(boolean=True, description="client secret stored")
    def client_secret_set(self, server: McpServer) -> bool:
        return server.has_client_secret


@admin.register(McpCredential)
class McpCredentialAdmin(Governed, admin.ModelAdmin):
    area = "mcp_connections"
    actions_map = {"view": "read", "add": "manage", "change": "manage", "delete": "manage"}
    """What users have connected. Tokens are never shown; deleting a credential disconnects
    the user, who must connect again."""

    list_display = ["user", "server", "kind", "expires_at", "updated_at"]
    list_filter = ["server", "kind"]
    list_select_related = ["user", "server"]
    search_fields = ["user__username", "user__email", "server__name", "server__prefix"]
    fields = readonly_fields = (
        "user",
        "server",
        "kind",
        "scopes",
        "expires_at",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
