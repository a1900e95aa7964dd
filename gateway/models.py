from django.db import models


class ConfigRevision(models.Model):
    """Bumped by every change the gateway keeps in memory (keys, teams, users, providers,
    models, routes). With REDIS_URL the new revision is announced over pub/sub and every
    gateway process reloads within milliseconds; each also polls this one row (every
    THINKWATCH_CONFIG_POLL_SECONDS without Redis, THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS
    with it) and reloads on a change (gateway/revision.py)."""

    value = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"revision {self.value}"
