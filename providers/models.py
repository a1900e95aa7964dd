from decimal import Decimal
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, router, transaction
from django.db.models.signals import post_delete
from django.utils import timezone

from providers.specs import SPECS, TYPE_CHOICES, ProviderSpec
from thinkwatch.lib import crypto

SECRET_PURPOSE = "providers.Provider.secret"  # noqa: S105 (a label, not a secret)
SESSION_TOKEN_PURPOSE = "providers.Provider.session_token"  # noqa: S105

model_id_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
    "Use letters, digits and . _ : / @ + - (no spaces), starting with a letter or digit.",
)


def validate_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Give an http:// or https:// URL, e.g. https://api.openai.com/v1.")
    if parts.query or parts.fragment:
        raise ValidationError("The base URL cannot carry a query string or fragment.")


class LiveProviders(models.Manager["Provider"]):
    """Providers that are not deleted: what routing, the console and the API see."""

    def get_queryset(self) -> models.QuerySet["Provider"]:
        return super().get_queryset().filter(deleted_at__isnull=True)


class Provider(models.Model):
    """An upstream account the gateway calls. Deleting one (`delete_softly`) takes it out
    of routing, the console and the API at once; the row stays, without its credentials,
    until the purge job removes it (providers/tasks.py)."""

    name = models.CharField(max_length=100)
    type = models.CharField(max_length=32, choices=TYPE_CHOICES)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="Leave empty for the provider's public endpoint. Include the API version "
        "path, e.g. http://ollama:11434/v1.",
    )
    # AES-256-GCM envelopes (thinkwatch.lib.crypto); never shown or returned. The secret is
    # the API key, or for Bedrock the AWS secret access key.
    secret = models.TextField(blank=True, editable=False)
    session_token = models.TextField(blank=True, editable=False)
    api_version = models.CharField(
        max_length=40, blank=True, help_text="Azure OpenAI: the api-version, e.g. 2024-10-21."
    )
    region = models.CharField(
        max_length=40,
        blank=True,
        validators=[RegexValidator(r"^[a-z]{2}(-[a-z]+)+-\d$", "An AWS region such as us-east-1.")],
        help_text="AWS Bedrock: the region, e.g. us-east-1.",
    )
    aws_access_key_id = models.CharField(
        "AWS access key id", max_length=128, blank=True, help_text="AWS Bedrock only."
    )
    enabled = models.BooleanField(default=True)
    read_timeout = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01)],
        help_text="Seconds to wait for upstream data; empty uses the gateway default.",
    )
    stream_usage = models.BooleanField(
        default=True,
        help_text="Ask for a usage chunk at the end of streams (stream_options.include_usage). "
        "Turn off for servers that reject the option.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The first manager is the default one: the admin, the API, forms and the gateway's
    # route table see live providers only. A route reaches its provider through the base
    # manager, which sees them all.
    objects = LiveProviders()
    all_objects = models.Manager["Provider"]()

    class Meta:
        ordering = ["name"]
        # A deleted provider's name is free again at once.
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(deleted_at__isnull=True),
                name="provider_name_unique",
                violation_error_code="unique",
                violation_error_message="A provider with this name already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def delete_softly(self) -> None:
        """Delete the provider as far as anyone can tell: it leaves routing, the console and
        the API, and its credentials are wiped. Refused (ProtectedError, as a real delete)
        while routes use it.

        For the admin audit log and the gateways' config revision this is the deletion:
        they hear `post_delete` with the provider as it was. The purge job removes the row
        later without a second audit event (it runs outside any request)."""
        using = router.db_for_write(Provider, instance=self)
        with transaction.atomic(using=using):
            row = Provider.all_objects.using(using).select_for_update().get(pk=self.pk)
            if row.deleted_at is not None:
                return
            routes = list(row.routes.all())
            if routes:
                raise models.ProtectedError(
                    f"Routes still use the provider {row.name}; delete or move them first.",
                    set(routes),
                )
            Provider.all_objects.using(using).filter(pk=self.pk).update(
                deleted_at=timezone.now(), enabled=False, secret="", session_token=""
            )
            post_delete.send(sender=Provider, instance=row, using=using, origin=row)
        self.refresh_from_db(from_queryset=Provider.all_objects.using(using))

    @property
    def spec(self) -> ProviderSpec:
        return SPECS[self.type]

    @property
    def effective_base_url(self) -> str:
        url = self.base_url or self.spec.default_base_url.format(region=self.region or "{region}")
        return url.rstrip("/")

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

    def set_secret(self, plaintext: str) -> None:
        self.secret = crypto.encrypt(plaintext, SECRET_PURPOSE) if plaintext else ""

    def reveal_secret(self) -> str:
        return crypto.decrypt(self.secret, SECRET_PURPOSE) if self.secret else ""

    def set_session_token(self, plaintext: str) -> None:
        self.session_token = crypto.encrypt(plaintext, SESSION_TOKEN_PURPOSE) if plaintext else ""

    def reveal_session_token(self) -> str:
        return (
            crypto.decrypt(self.session_token, SESSION_TOKEN_PURPOSE) if self.session_token else ""
        )

    def clean(self) -> None:
        if self.type not in SPECS:
            return
        spec, errors = self.spec, {}
        if "{" in self.effective_base_url or not self.effective_base_url:
            errors["base_url"] = "This provider type needs a base URL."
        for name in spec.needs:
            if not getattr(self, name):
                errors[name] = f"A {self.spec.label} provider needs this."
        if spec.secret_required and not self.secret:
            what = "AWS secret access key" if spec.format == "bedrock" else "API key"
            errors["api_key"] = f"A {spec.label} provider needs its {what}."
        if errors:
            raise ValidationError(errors)


class AIModel(models.Model):
    """A model id clients may ask for, with its price and quota weights."""

    model_id = models.CharField(max_length=200, unique=True, validators=[model_id_validator])
    display_name = models.CharField(max_length=200, blank=True)
    input_price = models.DecimalField(
        "input price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
    )
    output_price = models.DecimalField(
        "output price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
    )
    cached_input_price = models.DecimalField(
        "cached input price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Empty: cached input tokens cost the same as input tokens.",
    )
    input_multiplier = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Weighted tokens = input x this + output x output multiplier (used by quotas).",
    )
    output_multiplier = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
    )
    enabled = models.BooleanField(
        default=True, help_text="Off: the gateway refuses this model (the kill switch)."
    )
    routing_strategy = models.CharField(
        max_length=16,
        blank=True,
        choices=[
            ("weighted", "Weighted (random by route weight)"),
            ("latency", "Lowest latency (EWMA)"),
            ("healthiest", "Healthiest (fewest recent failures)"),
            ("cheapest", "Cheapest route first"),
        ],
        help_text="How the gateway orders this model's routes; empty: the global default "
        "(runtime setting gateway.routing_strategy).",
    )
    affinity_seconds = models.PositiveIntegerField(
        "route affinity (seconds)",
        default=0,
        validators=[MaxValueValidator(86400)],
        help_text="Keep sending a user (or a service key) to the route that last served "
        "them for this long while it stays healthy; 0: off.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_id"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.model_id


class Route(models.Model):
    """One way to serve a model: a provider and the model name it knows."""

    model = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(
        max_length=200,
        blank=True,
        validators=[model_id_validator],
        help_text="The name the provider knows; empty sends the model id unchanged.",
    )
    weight = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1)])
    enabled = models.BooleanField(default=True, help_text="Off: the gateway stops using it.")
    input_price = models.DecimalField(
        "input price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="What this route costs, when it differs from the model's price; empty: the "
        "model's. The cheapest strategy and the cost of requests it serves use it.",
    )
    output_price = models.DecimalField(
        "output price (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Empty: the model's.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-weight", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="route_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.provider}/{self.upstream_model or self.model}"
