"""Team scopes and denials, through the management API and the console.

Tess manages team A (the Team Manager role assigned in A, nothing anywhere else): she works
on A's keys, members and team, and team B's don't exist for her. Denials: a denial held
beside Admin takes that one right away, a team role's denial only within its team."""

from collections.abc import Iterator
from typing import Any

import pytest

from accounts.models import ApiKey, Membership
from providers.models import Provider
from quotas.models import RateLimitRule
from tests.accounts.access_matrix import (
    Persona,
    Stage,
    World,
    custom_role,
    person,
    session,
    staged,
)
from tests.factories import RateLimitRuleFactory, make_key

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture(scope="module")
def stage(django_db_setup: None, django_db_blocker: Any) -> Iterator[Stage]:
    with staged(django_db_blocker) as built:
        yield built


@pytest.fixture
def world(stage: Stage, db: None) -> World:
    return stage.world


@pytest.fixture
def tess(world: World) -> Persona:
    """Tess manages team A and holds no role anywhere else."""
    return session(person("tess", ("team-manager", world.team_a)))


def listed(response: Any) -> list[int]:
    return [item["id"] for item in response.json()]


# --- Keys ---------------------------------------------------------------------------------

KEY_OPERATIONS = {
    "read": lambda c, k: c.get(f"/api/keys/{k.pk}"),
    "update": lambda c, k: c.patch(f"/api/keys/{k.pk}", {"name": "renamed"}, content_type=JSON),
    "rotate": lambda c, k: c.post(f"/api/keys/{k.pk}/rotate", {}, content_type=JSON),
    "revoke": lambda c, k: c.delete(f"/api/keys/{k.pk}?reason=left"),
}


def test_a_team_manager_lists_the_keys_of_their_team_only(world: World, tess: Persona) -> None:
    keys = listed(tess.get("/api/keys"))

    assert world.dave_key.pk in keys
    assert world.erin_key.pk not in keys


@pytest.mark.parametrize(
    ("operation", "status"), [("read", 200), ("update", 200), ("rotate", 201), ("revoke", 200)]
)
def test_a_team_manager_manages_their_teams_keys(
    world: World, tess: Persona, operation: str, status: int
) -> None:
    assert KEY_OPERATIONS[operation](tess, world.dave_key).status_code == status


@pytest.mark.parametrize("operation", list(KEY_OPERATIONS))
def test_another_teams_keys_do_not_exist_for_a_team_manager(
    world: World, tess: Persona, operation: str
) -> None:
    before = ApiKey.objects.values_list("pk", "name", "revoked_at").get(pk=world.erin_key.pk)

    response = KEY_OPERATIONS[operation](tess, world.erin_key)

    assert response.status_code == 404
    assert (
        ApiKey.objects.values_list("pk", "name", "revoked_at").get(pk=world.erin_key.pk) == before
    )
    assert not ApiKey.objects.filter(rotated_from=world.erin_key).exists()


def test_a_team_manager_issues_a_key_to_a_member_of_their_team(world: World, tess: Persona) -> None:
    response = tess.post(
        "/api/keys",
        {"name": "ci", "owner_id": world.dave.pk, "team_id": world.team_a.pk},
        content_type=JSON,
    )

    assert response.status_code == 201
    assert (response.json()["owner_id"], response.json()["team_id"]) == (
        world.dave.pk,
        world.team_a.pk,
    )


@pytest.mark.parametrize("owner", ["erin", "tess"])
def test_a_team_manager_cannot_issue_keys_in_another_team(
    world: World, tess: Persona, owner: str
) -> None:
    owner_id = {"erin": world.erin.pk, "tess": tess.user.pk}[owner]

    response = tess.post(
        "/api/keys",
        {"name": "sneaky", "owner_id": owner_id, "team_id": world.team_b.pk},
        content_type=JSON,
    )

    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_a_team_manager_cannot_move_a_key_into_another_team(world: World, tess: Persona) -> None:
    response = tess.patch(
        f"/api/keys/{world.dave_key.pk}", {"team_id": world.team_b.pk}, content_type=JSON
    )

    assert response.status_code == 403
    assert world.reload(world.dave_key).team_id == world.team_a.pk


def test_a_developer_cannot_open_a_key_in_a_team_they_are_not_in(world: World) -> None:
    """A key in team B spends B's budget and shows in B's records: only B's members hold one
    there, unless someone who may add members to B issues it."""
    developer = session(person("dev", ("developer", None)))

    response = developer.post(
        "/api/keys", {"name": "in b", "team_id": world.team_b.pk}, content_type=JSON
    )

    assert response.status_code == 422
    assert not ApiKey.objects.filter(name="in b").exists()


