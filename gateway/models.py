from typing import Any

from django.db import models


class ConfigRevision(models.Model):
    """Bumped by every change the gateway keeps in memory (keys, teams, users, providers,
    models, routes). With REDIS_URL the new revision is announced over pub/sub and every
    gateway process reloads within milliseconds; each also polls this one row (every
    THINKWATCH_CONFIG_POLL_SECONDS without Redis, THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS
    with it) and reloads on a change (gateway/revision.py)."""

    value = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"revision {self.value}"


class Scoped(models.Model):
    """Gateway policy that applies where all that are set of team, key and model pattern
    match the request (gateway/guardrails.py `Scope`)."""

    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only requests of this team's keys; empty: every team.",
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only requests with this key; empty: every key.",
    )
    model_pattern = models.CharField(
        max_length=200,
        blank=True,
        help_text='Only models matching this pattern (e.g. "gpt-4o*"); empty: every model.',
    )

    class Meta:
        abstract = True


class GuardrailRule(Scoped):
    """A content-policy rule (gateway/guardrails.py): what it matches, in which direction,
    where it applies, and what happens when it fires."""

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    preset = models.CharField(
        max_length=32,
        blank=True,
        choices=[
            ("prompt_injection", "Prompt injection phrasings"),
            ("secrets", "Secrets and keys"),
            ("pii", "Personal data"),
        ],
        help_text="A built-in rule: its phrases or detectors come from the product, the "
        "kind and patterns below are ignored.",
    )
    kind = models.CharField(
        max_length=16,
        default="phrases",
        choices=[
            ("phrases", "Phrase list"),
            ("regex", "Regular expression"),
            ("detector", "Detector"),
        ],
    )
    patterns = models.JSONField(
        default=list,
        blank=True,
        help_text="Phrases (whole words, any case), regular expressions (any one matching), "
        'or detectors ("secrets", "pii").',
    )
    case_sensitive = models.BooleanField(default=False)
    applies = models.CharField(
        max_length=8,
        default="input",
        choices=[("input", "Input"), ("output", "Output"), ("both", "Both")],
    )
    action = models.CharField(
        max_length=8,
        default="block",
        choices=[
            ("block", "Block (refuse, 400)"),
            ("warn", "Warn (pass, flagged)"),
            ("log", "Log only"),
            ("redact", "Redact (replaced before egress, restored in the answer)"),
        ],
    )
    placeholder = models.CharField(
        max_length=32,
        blank=True,
        help_text="Redact rules: the kind named in placeholders of what this rule matches "
        '(e.g. "NATIONAL_ID" gives [NATIONAL_ID_1]); detectors name their own kinds '
        "(EMAIL, PHONE, CARD, IP, SECRET). Empty: from the rule's name.",
    )
    fail_closed = models.BooleanField(
        default=True,
        help_text="Redact rules: refuse the request (503) when redaction fails (a pattern "
        "timed out) instead of sending it unredacted.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "guardrail rule"

    def __str__(self) -> str:
        return self.name

    def compiled(self) -> "Any":
        """The rule as the gateway runs it (a redact rule with its placeholder kind and
        failure mode)."""
        from gateway import guardrails

        if self.preset:
            rule = guardrails.preset_rule(
                self.preset, self.action, self.pk, self.applies, self.name
            )
        else:
            rule = guardrails.Rule.build(
                self.name,
                self.kind,
                [str(p) for p in self.patterns or []],
                self.applies,
                self.action,
                self.pk,
                self.case_sensitive,
            )
        return (
            rule.redacting(self.placeholder, self.fail_closed) if rule.action == "redact" else rule
        )

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from gateway import guardrails

        if not isinstance(self.patterns, list):
            raise ValidationError({"patterns": "A list of strings."})
        if self.placeholder and not guardrails.LABEL.fullmatch(self.placeholder):
            raise ValidationError(
                {"placeholder": "Capital letters, digits and underscores, starting with a letter."}
            )
        if self.action == "redact" and self.applies == "output":
            raise ValidationError(
                {
                    "applies": "A redact rule applies to input or both: what it replaces in the "
                    "request is put back in the answer."
                }
            )
        try:
            self.compiled()
        except guardrails.InvalidRule as exc:
            raise ValidationError({"patterns": str(exc)}) from None


class CachePolicy(Scoped):
    """Opt-in exact-match response caching (gateway/cache.py) for the requests it covers:
    all that are set of team, key and model pattern must match; the most specific enabled
    policy wins (key, then team, then model pattern, then global)."""

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    ttl_seconds = models.PositiveIntegerField(
        default=3600, help_text="How long an answer is served from the cache."
    )
    per_user = models.BooleanField(
        default=False,
        help_text="Share answers only between requests of the same user (or the same "
        "service key), not across the whole team.",
    )
    count_rate_limits = models.BooleanField(
        default=True,
        help_text="A cache hit still counts as a request against rate limits (at no cost).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "cache policy"
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return self.name
