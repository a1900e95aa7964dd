from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

MAX_OVERRIDE_DAYS = 90


class SubjectKind(models.TextChoices):
    ROLE = "role", "Role (default for its holders)"
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    TEAM = "team", "Team"
    PROVIDER = "provider", "Provider"
    MODEL = "model", "Model"
    MCP_SERVER = "mcp_server", "MCP server"


class Surface(models.TextChoices):
    AI_GATEWAY = "ai_gateway", "AI gateway"
    MCP_GATEWAY = "mcp_gateway", "MCP gateway"


class Metric(models.TextChoices):
    REQUESTS = "requests"
    TOKENS = "tokens", "weighted tokens"


class Window(models.IntegerChoices):
    MINUTE = 60, "1m"
    FIVE_MINUTES = 300, "5m"
    HOUR = 3600, "1h"
    FIVE_HOURS = 18000, "5h"
    DAY = 86400, "1d"
    WEEK = 604800, "1w"


class Period(models.TextChoices):
    DAY = "day", "daily"
    WEEK = "week", "weekly (ISO week)"
    MONTH = "month", "monthly"


class Unit(models.TextChoices):
    TOKENS = "tokens", "weighted tokens"
    USD = "usd", "USD"


def _future(value: object) -> None:
    if value is not None and value <= timezone.now():  # type: ignore[operator]
        raise ValidationError("The expiry must be in the future.")


class Limit(models.Model):
    """What rate-limit rules and budgets share: who they apply to, and for how long."""

    subject_kind = models.CharField(max_length=16, choices=SubjectKind.choices)
    subject_id = models.CharField(
        max_length=200, help_text="The subject's id (for a model: its model id, e.g. gpt-4o)."
    )
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, validators=[_future], help_text="Temporary: stops applying then."
    )
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    class Meta:
        abstract = True

    def clean(self) -> None:
        if self.expires_at and self.expires_at > timezone.now() + timedelta(days=MAX_OVERRIDE_DAYS):
            raise ValidationError(
                {"expires_at": f"A temporary limit lasts at most {MAX_OVERRIDE_DAYS} days."}
            )

    @property
    def subject(self) -> str:
        return f"{self.subject_kind}:{self.subject_id}"


class RateLimitRule(Limit):
    surface = models.CharField(max_length=16, choices=Surface.choices, default=Surface.AI_GATEWAY)
    metric = models.CharField(max_length=16, choices=Metric.choices, default=Metric.REQUESTS)
    window = models.PositiveIntegerField(choices=Window.choices)
    limit = models.PositiveBigIntegerField(validators=[MinValueValidator(1)])

    class Meta:
        ordering = ["subject_kind", "subject_id", "surface", "metric", "window"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_kind", "subject_id", "surface", "metric", "window"],
                name="rate_rule_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.label}: {self.limit}"

    @property
    def label(self) -> str:
        return f"{self.subject_kind}:{self.metric}/{Window(self.window).label}"


class Budget(Limit):
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.USD)
    limit = models.DecimalField(
        max_digits=18, decimal_places=6, validators=[MinValueValidator(Decimal("0.000001"))]
    )
    alert_webhook_url = models.URLField(
        blank=True,
        help_text="Also POST alerts (50/80/95/100%) here; empty uses the gateway-wide webhook.",
    )

    class Meta:
        ordering = ["subject_kind", "subject_id", "period", "unit"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_kind", "subject_id", "period", "unit"], name="budget_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.label}: {self.limit} {self.unit}"

    @property
    def label(self) -> str:
        return f"{self.subject_kind}:budget/{Period(self.period).label.split(' ')[0]}"


class BudgetAlert(models.Model):
    """A threshold a budget crossed in one period; unique, so each fires once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_key = models.CharField(max_length=16)  # 2026-11-23, 2026-W48, 2026-11
    subject_id = models.CharField(max_length=200)  # the counted subject (roles count per user)
    threshold = models.PositiveSmallIntegerField()  # percent
    spent = models.DecimalField(max_digits=18, decimal_places=6)
    fired_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "subject_id", "period_key", "threshold"], name="budget_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.threshold}% in {self.period_key}"


class QuotaReset(models.Model):
    """An admin zeroed a subject's counters; budgets count spend from here on."""

    subject_kind = models.CharField(max_length=16, choices=SubjectKind.choices)
    subject_id = models.CharField(max_length=200)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"reset {self.subject_kind}:{self.subject_id} at {self.at:%Y-%m-%d %H:%M}"
