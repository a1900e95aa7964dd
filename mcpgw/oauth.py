"""The OAuth authorization-code flow with PKCE (S256) that connects a user's account to an
upstream MCP server, and the refresh the gateway does before a token expires.

Endpoints come from the server's configuration or are discovered: RFC 9728 protected
resource metadata on the MCP server's origin names the authorization server, whose RFC 8414
metadata (or OpenID Connect discovery) names the endpoints. Every URL the gateway fetches
is checked against SSRF first, and redirects are not followed. The console's steps (start,
complete) are sync and use httpx; the refresh runs on a gateway's event loop with its
aiohttp session. Tokens never appear in an exception, a log line or a repr.
"""

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit, urlunsplit

import aiohttp
import httpx
import orjson
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from mcpgw.models import AuthMode, CredentialKind, McpCredential, McpOAuthState, McpServer
from mcpgw.ssrf import Refused, acheck_url, check_url
from thinkwatch.lib import http

STATE_TTL = timedelta(minutes=10)
HTTP_TIMEOUT = 15.0  # seconds, for any one call to an authorization server
MAX_BODY_BYTES = 256 * 1024
PRM_PATH = "/.well-known/oauth-protected-resource"
BASIC, POST, PUBLIC = "client_secret_basic", "client_secret_post", "none"
# What may be sent in an HTTP header: visible ASCII, no spaces or line breaks.
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]{1,8192}")
_HEADERS = {"Accept": "application/json", "User-Agent": http.USER_AGENT}


class OAuthError(Exception):
    """An authorization server refused, or could not be used. `error` is an OAuth error code
    (RFC 6749 §5.2) or one of ours (unsafe_url, unreachable, discovery_failed, ...); the
    message says what happened in words a user can act on, and never holds a token."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str
    auth_methods: tuple[str, ...] = ()  # token_endpoint_auth_methods_supported, if known


@dataclass(frozen=True, slots=True)
class Tokens:
    access: str = field(repr=False)
    refresh: str = field(repr=False)
    expires_in: int | None
    scope: str

    def expires_at(self, now: datetime) -> datetime | None:
        return None if self.expires_in is None else now + timedelta(seconds=self.expires_in)


def resource_of(url: str) -> str:
    """The server's RFC 8707 resource indicator: its URL with a lower-case scheme and host,
    no fragment and no trailing slash."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


# --- discovery -----------------------------------------------------------------------


def endpoints_for(server: McpServer) -> Endpoints:
    """The server's authorization and token endpoints: as configured, else discovered."""
    authorization, token = server.oauth_authorization_endpoint, server.oauth_token_endpoint
    if authorization and token:
        return Endpoints(_http_url(authorization), _http_url(token))
    issuer = server.oauth_issuer or _issuer_of(server)
    metadata = _server_metadata(issuer)
    methods = metadata.get("token_endpoint_auth_methods_supported")
    return Endpoints(
        _http_url(authorization or metadata.get("authorization_endpoint")),
        _http_url(token or metadata.get("token_endpoint")),
        tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else (),
    )


def _prm_urls(url: str) -> list[str]:
    """RFC 9728 §3.1: the well-known path inserted before the server URL's path, then at the
    origin's root."""
    parts = urlsplit(url)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    return [f"{origin}{PRM_PATH}{path}", f"{origin}{PRM_PATH}"] if path else [origin + PRM_PATH]


def _issuer_of(server: McpServer) -> str:
    for url in _prm_urls(server.url):
        document = _get_json(url)
        if document is None:
            continue
        issuers = document.get("authorization_servers")
        if isinstance(issuers, list) and issuers and isinstance(issuers[0], str):
            return str(issuers[0])
        raise OAuthError("discovery_failed", f"{url} names no authorization server.")
    raise OAuthError(
        "discovery_failed",
        f"'{server.name}' publishes no OAuth protected resource metadata; an administrator "
        "must set its OAuth issuer or endpoints.",
    )


