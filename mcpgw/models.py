"""Upstream MCP servers, the per-user credentials the gateway holds for them, and the
state of OAuth connections in progress."""

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from thinkwatch.lib import crypto

STATIC_SECRET_PURPOSE = "mcpgw.McpServer.static_secret"  # noqa: S105 (labels, not secrets)
CLIENT_SECRET_PURPOSE = "mcpgw.McpServer.oauth_client_secret"  # noqa: S105
ACCESS_TOKEN_PURPOSE = "mcpgw.McpCredential.access_token"  # noqa: S105
REFRESH_TOKEN_PURPOSE = "mcpgw.McpCredential.refresh_token"  # noqa: S105
VERIFIER_PURPOSE = "mcpgw.McpOAuthState.code_verifier"

# A client such as Claude Code names a tool `mcp__<its server name>__<tool>` and refuses
# names over 64 characters; the gateway's names are `<prefix>__<tool>`.
TOOL_NAME_LIMIT = 64
PREFIX_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9]|_(?!_))*(?<!_)$")
prefix_validator = RegexValidator(
    PREFIX_PATTERN,
    "Use lowercase letters, digits and single underscores (not at either end), e.g. 'github'.",
)


def validate_server_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Give the server's http:// or https:// MCP endpoint URL.")
    if parts.username or parts.password:
        raise ValidationError("Put credentials in the auth settings, not in the URL.")
    if parts.fragment:
        raise ValidationError("The URL cannot carry a fragment.")


class AuthMode(models.TextChoices):
    NONE = "none", "None"
    STATIC_HEADER = "static_header", "Shared secret header"
    PER_USER_TOKEN = "per_user_token", "Personal token per user"
    PER_USER_OAUTH = "per_user_oauth", "OAuth per user"


class McpServer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(
        max_length=32,
        unique=True,
        validators=[prefix_validator],
        help_text="Tools appear as <prefix>__<tool>. Changing it renames every tool.",
    )
    url = models.CharField(
        "URL",
        max_length=500,
        validators=[validate_server_url],
        help_text="The server's Streamable HTTP endpoint, e.g. https://mcp.example.com/mcp. "
        "Either protocol era; the gateway detects which.",
    )
    description = models.TextField(blank=True)
    auth_mode = models.CharField(max_length=20, choices=AuthMode.choices, default=AuthMode.NONE)
    header_name = models.CharField(
        max_length=100,
        default="Authorization",
        validators=[RegexValidator(r"^[A-Za-z0-9-]+$", "A header name, e.g. Authorization.")],
        help_text="The header that carries the shared secret or the user's token.",
    )
    header_scheme = models.CharField(
        max_length=20,
        default="Bearer",
        blank=True,
        help_text="Written before the secret or token (e.g. Bearer); empty sends it bare.",
    )
    # AES-256-GCM envelopes; never shown or returned.
    static_secret = models.TextField(blank=True, editable=False)
    oauth_issuer = models.CharField(
        "OAuth issuer",
        max_length=500,
        blank=True,
        help_text="The authorization server. Empty: discovered from the server's protected "
        "resource metadata.",
    )
    oauth_authorization_endpoint = models.CharField(max_length=500, blank=True)
    oauth_token_endpoint = models.CharField(max_length=500, blank=True)
    oauth_client_id = models.CharField("OAuth client id", max_length=200, blank=True)
    oauth_client_secret = models.TextField(blank=True, editable=False)
    oauth_scopes = models.CharField("OAuth scopes", max_length=500, blank=True)
    timeout_seconds = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600)],
        help_text="How long one call to this server may take.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prefix"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if "__" in self.prefix:
            raise ValidationError({"prefix": "The prefix cannot contain '__'."})
        budget = TOOL_NAME_LIMIT - len(settings.MCP_CLIENT_PREFIX) - len("__") - 1
        if len(self.prefix) > budget:
            raise ValidationError(
                {"prefix": f"At most {budget} characters, so tool names fit 64 characters."}
            )

    @property
    def has_static_secret(self) -> bool:
        return bool(self.static_secret)

    def set_static_secret(self, plaintext: str) -> None:
        self.static_secret = crypto.encrypt(plaintext, STATIC_SECRET_PURPOSE) if plaintext else ""

    def reveal_static_secret(self) -> str:
        if not self.static_secret:
            return ""
        return crypto.decrypt(self.static_secret, STATIC_SECRET_PURPOSE)

    @property
    def has_client_secret(self) -> bool:
        return bool(self.oauth_client_secret)

    def set_client_secret(self, plaintext: str) -> None:
        self.oauth_client_secret = (
            crypto.encrypt(plaintext, CLIENT_SECRET_PURPOSE) if plaintext else ""
        )

    def reveal_client_secret(self) -> str:
        if not self.oauth_client_secret:
            return ""
        return crypto.decrypt(self.oauth_client_secret, CLIENT_SECRET_PURPOSE)

    @property
    def per_user(self) -> bool:
        return self.auth_mode in (AuthMode.PER_USER_TOKEN, AuthMode.PER_USER_OAUTH)


