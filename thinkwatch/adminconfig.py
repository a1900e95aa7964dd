"""The admin app with ThinkWatch's console site as `admin.site` (see thinkwatch/console.py).
A module of its own: INSTALLED_APPS imports it before any model exists."""

from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    default_site = "thinkwatch.console.ConsoleSite"
