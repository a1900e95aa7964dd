"""The console's Guardrails and Cache policies pages: content-policy rules
(gateway/guardrails.py) and response-cache policies (gateway/cache.py), managed with
`settings:read` / `settings:update` like the rest of the installation's configuration."""

import functools
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
    """One enabled rule on the test bench page: where it applies, what it did."""

    rule_id: int
    name: str
    scope: str
    applies: str
    action: str
    result: str
    matches: int | None  # None: not counted (not checked, timed out, not in force)
    blocks: bool = False


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
        rows = self._bench_rows(trial) if trial else []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Test rules",
            "form": form,
            "trial": trial,
            "rows": rows,
            "blocking": next((row for row in rows if row.blocks), None),
        }
        return TemplateResponse(request, "admin/gateway/guardrailrule/bench.html", context)

    def _bench_rows(self, trial: guardrails.Trial) -> list[BenchRow]:
        """The rules in force and those left out, in the order they were made."""
        scopes = [(s.team_id, s.key_id, s.model_pattern) for s in trial.rules] + [
            (row.team_id, row.api_key_id, row.model_pattern) for row, _ in trial.skipped
        ]
        scope = _Scopes(scopes)
        rows = [_tried(trial, s, scope(s.team_id, s.key_id, s.model_pattern)) for s in trial.rules]
        rows += [
            BenchRow(
                row.pk,
                row.name,
                scope(row.team_id, row.api_key_id, row.model_pattern),
                row.applies,
                row.action,
                f"not in force: {reason}",
                None,
            )
            for row, reason in trial.skipped
        ]
        return sorted(rows, key=lambda row: row.rule_id)


def _tried(trial: guardrails.Trial, scoped: guardrails.Scoped, scope: str) -> BenchRow:
    rule = scoped.rule
    assert rule.rule_id is not None  # rules from the table have their row's id
    hit = trial.hit_of(rule)
    blocked = trial.blocked_by
    row = functools.partial(BenchRow, rule.rule_id, rule.name, scope, rule.applies, rule.action)
    if not rule.applies_to(trial.direction):
        return row(f"not checked: applies to {rule.applies}", None)
    if hit is None:
        return row("no match", 0)
    if hit.timed_out:
        return row("timed out: no decision, refuses nothing", None)
    if blocked is not None and blocked.rule_id == rule.rule_id:
        return row("fired: the refusal names this rule", hit.count, blocks=True)
    return row("fired", hit.count)


class _Scopes:
    """Where rules apply, in words, with the names of their teams and keys (one query each)."""

    def __init__(self, scopes: list[tuple[int | None, int | None, str]]) -> None:
        self.teams = Team.objects.in_bulk({team for team, _, _ in scopes if team is not None})
        self.keys = ApiKey.objects.in_bulk({key for _, key, _ in scopes if key is not None})

    def __call__(self, team_id: int | None, key_id: int | None, model_pattern: str) -> str:
        parts = []
        if team_id is not None:
            parts.append(f"team {self.teams.get(team_id, f'#{team_id}')}")
        if key_id is not None:
            parts.append(f"key {self.keys.get(key_id, f'#{key_id}')}")
        if model_pattern:
            parts.append(f"models {model_pattern}")
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