def _metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 §3.1, then OpenID Connect discovery (path inserted, then appended)."""
    parts = urlsplit(issuer)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    if not path:
        return [
            f"{origin}/.well-known/oauth-authorization-server",
            f"{origin}/.well-known/openid-configuration",
        ]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


def _server_metadata(issuer: str) -> dict[str, Any]:
    for url in _metadata_urls(_http_url(issuer)):
        document = _get_json(url)
        if document is None:
            continue
        if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise OAuthError("discovery_failed", f"{url} describes another issuer than {issuer}.")
        methods = document.get("code_challenge_methods_supported")
        if not isinstance(methods, list) or "S256" not in methods:
            raise OAuthError(
                "discovery_failed",
                f"The authorization server {issuer} does not announce PKCE with S256, which "
                "MCP requires.",
            )
        return document
    raise OAuthError("discovery_failed", f"No authorization server metadata found for {issuer}.")


def _http_url(value: object) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise OAuthError("discovery_failed", "An OAuth endpoint is missing or not an http(s) URL.")
    return value


# --- the flow ------------------------------------------------------------------------


def start(user: User, server: McpServer, redirect_uri: str) -> str:
    """Begin connecting `user` to `server`: the URL of the authorization server's page the
    user's browser goes to next. The state it carries is single-use, belongs to this user and
    lapses after ten minutes."""
    if server.auth_mode != AuthMode.PER_USER_OAUTH:
        raise OAuthError("invalid_request", f"'{server.name}' does not connect with OAuth.")
    if not server.oauth_client_id:
        raise OAuthError(
            "invalid_client",
            f"'{server.name}' has no OAuth client id yet; an administrator must register the "
            "gateway with its authorization server.",
        )
    endpoints = endpoints_for(server)
    verifier = secrets.token_urlsafe(64)
    flow = McpOAuthState(
        state=secrets.token_urlsafe(32),
        user=user,
        server=server,
        redirect_uri=redirect_uri,
        token_endpoint=endpoints.token,
        token_auth_method=_auth_method(server, endpoints.auth_methods),
        resource=resource_of(server.url),
    )
    flow.set_verifier(verifier)
    flow.save()
    McpOAuthState.objects.filter(created_at__lt=timezone.now() - STATE_TTL).delete()
    query = {
        "response_type": "code",
        "client_id": server.oauth_client_id,
        "redirect_uri": redirect_uri,
        "state": flow.state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        "resource": flow.resource,
    }
    scope = " ".join(server.oauth_scopes.replace(",", " ").split())
    if scope:
        query["scope"] = scope
    separator = "&" if urlsplit(endpoints.authorization).query else "?"
    return f"{endpoints.authorization}{separator}{urlencode(query)}"


def complete(user: User, state: str, code: str) -> McpCredential:
    """Finish a flow `user` started: redeem the code and store the tokens, encrypted."""
    flow = McpOAuthState.objects.select_related("server").filter(state=state, user=user).first()
    # Deleted before anything else, so a state works once even when two callbacks race.
    if flow is None or not McpOAuthState.objects.filter(pk=flow.pk).delete()[0]:
        raise OAuthError(
            "invalid_state",
            "This connection attempt is unknown, already finished or someone else's; start "
            "it again from the console.",
        )
    if flow.created_at < timezone.now() - STATE_TTL:
        raise OAuthError(
            "expired_state",
            "This connection attempt took longer than ten minutes; start it again.",
        )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.reveal_verifier(),
    }
    if flow.resource:
        form["resource"] = flow.resource
    tokens = _redeem(flow.server, flow.token_endpoint, flow.token_auth_method, form)
    return _save(user, flow.server, tokens, flow.token_endpoint, flow.token_auth_method)


def abandon(user: User, state: str) -> McpServer | None:
    """The authorization server sent the user back with an error: forget the flow."""
    flow = McpOAuthState.objects.select_related("server").filter(state=state, user=user).first()
    if flow is None:
        return None
    flow.delete()
    return flow.server


async def refresh(
    server: McpServer, token_endpoint: str, auth_method: str, refresh_token: str
) -> Tokens:
    """New tokens for a refresh token, from the token endpoint that issued it."""
    try:
        await acheck_url(token_endpoint)
    except Refused as exc:
        raise OAuthError("unsafe_url", f"Refused to contact {token_endpoint}: {exc}") from None
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "resource": resource_of(server.url),
    }
    headers, form = _client_auth(server, auth_method, form)
    try:
        async with http.session().post(
            token_endpoint,
            data=form,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
        ) as response:
            status, body = response.status, await _aread(response)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OAuthError("unreachable", _unreachable(token_endpoint, exc)) from None
    return parse_token_response(status, body)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _auth_method(server: McpServer, supported: tuple[str, ...]) -> str:
    """Basic, which every authorization server must accept (RFC 6749 §2.3.1), unless the
    server announces only client_secret_post."""
    if not server.has_client_secret:
        return PUBLIC
    return POST if POST in supported and BASIC not in supported else BASIC


def _client_auth(
    server: McpServer, method: str, form: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    headers = dict(_HEADERS)
    secret = server.reveal_client_secret() if method in (BASIC, POST) else ""
    if secret and method == BASIC:
        pair = f"{quote_plus(server.oauth_client_id)}:{quote_plus(secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return headers, form
    if secret:
        return headers, {**form, "client_id": server.oauth_client_id, "client_secret": secret}
    return headers, {**form, "client_id": server.oauth_client_id}


def _redeem(server: McpServer, endpoint: str, method: str, form: dict[str, str]) -> Tokens:
    _check(endpoint)
    headers, form = _client_auth(server, method, form)
    try:
        with (
            _client() as client,
            client.stream("POST", endpoint, data=form, headers=headers) as response,
        ):
            body = _limited(response)
    except httpx.HTTPError as exc:
        raise OAuthError("unreachable", _unreachable(endpoint, exc)) from None
    return parse_token_response(response.status_code, body)


def _save(
    user: User, server: McpServer, tokens: Tokens, token_endpoint: str, method: str
) -> McpCredential:
    return McpCredential.store(
        user,
        server,
        CredentialKind.OAUTH,
        tokens.access,
        tokens.refresh,
        expires_at=tokens.expires_at(timezone.now()),
        scopes=tokens.scope[:500],
        token_endpoint=token_endpoint,
        token_auth_method=method,
    )


# --- wire ----------------------------------------------------------------------------


def parse_token_response(status: int, body: bytes) -> Tokens:
    """A token endpoint's answer (RFC 6749 §5.1, §5.2) as Tokens, or OAuthError."""
    document = _json_object(body)
    if document is not None and isinstance(document.get("error"), str):
        error = _text(document["error"], 100)
        description = _text(document.get("error_description"), 300)
        raise OAuthError(error, description or f"The authorization server refused ({error}).")
    if status != 200 or document is None:
        raise OAuthError(
            "invalid_response", f"The token endpoint answered HTTP {status} without tokens."
        )
    access = document.get("access_token")
    if not isinstance(access, str) or not TOKEN_PATTERN.fullmatch(access):
        raise OAuthError("invalid_response", "The token endpoint sent no usable access token.")
    if str(document.get("token_type", "Bearer")).lower() != "bearer":
        raise OAuthError(
            "invalid_response", "The token endpoint sent a token type other than Bearer."
        )
    refresh = document.get("refresh_token")
    if not isinstance(refresh, str) or not TOKEN_PATTERN.fullmatch(refresh):
        refresh = ""
    return Tokens(
        access=access,
        refresh=refresh,
        expires_in=_seconds(document.get("expires_in")),
        scope=_text(document.get("scope"), 500),
    )


