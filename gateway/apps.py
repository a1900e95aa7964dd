from typing import Any

from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_save


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "AI gateway"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from accounts.models import ApiKey, Membership, Role, RoleAssignment, RuntimeSetting, Team
        from gateway.models import CachePolicy, GuardrailRule
        from mcpgw.models import McpCredential, McpServer
        from providers.models import AIModel, Provider, Route
        from quotas.models import Budget, QuotaReset, RateLimitRule

        watched = (ApiKey, Team, Membership, Role, RoleAssignment, Provider, AIModel, Route)
        mcp = (McpServer, McpCredential)
        # Runtime settings too: gateway processes reload them with the rest.
        policy = (GuardrailRule, CachePolicy)
        config = (*watched, *mcp, RateLimitRule, Budget, QuotaReset, RuntimeSetting, *policy)
        for model in (*config, get_user_model()):
            post_save.connect(
                _changed, sender=model, dispatch_uid=f"revision-save-{model.__name__}"
            )
            post_delete.connect(
                _changed, sender=model, dispatch_uid=f"revision-del-{model.__name__}"
            )
        m2m_changed.connect(_changed, sender=Team.members.through, dispatch_uid="revision-m2m")

        # Wherever gateway records are stored (the gateway itself, or Celery draining the
        # Redis streams), the keys they name get their last use.
        from accounts.logic import persist_key_use
        from audit import pipeline

        pipeline.after_store("gateway", persist_key_use)


def _changed(sender: type, update_fields: frozenset[str] | None = None, **kwargs: Any) -> None:
    from gateway import revision

    if update_fields is not None and set(update_fields) <= _IRRELEVANT:
        return
    revision.bump()


# Saves that change nothing the gateway caches (a login updates last_login).
_IRRELEVANT = {"last_login", "last_used_at", "is_staff"}
