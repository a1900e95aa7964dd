"""Port 3001: the console (Django admin), the management API and health checks."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from mcpgw import console_views as mcp
from thinkwatch import health
from thinkwatch.api import api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("mcp/connect/<int:server_id>/", mcp.connect, name="mcp-connect"),
    path("mcp/connect/<int:server_id>/remove", mcp.disconnect, name="mcp-disconnect"),
    path("mcp/oauth/callback", mcp.oauth_callback, name="mcp-oauth-callback"),
    path("health/live", health.live),
    path("health/ready", health.ready),
]