def _seconds(value: object) -> int | None:
    try:
        seconds = int(value)  # type: ignore[call-overload]  # some servers send a string
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:limit]


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _client() -> httpx.Client:
    return httpx.Client(
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
        trust_env=settings.UPSTREAM_PROXY_FROM_ENV,
        headers=_HEADERS,
    )


def _check(url: str) -> None:
    try:
        check_url(url)
    except Refused as exc:
        raise OAuthError("unsafe_url", f"Refused to contact {url}: {exc}") from None


def _get_json(url: str) -> dict[str, Any] | None:
    """The JSON object at `url`, or None if there is none (a 3xx or 4xx answer)."""
    _check(url)
    try:
        with _client() as client, client.stream("GET", url) as response:
            body = _limited(response)
    except httpx.HTTPError as exc:
        raise OAuthError("unreachable", _unreachable(url, exc)) from None
    if 300 <= response.status_code < 500:
        return None
    if response.status_code != 200:
        raise OAuthError("unreachable", f"{url} answered HTTP {response.status_code}.")
    document = _json_object(body)
    if document is None:
        raise OAuthError("discovery_failed", f"{url} answered without a JSON object.")
    return document


def _limited(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OAuthError("invalid_response", f"{response.url} answered too much.")
    return body


async def _aread(response: aiohttp.ClientResponse) -> bytes:
    body = b""
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OAuthError("invalid_response", f"{response.url} answered too much.")
    return body


def _unreachable(url: str, exc: BaseException) -> str:
    return f"Could not reach {url} ({type(exc).__name__})."
