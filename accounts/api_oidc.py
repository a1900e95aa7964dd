"""`/api/sso/oidc`: console sign-in through an OpenID Provider (accounts/oidc.py).

The client secret is write-only. Enabling needs a passed test sign-in of the configuration
as it stands, which only the console can run (it needs a browser); changing the issuer,
client, secret, scopes or mappings clears the test.
"""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema

from accounts import oidc
from accounts.models import OidcConfig
from thinkwatch.guard import needs

router = Router(tags=["single sign-on"])


class GroupRole(Schema):
    group: str = Field(..., min_length=1, max_length=500)
    role: str = Field(..., min_length=1, description="A role's slug.")
    team: str | None = Field(None, description="A team's name; null: the role holds everywhere.")


class OidcConfigIn(Schema):
    enabled: bool = Field(False, description="Refused unless this configuration passed a test.")
    issuer: str = Field("", max_length=500, description="Exactly as the provider names itself.")
    client_id: str = Field("", max_length=200)
    client_secret: str | None = Field(
        None, description="Write-only; stored encrypted, never returned. Omit to keep it."
    )
    scopes: str = Field("openid email profile", max_length=500)
    username_claim: str = Field("email", max_length=100)
    email_claim: str = Field("email", max_length=100)
    first_name_claim: str = Field("given_name", max_length=100)
    last_name_claim: str = Field("family_name", max_length=100)
    groups_claim: str = Field("groups", max_length=100)
    group_roles: list[GroupRole] = Field(
        [], description="Roles given and taken away at every SSO sign-in to follow the groups."
    )
    create_users: bool = True


class OidcConfigOut(Schema):
    enabled: bool
    issuer: str
    client_id: str
    has_client_secret: bool
    scopes: str
    username_claim: str
    email_claim: str
    first_name_claim: str
    last_name_claim: str
    groups_claim: str
    group_roles: list[GroupRole]
    create_users: bool
    redirect_uri: str = Field(..., description="Register this with the provider.")
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    discovered_at: datetime | None
    tested: bool = Field(..., description="This configuration passed a test sign-in.")
    tested_at: datetime | None
    updated_at: datetime

    @staticmethod
    def resolve_redirect_uri(config: OidcConfig, context: dict[str, Any]) -> str:
        return oidc.callback_url(context["request"])


@router.get("", response=OidcConfigOut)
@needs("settings:read")
def read(request: HttpRequest) -> OidcConfig:
    """The single sign-on configuration (never the client secret)."""
    return OidcConfig.current()


@router.put("", response=OidcConfigOut)
@needs("settings:update")
def update(request: HttpRequest, payload: OidcConfigIn) -> OidcConfig:
    """Replace the configuration; the issuer's discovery document is fetched when it changes."""
    changes = payload.dict(exclude={"client_secret"})
    return oidc.configure(OidcConfig.current(), changes, payload.client_secret)
