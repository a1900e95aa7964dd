"""Personas and records for the console's dashboard, usage and guide pages.

Alice administers the installation (sees everything). Bob and Carol are developers (each
sees their own records). Dave manages the platform team, whose member Bob is.
"""

import re
from collections.abc import Iterator
from decimal import Decimal

import factory
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from factory.django import DjangoModelFactory

from accounts import access, runtime
from accounts.models import Membership, Team
from audit.models import GatewayLog
from tests.factories import RoleAssignmentFactory, TeamFactory, UserFactory


class GatewayLogFactory(DjangoModelFactory):
    class Meta:
        model = GatewayLog

    request_id = factory.Sequence(lambda n: f"req-{n}")
    created_at = factory.LazyFunction(timezone.now)
    surface = "ai_gateway"
    ingress = "openai_chat"
    model = "gpt-4o"
    provider = "openai"
    status_code = 200
    input_tokens = 10
    output_tokens = 5
    cost_usd = Decimal("0.01")
    latency_ms = 100.0


@pytest.fixture(autouse=True)
def _fresh_runtime_settings() -> Iterator[None]:
    runtime.store.clear()
    yield
    runtime.store.clear()


@pytest.fixture
def carol(db: None) -> User:
    return UserFactory(username="carol@example.com")


@pytest.fixture
def platform(bob: User) -> Team:
    team = TeamFactory(name="platform")
    Membership.objects.create(team=team, user=bob)
    return team


@pytest.fixture
def dave(platform: Team) -> User:
    user = UserFactory(username="dave@example.com")
    RoleAssignmentFactory(user=user, role=access.builtin_role("team-manager"), team=platform)
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_ticket(client: Client) -> str:
    """The ticket the dashboard page hands its script."""
    page = client.get("/admin/dashboard/").content.decode()
    found = re.search(r'data-ticket="([^"]+)"', page)
    assert found is not None, "the dashboard page carries no ticket"
    return found.group(1)