def test_a_developer_cannot_open_a_key_in_a_team_they_are_not_in_the_console(
    world: World,
) -> None:
    developer = person("dev", ("developer", None))
    form = world.form(
        "/admin/accounts/apikey/add/",
        name="in b",
        owner=developer.pk,
        team=world.team_b.pk,
        allowed_models="*",
    )

    response = session(developer).post("/admin/accounts/apikey/add/", form)

    assert response.status_code == 200
    assert "is not a member of" in response.content.decode()
    assert not ApiKey.objects.filter(name="in b").exists()


def test_a_developer_opens_a_key_in_their_own_team(world: World) -> None:
    developer = person("dev", ("developer", None))
    world.team_b.members.add(developer)

    response = session(developer).post(
        "/api/keys", {"name": "in b", "team_id": world.team_b.pk}, content_type=JSON
    )

    assert response.status_code == 201


def test_a_team_managers_console_lists_their_teams_keys_only(world: World, tess: Persona) -> None:
    page = tess.get("/admin/accounts/apikey/").content.decode()

    assert f"/admin/accounts/apikey/{world.dave_key.pk}/change/" in page
    assert f"/admin/accounts/apikey/{world.erin_key.pk}/change/" not in page


def test_a_team_manager_rotates_their_teams_keys_in_the_console(
    world: World, tess: Persona
) -> None:
    response = tess.post(f"/admin/accounts/apikey/{world.dave_key.pk}/rotate/", {"grace_hours": 1})

    assert response.status_code == 302  # to the successor's secret, shown once
    assert ApiKey.objects.filter(rotated_from=world.dave_key).exists()


def test_a_team_manager_revokes_their_teams_keys_in_the_console(
    world: World, tess: Persona
) -> None:
    response = tess.post(f"/admin/accounts/apikey/{world.dave_key.pk}/revoke/", {"reason": "left"})

    assert response.status_code == 302
    assert world.reload(world.dave_key).revoked_at is not None


@pytest.mark.parametrize(
    ("action", "data"), [("rotate", {"grace_hours": 1}), ("revoke", {"reason": "left"})]
)
def test_another_teams_keys_do_not_exist_in_a_team_managers_console(
    world: World, tess: Persona, action: str, data: dict[str, Any]
) -> None:
    response = tess.post(f"/admin/accounts/apikey/{world.erin_key.pk}/{action}/", data)

    assert response.status_code == 404
    assert world.reload(world.erin_key).revoked_at is None
    assert not ApiKey.objects.filter(rotated_from=world.erin_key).exists()


def test_a_team_manager_cannot_open_another_teams_key_page(world: World, tess: Persona) -> None:
    response = tess.get(f"/admin/accounts/apikey/{world.erin_key.pk}/change/")

    assert response.status_code == 302  # "doesn't exist", back to the console's index
    assert response["Location"] == "/admin/"


def test_a_team_manager_cannot_issue_a_key_in_another_team_in_the_console(
    world: World, tess: Persona
) -> None:
    form = world.form(
        "/admin/accounts/apikey/add/",
        name="sneaky",
        owner=world.erin.pk,
        team=world.team_b.pk,
        allowed_models="*",
    )

    response = tess.post("/admin/accounts/apikey/add/", form)

    assert response.status_code == 200
    assert "api_keys:create" in response.content.decode()
    assert not ApiKey.objects.filter(name="sneaky").exists()


# --- Teams and members --------------------------------------------------------------------

MEMBER_OPERATIONS = {
    "list": lambda c, t, u: c.get(f"/api/teams/{t.pk}/members"),
    "add": lambda c, t, u: c.post(
        f"/api/teams/{t.pk}/members", {"user_id": u.pk}, content_type=JSON
    ),
    "remove": lambda c, t, u: c.delete(f"/api/teams/{t.pk}/members/{u.pk}"),
    "see": lambda c, t, u: c.get(f"/api/teams/{t.pk}"),
    "rename": lambda c, t, u: c.patch(
        f"/api/teams/{t.pk}", {"description": "x"}, content_type=JSON
    ),
}


@pytest.mark.parametrize(
    ("operation", "person_", "status"),
    [
        ("list", "dave", 200),
        ("add", "gina", 201),
        ("remove", "dave", 204),
        ("see", "dave", 200),
        ("rename", "dave", 200),
    ],
)
def test_a_team_manager_runs_their_team(
    world: World, tess: Persona, operation: str, person_: str, status: int
) -> None:
    response = MEMBER_OPERATIONS[operation](tess, world.team_a, getattr(world, person_))

    assert response.status_code == status