class CredentialKind(models.TextChoices):
    TOKEN = "token", "Personal token"
    OAUTH = "oauth", "OAuth"


class McpCredential(models.Model):
    """What the gateway sends upstream on one user's behalf. Tokens are encrypted at rest."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_credentials"
    )
    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="credentials")
    kind = models.CharField(max_length=10, choices=CredentialKind.choices)
    access_token = models.TextField(editable=False)
    refresh_token = models.TextField(blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.CharField(max_length=500, blank=True)
    # Where an OAuth refresh token is redeemed, and how the client authenticates there:
    # fixed when the user connected, so a refresh token only ever goes back to its issuer.
    token_endpoint = models.CharField(max_length=500, blank=True)
    token_auth_method = models.CharField(max_length=30, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "server"], name="mcp_credential_unique")
        ]
        verbose_name = "MCP credential"

    def __str__(self) -> str:
        return f"{self.user} → {self.server}"

    @classmethod
    def store(
        cls, user: Any, server: McpServer, kind: str, access: str, refresh: str = "", **fields: Any
    ) -> "McpCredential":
        """Create or replace the user's credential for the server, tokens sealed; fields
        not given (expiry, scopes, token endpoint) are cleared."""
        sealed = cls()
        sealed.set_tokens(access, refresh)
        defaults = {
            "kind": kind,
            "access_token": sealed.access_token,
            "refresh_token": sealed.refresh_token,
            "expires_at": None,
            "scopes": "",
            "token_endpoint": "",
            "token_auth_method": "",
            **fields,
        }
        credential, _ = cls.objects.update_or_create(user=user, server=server, defaults=defaults)
        return credential

    def set_tokens(self, access: str, refresh: str = "") -> None:
        self.access_token = crypto.encrypt(access, ACCESS_TOKEN_PURPOSE)
        self.refresh_token = crypto.encrypt(refresh, REFRESH_TOKEN_PURPOSE) if refresh else ""

    def reveal_access_token(self) -> str:
        return crypto.decrypt(self.access_token, ACCESS_TOKEN_PURPOSE)

    def reveal_refresh_token(self) -> str:
        if not self.refresh_token:
            return ""
        return crypto.decrypt(self.refresh_token, REFRESH_TOKEN_PURPOSE)


class McpOAuthState(models.Model):
    """An authorization-code flow a user started from the console, until its callback."""

    state = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    server = models.ForeignKey(McpServer, on_delete=models.CASCADE)
    code_verifier = models.TextField(editable=False)
    redirect_uri = models.CharField(max_length=500)
    token_endpoint = models.CharField(max_length=500)
    token_auth_method = models.CharField(max_length=30, blank=True)
    resource = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} → {self.server} (started {self.created_at:%Y-%m-%d %H:%M})"

    def set_verifier(self, verifier: str) -> None:
        self.code_verifier = crypto.encrypt(verifier, VERIFIER_PURPOSE)

    def reveal_verifier(self) -> str:
        return crypto.decrypt(self.code_verifier, VERIFIER_PURPOSE)
