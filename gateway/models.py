from django.db import models


class ConfigRevision(models.Model):
    """Bumped by every change the gateway keeps in memory (keys, teams, users, providers,
    models, routes). Each gateway process polls this one row and reloads on a change, so an
    edit in the console reaches every instance within THINKWATCH_CONFIG_POLL_SECONDS."""

    value = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"revision {self.value}"
