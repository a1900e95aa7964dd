from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from providers.models import AIModel, Provider, Route
from thinkwatch.console import Governed, GovernedInline


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key (Bedrock: AWS secret access key)",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: stored encrypted, never shown. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")
    aws_session_token = forms.CharField(
        label="AWS session token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Bedrock with temporary credentials only. Write-only.",
    )

    class Meta:
        model = Provider
        fields = [
            "name",
            "type",
            "base_url",
            "api_version",
            "region",
            "aws_access_key_id",
            "enabled",
            "read_timeout",
            "stream_usage",
        ]

    def clean(self) -> dict[str, Any]:
        # Runs before the model's own checks, which must see the key typed in this form.
        data = super().clean() or {}
        if data.get("clear_api_key"):
            self.instance.set_secret("")
        elif data.get("api_key"):
            self.instance.set_secret(data["api_key"])
        if data.get("aws_session_token"):
            self.instance.set_session_token(data["aws_session_token"])
        return data


@admin.register(Provider)
class ProviderAdmin(Governed, admin.ModelAdmin):
    area = "providers"
    form = ProviderForm
    list_display = ["name", "type", "endpoint", "enabled", "has_api_key"]
    fieldsets = [
        (None, {"fields": ["name", "type", "base_url", "enabled"]}),
        ("Credentials (write-only)", {"fields": ["api_key", "clear_api_key"]}),
        ("Azure OpenAI", {"fields": ["api_version"], "classes": ["collapse"]}),
        (
            "AWS Bedrock",
            {
                "fields": ["region", "aws_access_key_id", "aws_session_token"],
                "classes": ["collapse"],
            },
        ),
        ("Behaviour", {"fields": ["read_timeout", "stream_usage"]}),
    ]
    list_filter = ["type", "enabled"]
    search_fields = ["name"]

    # The delete page has already refused a provider that routes use.
    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        obj.delete_softly()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            provider.delete_softly()

    @admin.display(description="base URL")
    def endpoint(self, provider: Provider) -> str:
        return provider.effective_base_url

    @admin.display(boolean=True, description="API key set")
    def has_api_key(self, provider: Provider) -> bool:
        return provider.has_secret


class RouteInline(GovernedInline, admin.TabularInline):
    area = "routes"
    model = Route
    extra = 1
    fields = ["provider", "upstream_model", "weight", "enabled", "input_price", "output_price"]


@admin.register(AIModel)
class AIModelAdmin(Governed, admin.ModelAdmin):
    area = "models"
    list_display = [
        "model_id",
        "display_name",
        "input_price",
        "output_price",
        "enabled",
        "routing_strategy",
        "route_count",
    ]
    list_filter = ["enabled", "routing_strategy"]
    search_fields = ["model_id", "display_name"]
    inlines = [RouteInline]
    fieldsets = [
        (None, {"fields": ["model_id", "display_name", "enabled"]}),
        (
            "Price (USD per 1M tokens)",
            {"fields": ["input_price", "output_price", "cached_input_price"]},
        ),
        ("Quota weights", {"fields": ["input_multiplier", "output_multiplier"]}),
        ("Routing", {"fields": ["routing_strategy", "affinity_seconds"]}),
    ]

    @admin.display(description="routes")
    def route_count(self, model: AIModel) -> int:
        return model.routes.filter(enabled=True).count()

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("routes")