@pytest.mark.parametrize(
    ("operation", "person_"),
    [("list", "erin"), ("add", "gina"), ("remove", "erin"), ("see", "erin"), ("rename", "erin")],
)
def test_another_team_does_not_exist_for_a_team_manager(
    world: World, tess: Persona, operation: str, person_: str
) -> None:
    response = MEMBER_OPERATIONS[operation](tess, world.team_b, getattr(world, person_))

    assert response.status_code == 404
    assert list(world.team_b.members.all()) == [world.erin]
    assert world.reload(world.team_b).description == ""


def test_a_team_manager_sees_their_teams_members(world: World, tess: Persona) -> None:
    members = listed(tess.get(f"/api/teams/{world.team_a.pk}/members"))

    assert members == [world.dave.pk]


def test_a_team_manager_lists_their_team_only(world: World, tess: Persona) -> None:
    assert listed(tess.get("/api/teams")) == [world.team_a.pk]


def test_a_team_managers_console_lists_their_team_only(world: World, tess: Persona) -> None:
    page = tess.get("/admin/accounts/team/").content.decode()

    assert f"/admin/accounts/team/{world.team_a.pk}/change/" in page
    assert f"/admin/accounts/team/{world.team_b.pk}/change/" not in page


def test_a_team_manager_adds_a_member_on_their_teams_page(world: World, tess: Persona) -> None:
    url = f"/admin/accounts/team/{world.team_a.pk}/change/"

    response = tess.post(url, world.form(url, **{"membership_set-1-user": world.gina.pk}))

    assert response.status_code == 302
    assert Membership.objects.filter(team=world.team_a, user=world.gina).exists()


def test_a_team_manager_removes_a_member_on_their_teams_page(world: World, tess: Persona) -> None:
    url = f"/admin/accounts/team/{world.team_a.pk}/change/"

    response = tess.post(url, world.form(url, **{"membership_set-0-DELETE": "on"}))

    assert response.status_code == 302
    assert not Membership.objects.filter(team=world.team_a, user=world.dave).exists()


