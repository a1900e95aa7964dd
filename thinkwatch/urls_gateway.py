"""Port 3000: the AI gateway. No console route is reachable here."""

from django.urls import path

from gateway import views
from mcpgw import views as mcp
from thinkwatch import health, metrics

urlpatterns = [
    path("v1/chat/completions", views.chat_completions),
    path("v1/messages", views.messages),
    path("v1/messages/count_tokens", views.count_tokens),
    path("v1/responses", views.responses),
    path("v1/embeddings", views.embeddings),
    path("v1/models", views.list_models),
    path("mcp", mcp.endpoint),
    path("health/live", health.live),
    path("health/ready", health.ready),
    path("metrics", metrics.endpoint),
]

handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
