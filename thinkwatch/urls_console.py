"""Port 3001: the console (Django admin), the management API and health checks."""

from django.contrib import admin
from django.contrib.auth import views as auth
from django.urls import path
from django.views.generic import RedirectView

from accounts.lockout import LockoutAuthenticationForm
from mcpgw import console_views as mcp
from thinkwatch import health
from thinkwatch.api import api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # Sign-in for everyone (the admin's own login admits staff only): users who are not
    # staff sign in here to connect their MCP accounts.
    path(
        "accounts/login/",
        auth.LoginView.as_view(
            authentication_form=LockoutAuthenticationForm,
            next_page="mcp-connections",
            extra_context={"site_header": "ThinkWatch", "site_title": "ThinkWatch"},
        ),
        name="login",
    ),
    path("accounts/logout/", auth.LogoutView.as_view(next_page="login"), name="logout"),
    path("mcp/connections/", mcp.connections, name="mcp-connections"),
    path("mcp/connect/<int:server_id>/", mcp.connect, name="mcp-connect"),
    path("mcp/connect/<int:server_id>/remove", mcp.disconnect, name="mcp-disconnect"),
    path("mcp/oauth/callback", mcp.oauth_callback, name="mcp-oauth-callback"),
    path("health/live", health.live),
    path("health/ready", health.ready),
]