def test_a_team_manager_cannot_change_another_teams_page(world: World, tess: Persona) -> None:
    url = f"/admin/accounts/team/{world.team_b.pk}/change/"

    response = tess.post(
        url, world.form(url, description="mine", **{"membership_set-1-user": world.gina.pk})
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert list(world.team_b.members.all()) == [world.erin]
    assert world.reload(world.team_b).description == ""


# --- Limits -------------------------------------------------------------------------------


@pytest.fixture
def lena(world: World) -> Persona:
    """Lena may set rate limits and budgets in team A only (a custom team role)."""
    return session(person("lena", (custom_role("team-limits", ["limits:*"]), world.team_a)))


@pytest.mark.parametrize(("kind", "subject"), [("team", "team_a"), ("api_key", "dave_key")])
def test_a_team_limits_role_sets_limits_on_its_team_and_its_keys(
    world: World, lena: Persona, kind: str, subject: str
) -> None:
    body = {
        "subject_kind": kind,
        "subject_id": str(getattr(world, subject).pk),
        "window": "1h",
        "limit": 5,
    }

    response = lena.post("/api/limits/rules", body, content_type=JSON)

    assert response.status_code == 201


@pytest.mark.parametrize(("kind", "subject"), [("team", "team_b"), ("api_key", "erin_key")])
def test_a_team_limits_role_cannot_set_limits_on_another_team_or_its_keys(
    world: World, lena: Persona, kind: str, subject: str
) -> None:
    body = {
        "subject_kind": kind,
        "subject_id": str(getattr(world, subject).pk),
        "window": "1h",
        "limit": 5,
    }

    response = lena.post("/api/limits/rules", body, content_type=JSON)

    assert response.status_code == 403
    assert not RateLimitRule.objects.filter(limit=5).exists()


def test_a_bulk_limit_touching_another_team_sets_nothing(world: World, lena: Persona) -> None:
    subjects = [
        {"subject_kind": "team", "subject_id": str(world.team_a.pk)},
        {"subject_kind": "team", "subject_id": str(world.team_b.pk)},
    ]

    response = lena.post(
        "/api/limits/rules/bulk",
        {"subjects": subjects, "window": "1h", "limit": 5},
        content_type=JSON,
    )

    assert response.status_code == 403
    assert not RateLimitRule.objects.filter(limit=5).exists()


def test_a_team_role_sees_its_teams_limits_only(world: World, lena: Persona) -> None:
    mine = RateLimitRuleFactory(subject_kind="team", subject_id=str(world.team_a.pk))
    theirs = RateLimitRuleFactory(subject_kind="api_key", subject_id=str(world.erin_key.pk))

    rules = listed(lena.get("/api/limits/rules"))

    assert mine.pk in rules
    assert theirs.pk not in rules
    assert world.rule.pk not in rules  # on a user: global rights only
    assert lena.get(f"/api/limits/rules/{theirs.pk}").status_code == 403


def test_a_team_role_cannot_change_another_teams_limit(world: World, lena: Persona) -> None:
    theirs = RateLimitRuleFactory(subject_kind="team", subject_id=str(world.team_b.pk), limit=10)

    via_api = lena.patch(f"/api/limits/rules/{theirs.pk}", {"limit": 1}, content_type=JSON)
    url = f"/admin/quotas/ratelimitrule/{theirs.pk}/change/"
    via_console = lena.post(url, world.form(url, limit=1))

    assert via_api.status_code == 403
    # Another team's limits are not even listed in the console: "doesn't exist", back to
    # the index (as for another team's keys).
    assert (via_console.status_code, via_console["Location"]) == (302, "/admin/")
    assert world.reload(theirs).limit == 10


def test_a_team_manager_reads_but_cannot_set_their_teams_limits(
    world: World, tess: Persona
) -> None:
    """The built-in Team Manager holds limits:read, not limits:update."""
    mine = RateLimitRuleFactory(subject_kind="team", subject_id=str(world.team_a.pk))
    body = {"subject_kind": "team", "subject_id": str(world.team_a.pk), "window": "1h", "limit": 5}

    assert tess.get(f"/api/limits/rules/{mine.pk}").status_code == 200
    assert tess.post("/api/limits/rules", body, content_type=JSON).status_code == 403


# --- Denials ------------------------------------------------------------------------------


@pytest.fixture
def dana(world: World) -> Persona:
    """Dana is an Admin who may not delete providers."""
    no_delete = custom_role("no-provider-delete", ["!providers:delete"])
    return session(person("dana", ("admin", None), (no_delete, None)))


def test_a_denial_beside_admin_takes_provider_deletion_away(world: World, dana: Persona) -> None:
    via_api = dana.delete(f"/api/providers/{world.spare_provider.pk}")
    via_console = dana.post(
        f"/admin/providers/provider/{world.spare_provider.pk}/delete/", {"post": "yes"}
    )

    assert (via_api.status_code, via_console.status_code) == (403, 403)
    assert Provider.objects.filter(pk=world.spare_provider.pk).exists()


def test_a_denial_leaves_the_other_rights_of_admin(world: World, dana: Persona) -> None:
    response = dana.patch(
        f"/api/providers/{world.provider.pk}", {"enabled": False}, content_type=JSON
    )

    assert response.status_code == 200


@pytest.fixture
def rhea(world: World) -> Persona:
    """Rhea is an Admin who may not revoke keys in team A."""
    no_revoke = custom_role("no-revoke", ["!api_keys:revoke"])
    return session(person("rhea", ("admin", None), (no_revoke, world.team_a)))


@pytest.mark.parametrize(("key_in", "status"), [("dave_key", 403), ("erin_key", 200)])
def test_a_team_roles_denial_holds_in_its_team_only(
    world: World, rhea: Persona, key_in: str, status: int
) -> None:
    key = getattr(world, key_in)

    response = rhea.delete(f"/api/keys/{key.pk}?reason=left")

    assert response.status_code == status
    assert (world.reload(key).revoked_at is not None) is (status == 200)


@pytest.mark.parametrize(("key_in", "status"), [("dave_key", 403), ("erin_key", 302)])
def test_a_team_roles_denial_holds_in_its_team_only_in_the_console(
    world: World, rhea: Persona, key_in: str, status: int
) -> None:
    key = getattr(world, key_in)

    response = rhea.post(f"/admin/accounts/apikey/{key.pk}/revoke/", {"reason": "left"})

    assert response.status_code == status
    assert (world.reload(key).revoked_at is not None) is (status == 302)


def test_a_team_denial_of_reading_keys_hides_that_teams_keys_only(world: World) -> None:
    blind = custom_role("blind-in-a", ["!api_keys:read"])
    client = session(person("bea", ("admin", None), (blind, world.team_a)))
    service_key, _ = make_key(None, name="service")

    via_api = listed(client.get("/api/keys"))
    via_console = client.get("/admin/accounts/apikey/").content.decode()

    assert world.dave_key.pk not in via_api
    assert {world.erin_key.pk, service_key.pk} <= set(via_api)
    assert f"/apikey/{world.dave_key.pk}/change/" not in via_console
    assert f"/apikey/{world.erin_key.pk}/change/" in via_console
    assert f"/apikey/{service_key.pk}/change/" in via_console
