"""The console's Guardrails and Cache policies pages: content-policy rules
(gateway/guardrails.py) and response-cache policies (gateway/cache.py), managed with
`settings:read` / `settings:update` like the rest of the installation's configuration."""

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.access import Rights
from accounts.models import ApiKey, Team
from gateway import guardrails
from gateway.models import CachePolicy, GuardrailRule
from thinkwatch.console import Governed


class BenchForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "spellcheck": "false"}),
        max_length=guardrails.MAX_TRIAL_CHARS,
        strip=False,
        help_text="Nothing is sent to a model or recorded. The results name rules and count "
        "matches; they never show what matched.",
    )
    direction = forms.ChoiceField(
        choices=[("input", "Input: sent to a model"), ("output", "Output: a model's answer")],
        initial="input",
        widget=forms.RadioSelect,
        # Django's default message would repeat the submitted value.
        error_messages={"invalid_choice": "Choose input or output."},
    )


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One enabled rule on the test bench page."""

    rule: guardrails.Rule
    scope: str
    checked: bool  # the rule applies in the direction tested
    hit: guardrails.Hit | None
    blocks: bool


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

    def get_urls(self) -> list[Any]:
        bench = self.admin_site.admin_view(require_http_methods(["GET", "POST"])(self.bench_view))
        return [path("test/", bench, name="gateway_guardrailrule_test"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {**(extra_context or {}), "can_test_rules": self._may_test(request)}
        return super().changelist_view(request, extra)

    def _may_test(self, request: HttpRequest) -> bool:
        return Rights.of(request.user).has("settings:read")  # as POST /api/guardrails/test

    def bench_view(self, request: HttpRequest) -> HttpResponse:
        """The test bench: what every enabled rule does with a pasted text. The text comes
        back in its own field only; the results never show what matched."""
        if not self._may_test(request):
            raise PermissionDenied
        form = BenchForm(request.POST) if request.method == "POST" else BenchForm()
        trial = None
        if form.is_bound and form.is_valid():
            trial = guardrails.trial(form.cleaned_data["text"], form.cleaned_data["direction"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Test rules",
            "form": form,
            "trial": trial,
            "rows": self._bench_rows(trial) if trial else [],
        }
        return TemplateResponse(request, "admin/gateway/guardrailrule/bench.html", context)

    def _bench_rows(self, trial: guardrails.Trial) -> list[BenchRow]:
        teams = Team.objects.in_bulk({s.team_id for s in trial.rules if s.team_id is not None})
        keys = ApiKey.objects.in_bulk({s.key_id for s in trial.rules if s.key_id is not None})
        blocked = trial.blocked_by
        return [
            BenchRow(
                rule=scoped.rule,
                scope=_scope(scoped, teams, keys),
                checked=scoped.rule.applies_to(trial.direction),
                hit=trial.hit_of(scoped.rule),
                blocks=blocked is not None and blocked.rule_id == scoped.rule.rule_id,
            )
            for scoped in trial.rules
        ]


def _scope(scoped: guardrails.Scoped, teams: dict[int, Team], keys: dict[int, ApiKey]) -> str:
    """Where a rule applies, in words: the gateway checks it only on requests that match."""
    parts = []
    if scoped.team_id is not None:
        parts.append(f"team {teams.get(scoped.team_id, f'#{scoped.team_id}')}")
    if scoped.key_id is not None:
        parts.append(f"key {keys.get(scoped.key_id, f'#{scoped.key_id}')}")
    if scoped.model_pattern:
        parts.append(f"models {scoped.model_pattern}")
    return ", ".join(parts) or "everywhere"


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
