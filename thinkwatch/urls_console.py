"""Port 3001: the console (Django admin), the management API and health checks."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from thinkwatch import health
from thinkwatch.api import api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("health/live", health.live),
    path("health/ready", health.ready),
]
