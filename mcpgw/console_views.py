"""Console pages where a user connects their own account to an upstream MCP server: by
pasting a personal token, or through the server's OAuth authorization. Anyone signed in to
the console may connect, and remove, their own connections; staff or not."""

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.runtime import setting
from mcpgw import credentials, oauth
from mcpgw.models import AuthMode, McpCredential, McpServer
from thinkwatch.headers import form_redirects_anywhere

CALLBACK_PATH = "/mcp/oauth/callback"
_PER_USER = (AuthMode.PER_USER_TOKEN, AuthMode.PER_USER_OAUTH)
_signed_in = login_required(login_url="login")


def callback_url(request: HttpRequest) -> str:
    """The redirect URI to register with an authorization server."""
    public = setting("console.public_url")
    if public:
        return f"{public.rstrip('/')}{CALLBACK_PATH}"
    return request.build_absolute_uri(CALLBACK_PATH)


def per_user_server(server_id: int) -> McpServer:
    return get_object_or_404(McpServer, pk=server_id, auth_mode__in=_PER_USER)


def _user(request: HttpRequest) -> User:
    return request.user  # type: ignore[return-value]  # signed in: checked by the decorator


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), **context}
    return render(request, f"mcpgw/{template}", context, status=status)


@never_cache
@form_redirects_anywhere  # Reconnect's answer is a redirect to the authorization server
@_signed_in
@require_http_methods(["GET", "POST"])
def connect(request: HttpRequest, server_id: int) -> HttpResponse:
    """per_user_token: a form for the token. per_user_oauth: straight to the authorization
    server when not connected yet, else the connection with Reconnect and Remove."""
    server = per_user_server(server_id)
    connection = McpCredential.objects.filter(user=_user(request), server=server).first()
    if server.auth_mode == AuthMode.PER_USER_OAUTH:
        if request.method == "POST" or connection is None:
            return _authorize(request, server)
        return _page(request, "connect.html", server=server, connection=connection)
    error = ""
    if request.method == "POST":
        try:
            credentials.save_token(_user(request), server, request.POST.get("token", ""))
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            messages.success(request, f"Your account is connected to {server.name}.")
            return redirect("mcp-connect", server_id=server.pk)
    return _page(
        request,
        "connect.html",
        status=400 if error else 200,
        server=server,
        connection=connection,
        error=error,
    )


def _authorize(request: HttpRequest, server: McpServer) -> HttpResponse:
    try:
        url = oauth.start(_user(request), server, callback_url(request))
    except oauth.OAuthError as exc:
        return _page(request, "result.html", status=502, server=server, error=exc.description)
    return HttpResponseRedirect(url)


@never_cache
@_signed_in
@require_POST
def disconnect(request: HttpRequest, server_id: int) -> HttpResponse:
    server = per_user_server(server_id)
    removed = credentials.remove_connection(_user(request), server)
    return _page(request, "result.html", server=server, removed=removed)


@never_cache
@_signed_in
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where the authorization server sends the user back, with a code or an error."""
    state, code, error = (request.GET.get(name, "") for name in ("state", "code", "error"))
    if error or not code:
        server = oauth.abandon(_user(request), state)
        description = request.GET.get("error_description", "")
        reason = f"{error}: {description}" if description else error or "no code was given"
        message = f"The authorization server did not grant access ({reason[:300]})."
        return _page(request, "result.html", status=400, server=server, error=message)
    try:
        connection = oauth.complete(_user(request), state, code)
    except oauth.OAuthError as exc:
        return _page(request, "result.html", status=400, server=None, error=exc.description)
    return _page(request, "result.html", server=connection.server, connected=True)


@never_cache
@_signed_in
@require_GET
def connections(request: HttpRequest) -> HttpResponse:
    """Where a user lands after signing in: the servers that act with their own account,
    and whether each is connected."""
    connected = {row.server_id: row for row in McpCredential.objects.filter(user=_user(request))}
    servers = McpServer.objects.filter(enabled=True, auth_mode__in=_PER_USER).order_by("name")
    rows = [(server, connected.get(server.pk)) for server in servers]
    return _page(request, "connections.html", rows=rows)
