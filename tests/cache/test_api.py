"""`/api/cache`: policies, validation, who may, and purging (an admin audit event)."""

from typing import Any, cast

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Role, Team
from audit.models import AuditEvent
from gateway.models import CachePolicy
from tests.cache.conftest import ask, asked_and_stored, policy
from tests.conftest import LiveServer
from tests.factories import RoleAssignmentFactory, TeamFactory, UserFactory, make_key

JSON = "application/json"


def api_for(user: User) -> Client:
    _, key = make_key(user, name="console", surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def api(alice: User) -> Client:
    return api_for(alice)


@pytest.fixture
def erin(db: None) -> User:
    """Erin is an Admin: she reads settings but may not change them."""
    user = cast(User, UserFactory(username="erin@example.com"))
    RoleAssignmentFactory(user=user, role=Role.objects.get(slug="admin"), team=None)
    return user


@pytest.mark.django_db
def test_it_creates_changes_and_deletes_a_policy(api: Client, red: Team) -> None:
    created = api.post(
        "/api/cache/policies",
        {"name": "red answers", "team_id": red.pk, "ttl_seconds": 600, "per_user": True},
        content_type=JSON,
    )
    policy_id = created.json()["id"]

    listed = api.get("/api/cache/policies").json()
    changed = api.patch(
        f"/api/cache/policies/{policy_id}",
        {"model_pattern": "gpt-4o*", "count_rate_limits": False},
        content_type=JSON,
    )
    gone = api.delete(f"/api/cache/policies/{policy_id}")

    assert created.status_code == 201
    assert created.json() | {"created_at": None, "updated_at": None} == {
        "id": policy_id,
        "name": "red answers",
        "enabled": True,
        "team_id": red.pk,
        "api_key_id": None,
        "model_pattern": "",
        "ttl_seconds": 600,
        "per_user": True,
        "count_rate_limits": True,
        "created_at": None,
        "updated_at": None,
    }
    assert [p["name"] for p in listed] == ["red answers"]
    assert (changed.json()["model_pattern"], changed.json()["count_rate_limits"]) == (
        "gpt-4o*",
        False,
    )
    assert gone.status_code == 204
    assert not CachePolicy.objects.exists()


@pytest.mark.django_db
def test_a_policy_change_is_in_the_admin_audit_log(api: Client) -> None:
    api.post("/api/cache/policies", {"name": "everyone"}, content_type=JSON)

    assert AuditEvent.objects.filter(object_type="gateway.cachepolicy", action="create").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "ttl_seconds": 0}, "ttl_seconds"),
        ({"name": "x", "ttl_seconds": 31 * 24 * 3600}, "ttl_seconds"),
        ({"name": "x", "team_id": 987654}, "team"),
        ({"name": "x", "api_key_id": 987654}, "api_key"),
        ({"name": "x", "model_pattern": "m" * 201}, "model_pattern"),
    ],
)
def test_it_refuses_an_invalid_policy_naming_the_field(
    api: Client, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/cache/policies", body, content_type=JSON)

    assert response.status_code == 422
    assert field in response.content.decode()


@pytest.mark.django_db
def test_it_refuses_a_key_of_another_team(api: Client, bob: User, red: Team) -> None:
    key, _ = make_key(bob, team=red, name="red key")
    other = cast(Team, TeamFactory(name="green"))

    response = api.post(
        "/api/cache/policies",
        {"name": "never", "team_id": other.pk, "api_key_id": key.pk},
        content_type=JSON,
    )

    assert response.status_code == 422
    assert "another team" in response.content.decode()


@pytest.mark.django_db
def test_it_refuses_a_second_policy_of_the_same_name(api: Client) -> None:
    policy(name="everyone")

    response = api.post("/api/cache/policies", {"name": "everyone"}, content_type=JSON)

    assert response.status_code == 422


@pytest.mark.django_db
def test_an_admin_may_read_the_policies_but_neither_change_them_nor_purge(erin: User) -> None:
    admin = api_for(erin)

    listed = admin.get("/api/cache/policies")
    created = admin.post("/api/cache/policies", {"name": "x"}, content_type=JSON)
    purged = admin.delete("/api/cache")

    assert listed.status_code == 200
    assert (created.status_code, purged.status_code) == (403, 403)
    assert not AuditEvent.objects.filter(action="cache.purge").exists()


@pytest.mark.django_db
def test_a_developer_may_not_read_the_policies(bob: User) -> None:
    _, key = make_key(bob, surfaces=["console"])

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/cache/policies")

    assert response.status_code == 403


@pytest.mark.django_db
def test_a_purge_is_an_admin_audit_event_naming_who(api: Client, alice: User) -> None:
    response = api.delete("/api/cache")

    [event] = AuditEvent.objects.filter(action="cache.purge")
    assert response.status_code == 200
    assert (event.actor_id, event.via, event.object_type) == (alice.pk, "api", "gateway.cache")
    assert event.detail == response.json()


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_purge_deletes_the_entries_kept_in_redis(
    gateway: LiveServer, priced: None, api: Client, bob_red_key: str
) -> None:
    policy()
    asked_and_stored(gateway, bob_red_key)
    asked_and_stored(gateway, bob_red_key, temperature=0)

    purged = api.delete("/api/cache")

    assert purged.json() == {"store": "redis", "entries": 2}


def test_after_a_purge_a_repeat_goes_to_the_provider(
    gateway: LiveServer, priced: None, api: Client, bob_red_key: str
) -> None:
    policy()
    asked_and_stored(gateway, bob_red_key)
    before = ask(gateway, bob_red_key)

    purged = api.delete("/api/cache")
    after = ask(gateway, bob_red_key)

    assert before.headers["x-cache"] == "hit"
    assert purged.status_code == 200
    assert after.headers["x-cache"] == "miss"
