"""Team-scoped limits rights: the same subjects in the console and the API."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Membership, Role, RoleAssignment, Team
from quotas.models import Budget
from tests.factories import UserFactory, make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> dict[str, object]:
    team_a, team_b = Team.objects.create(name="A"), Team.objects.create(name="B")
    manager = UserFactory(username="lead@example.com")
    manager.role_assignments.all().delete()
    limits = Role.objects.create(
        name="Limits", slug="limits", permissions=["limits:*", "teams:read"]
    )
    RoleAssignment.objects.create(user=manager, role=limits, team=team_a)
    Membership.objects.create(team=team_a, user=manager)
    key_a, _ = make_key(manager)
    key_a.team = team_a
    key_a.save()
    budgets = {
        "team_a": Budget.objects.create(subject_kind="team", subject_id=str(team_a.pk), limit=10),
        "key_a": Budget.objects.create(subject_kind="api_key", subject_id=str(key_a.pk), limit=5),
        "team_b": Budget.objects.create(subject_kind="team", subject_id=str(team_b.pk), limit=7),
        "global": Budget.objects.create(subject_kind="model", subject_id="gpt-4o", limit=9),
    }
    return {"manager": manager, "team_a": team_a, "team_b": team_b, **budgets}


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_console_and_the_api_list_the_same_limits(world: dict) -> None:
    client = _client(world["manager"])

    page = client.get("/admin/quotas/budget/")
    listed = {b["id"] for b in client.get("/api/limits/budgets").json()}

    assert page.status_code == 200
    assert listed == {world["team_a"].pk, world["key_a"].pk}
    for name in ("team_a", "key_a", "team_b", "global"):
        link = f"/admin/quotas/budget/{world[name].pk}/change/"
        assert (link in page.content.decode()) == (name in ("team_a", "key_a")), name


def test_a_team_scoped_manager_changes_their_teams_limits_only(world: dict) -> None:
    client = _client(world["manager"])
    own, other = world["team_a"], world["team_b"]

    assert client.get(f"/admin/quotas/budget/{own.pk}/change/").status_code == 200
    assert client.get(f"/admin/quotas/budget/{other.pk}/change/").status_code in (302, 403, 404)
    form = {
        "subject_kind": "team",
        "period": "day",  # team A already has a monthly budget
        "unit": "usd",
        "limit": "20",
        "enabled": "on",
        "reason": "cap",
    }
    allowed = client.post("/admin/quotas/budget/add/", {**form, "subject_id": own.subject_id})
    refused = client.post(
        "/admin/quotas/budget/add/", {**form, "subject_id": str(world["team_b"].subject_id)}
    )

    assert allowed.status_code == 302, allowed.content
    assert refused.status_code == 200
    assert "limits:update" in refused.content.decode()
    assert Budget.objects.filter(subject_id=own.subject_id, limit=Decimal("20")).exists()
    assert not Budget.objects.filter(subject_id=other.subject_id, limit=Decimal("20")).exists()
