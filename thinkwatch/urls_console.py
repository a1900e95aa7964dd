"""Port 3001: the console (Django admin), the management API and health checks."""

from django.contrib import admin
from django.contrib.auth import views as auth
from django.urls import path

from accounts import console_settings, setup_wizard
from accounts.lockout import LockoutAuthenticationForm
from accounts.oidc_views import CallbackView, SignInView
from audit import body_views, log_views
from audit import console_views as audit_pages
from gateway import guide
from mcpgw import console_views as mcp
from thinkwatch import health
from thinkwatch.api import api

urlpatterns = [
    path("", setup_wizard.home),
    path("setup", setup_wizard.wizard, name="setup"),
    path(
        "admin/settings/",
        admin.site.admin_view(console_settings.settings_page),
        name="console-settings",
    ),
    path(
        "admin/dashboard/", admin.site.admin_view(audit_pages.dashboard), name="console-dashboard"
    ),
    path(
        "admin/dashboard/ticket",
        admin.site.admin_view(audit_pages.dashboard_ticket),
        name="console-dashboard-ticket",
    ),
    path("admin/usage/", admin.site.admin_view(audit_pages.usage_page), name="console-usage"),
    path("admin/guide/", admin.site.admin_view(guide.guide), name="console-guide"),
    path("admin/logs/", admin.site.admin_view(log_views.logs), name="console-logs"),
    path(
        "admin/logs/<str:kind>/<int:pk>/",
        admin.site.admin_view(log_views.log_record),
        name="console-log-record",
    ),
    path(
        "admin/logs/<str:kind>/<int:pk>/body/",
        admin.site.admin_view(body_views.record_body),
        name="console-log-body",
    ),
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
    path("oidc/authenticate/", SignInView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
    path("mcp/connections/", mcp.connections, name="mcp-connections"),
    path("mcp/connect/<int:server_id>/", mcp.connect, name="mcp-connect"),
    path("mcp/connect/<int:server_id>/remove", mcp.disconnect, name="mcp-disconnect"),
    path("mcp/oauth/callback", mcp.oauth_callback, name="mcp-oauth-callback"),
    path("health/live", health.live),
    path("health/ready", health.ready),
]
