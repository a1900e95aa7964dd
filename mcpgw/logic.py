"""Registering upstream MCP servers: the checks the console and the management API share."""

from collections.abc import Iterable

from django.core.exceptions import ValidationError

from mcpgw import ssrf
from mcpgw.models import AuthMode, McpServer

# The URL fields the SSRF guard checks. The gateway connects to all but the authorization
# endpoint, which only users' browsers visit; it is held to the same rule all the same.
CHECKED_URLS = ("url", "oauth_issuer", "oauth_authorization_endpoint", "oauth_token_endpoint")


def check_server(server: McpServer, urls: Iterable[str] = CHECKED_URLS) -> None:
    """Raise ValidationError naming each field that leaves the server unusable, or each of
    the URL fields in `urls` that points where the gateway does not connect.

    Only URLs being set are checked: an admin can still disable or edit a server whose
    address a narrower allow-list now refuses (the gateway checks again on connect)."""
    errors: dict[str, str] = {}
    if server.auth_mode == AuthMode.STATIC_HEADER and not server.has_static_secret:
        errors["static_secret"] = "A server with a shared secret header needs the secret."  # noqa: S105
    if server.auth_mode == AuthMode.PER_USER_OAUTH and not server.oauth_issuer:
        # With neither endpoint, both are discovered from the server's metadata on connect.
        authorize, token = server.oauth_authorization_endpoint, server.oauth_token_endpoint
        if bool(authorize) != bool(token):
            missing = "oauth_token_endpoint" if authorize else "oauth_authorization_endpoint"
            errors[missing] = (
                "Give both OAuth endpoints, or an issuer, or neither to discover them "
                "from the server."
            )
    for name in urls:
        url = getattr(server, name)
        if url:
            try:
                ssrf.check_url(url)
            except ssrf.Refused as exc:
                errors[name] = f"The gateway will not connect there: {exc}"
    if errors:
        raise ValidationError(errors)


def save_server(server: McpServer, urls: Iterable[str] = CHECKED_URLS) -> McpServer:
    """Validate the server (the model's rules, its auth settings, where the URL fields in
    `urls` point), reporting every failing field at once, and save it."""
    errors: dict[str, list[ValidationError]] = {}
    try:
        server.full_clean()
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    try:
        check_server(server, urls=[name for name in urls if name not in errors])
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)
    server.save()
    return server
