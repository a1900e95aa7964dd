from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth.models import User
from django.utils import timezone
from factory.django import DjangoModelFactory

from accounts.logic import issue_key
from accounts.models import ApiKey, Role, RoleAssignment, Team
from audit.models import McpLog
from mcpgw.models import McpCredential, McpServer
from providers.models import AIModel, Provider, Route
from quotas.models import Budget, RateLimitRule

PASSWORD = "Sup3r-secret-pw"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")
    password = factory.django.Password(PASSWORD)


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"team-{n}")


class ProviderFactory(DjangoModelFactory):
    class Meta:
        model = Provider
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"provider-{n}")
    type = "openai"
    base_url = "http://127.0.0.1:9/v1"

    @factory.post_generation
    def api_key(self: Provider, create: bool, extracted: str | None, **kwargs: Any) -> None:
        self.set_secret("sk-upstream-secret" if extracted is None else extracted)
        if create:
            self.save()


class AIModelFactory(DjangoModelFactory):
    class Meta:
        model = AIModel

    model_id = factory.Sequence(lambda n: f"model-{n}")
    input_price = Decimal("0.15")
    output_price = Decimal("0.60")


class RouteFactory(DjangoModelFactory):
    class Meta:
        model = Route

    model = factory.SubFactory(AIModelFactory)
    provider = factory.SubFactory(ProviderFactory)


class RoleFactory(DjangoModelFactory):
    class Meta:
        model = Role

    name = factory.Sequence(lambda n: f"role-{n}")
    slug = factory.Sequence(lambda n: f"role-{n}")


class RoleAssignmentFactory(DjangoModelFactory):
    class Meta:
        model = RoleAssignment

    role = factory.SubFactory(RoleFactory)


class RateLimitRuleFactory(DjangoModelFactory):
    class Meta:
        model = RateLimitRule

    surface = "ai_gateway"
    metric = "requests"
    window = 60
    limit = 10


class BudgetFactory(DjangoModelFactory):
    class Meta:
        model = Budget

    period = "month"
    unit = "usd"
    limit = Decimal("10")


class McpServerFactory(DjangoModelFactory):
    class Meta:
        model = McpServer
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"server-{n}")
    prefix = factory.Sequence(lambda n: f"server{n}")
    url = "http://127.0.0.1:9/mcp"

    @factory.post_generation
    def static_secret(self: McpServer, create: bool, extracted: str | None, **kwargs: Any) -> None:
        self.set_static_secret(extracted or "")
        if create and extracted:
            self.save()

    @factory.post_generation
    def client_secret(self: McpServer, create: bool, extracted: str | None, **kwargs: Any) -> None:
        self.set_client_secret(extracted or "")
        if create and extracted:
            self.save()


class McpCredentialFactory(DjangoModelFactory):
    class Meta:
        model = McpCredential
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    server = factory.SubFactory(McpServerFactory)
    kind = "token"

    @factory.post_generation
    def tokens(self: McpCredential, create: bool, extracted: Any, **kwargs: Any) -> None:
        access, refresh = extracted or ("upstream-access-token", "")
        self.set_tokens(access, refresh)
        if create:
            self.save()


class McpLogFactory(DjangoModelFactory):
    class Meta:
        model = McpLog

    request_id = factory.Sequence(lambda n: f"req-{n}")
    created_at = factory.LazyFunction(timezone.now)
    method = "tools/call"
    server = "github"
    name = "github__create_issue"
    upstream_name = "create_issue"
    status = "ok"


def make_key(owner: User | None, **fields: Any) -> tuple[ApiKey, str]:
    """A key and its plaintext; the same path the console and the API take."""
    fields.setdefault("name", "test key")
    return issue_key(owner=owner, **fields)


def gateway_log_record(**overrides: Any) -> dict[str, Any]:
    """A gateway log record as the gateway submits it (audit/pipeline.py)."""
    return {
        "request_id": "r1",
        "created_at": datetime.now(UTC),
        "user_id": None,
        "team_id": None,
        "api_key_id": None,
        "api_key_prefix": "",
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "gpt-4o-mini",
        "provider_id": None,
        "provider": "",
        "upstream_model": "",
        "streamed": False,
        "input_tokens": 1,
        "output_tokens": 2,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "weighted_tokens": 3,
        "cost_usd": Decimal("0.0000012345"),
        "latency_ms": 1.5,
        "ttft_ms": None,
        "status_code": 200,
        "error_code": "",
        "error_message": "",
        "client_ip": "127.0.0.1",
        "user_agent": "test",
        "disconnected": False,
        "usage_estimated": False,
        **overrides,
    }
