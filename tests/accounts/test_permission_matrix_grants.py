"""Nobody grants what they don't hold, and superusers stay out of everyone else's reach.

Tess manages team A; Rory may define roles but not delete providers; Rita may define and
assign roles (roles:*) and nothing else; the Admin persona holds the built-in Admin role
globally; Sam holds Super Admin (a role, not Django's superuser flag)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import permissions, roles
from accounts.access import Rights
from accounts.models import Membership, Role, RoleAssignment
from tests.accounts.access_matrix import (
    Persona,
    Stage,
    World,
    custom_role,
    person,
    session,
    staged,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

JSON = "application/json"
GREEDY = {"slug": "greedy", "name": "Greedy", "permissions": ["providers:delete"]}


@pytest.fixture(scope="module")
def stage(django_db_setup: None, django_db_blocker: Any) -> Iterator[Stage]:
    with staged(django_db_blocker) as built:
        yield built


@pytest.fixture
def world(stage: Stage, db: None) -> World:
    return stage.world


@pytest.fixture
def tess(world: World) -> Persona:
    return session(person("tess", ("team-manager", world.team_a)))


@pytest.fixture
def rory(world: World) -> Persona:
    role = custom_role("role-author", ["roles:*", "providers:read", "models:read"])
    return session(person("rory", (role, None)))


@pytest.fixture
def admin(stage: Stage) -> Persona:
    return stage.clients["admin"]


@pytest.fixture
def sam(world: World) -> User:
    return person("sam", ("super-admin", None))


def assign(client: Persona, user: User, role: str | Role, team: Any = None) -> Any:
    role_id = (Role.objects.get(slug=role) if isinstance(role, str) else role).pk
    body = {"user_id": user.pk, "role_id": role_id, "team_id": team.pk if team else None}
    return client.post("/api/roles/assignments", body, content_type=JSON)


# --- Assigning roles ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "where", "status"),
    [
        ("admin", "everywhere", 403),
        ("admin", "A", 403),  # Admin's limits:update, which Tess lacks in A
        ("developer", "everywhere", 403),  # no roles:assign outside A
        ("developer", "A", 201),
        ("developer", "B", 403),
        ("team-manager", "A", 201),  # exactly her own rights in A
        ("super-admin", "A", 403),
    ],
)
def test_a_team_manager_gives_only_roles_whose_rights_they_hold_in_their_team(
    world: World, tess: Persona, role: str, where: str, status: int
) -> None:
    team = {"everywhere": None, "A": world.team_a, "B": world.team_b}[where]
    newcomer = person("pat")

    response = assign(tess, newcomer, role, team)

    assert response.status_code == status
    held = RoleAssignment.objects.filter(user=newcomer, role__slug=role, team=team).exists()
    assert held is (status == 201)


def test_a_team_manager_cannot_give_a_custom_role_with_a_right_they_lack(
    world: World, tess: Persona
) -> None:
    limits = custom_role("team-limits", ["limits:update"])

    response = assign(tess, world.dave, limits, world.team_a)

    assert response.status_code == 403
    assert "limits:update" in response.json()["detail"]


def test_a_team_manager_cannot_take_a_global_role_away(world: World, tess: Persona) -> None:
    assignment = RoleAssignment.objects.get(user=world.dave, role__slug="developer", team=None)

    response = tess.delete(f"/api/roles/assignments/{assignment.pk}")

    assert response.status_code == 403
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists()


def test_an_admin_cannot_give_the_super_admin_role(world: World, admin: Persona) -> None:
    response = assign(admin, world.dave, "super-admin")

    assert response.status_code == 403
    assert "settings:update" in response.json()["detail"]


def test_an_admin_cannot_give_the_super_admin_role_in_the_console(
    world: World, admin: Persona
) -> None:
    url = f"/admin/auth/user/{world.dave.pk}/change/"
    super_admin = Role.objects.get(slug="super-admin")

    response = admin.post(url, world.form(url, **{"role_assignments-1-role": super_admin.pk}))

    assert response.status_code == 200
    assert "You cannot give rights you do not hold" in response.content.decode()
    assert not RoleAssignment.objects.filter(user=world.dave, role=super_admin).exists()


def test_taking_a_role_away_on_its_page_needs_its_rights_too(stage: Stage, world: World) -> None:
    """Rita may assign roles, but not Super Admin's rights: she cannot take it from anyone
    (a deleted row's errors would be dropped by Django's formset unless raised for the
    whole form)."""
    rita = session(person("rita", (custom_role("role-admin", ["roles:*"]), None)))
    holder = stage.people["super-admin"]
    url = f"/admin/accounts/role/{Role.objects.get(slug='super-admin').pk}/change/"
    form = world.form(url, **{"assignments-0-DELETE": "on"})
    assert form["assignments-0-user"] == str(holder.pk)

    response = rita.post(url, form)

    assert response.status_code == 200
    assert RoleAssignment.objects.filter(user=holder, role__slug="super-admin").exists()


def test_a_superuser_takes_a_role_away_on_its_page(stage: Stage, world: World) -> None:
    """The form the test above posts is otherwise valid."""
    holder = stage.people["super-admin"]
    url = f"/admin/accounts/role/{Role.objects.get(slug='super-admin').pk}/change/"

    response = stage.clients["superuser"].post(
        url, world.form(url, **{"assignments-0-DELETE": "on"})
    )

    assert response.status_code == 302
    assert not RoleAssignment.objects.filter(user=holder, role__slug="super-admin").exists()


def test_removing_someone_from_another_team_on_their_page_needs_rights_there(
    world: World,
) -> None:
    people_admin = custom_role("people", ["users:read", "users:update"])
    team_members = custom_role("team-members", ["members:manage"])
    uma = session(
        person("uma", ("developer", None), (people_admin, None), (team_members, world.team_a))
    )
    url = f"/admin/auth/user/{world.erin.pk}/change/"
    form = world.form(url, **{"membership_set-0-DELETE": "on"})
    assert form["membership_set-0-team"] == str(world.team_b.pk)

    response = uma.post(url, form)

    assert response.status_code == 200
    assert Membership.objects.filter(user=world.erin, team=world.team_b).exists()


# --- Defining roles -----------------------------------------------------------------------


def test_a_role_author_cannot_define_a_role_with_a_right_they_lack(
    world: World, rory: Persona
) -> None:
    response = rory.post("/api/roles", GREEDY, content_type=JSON)

    assert response.status_code == 403
    assert "providers:delete" in response.json()["detail"]
    assert not Role.objects.filter(slug="greedy").exists()


def test_a_role_author_defines_a_role_from_rights_they_hold(world: World, rory: Persona) -> None:
    body = {"slug": "readers", "name": "Readers", "permissions": ["providers:read"]}

    assert rory.post("/api/roles", body, content_type=JSON).status_code == 201


def test_a_role_author_cannot_add_a_right_they_lack_to_a_role(world: World, rory: Persona) -> None:
    response = rory.patch(
        f"/api/roles/{world.ops.pk}",
        {"permissions": ["models:read", "providers:delete"]},
        content_type=JSON,
    )

    assert response.status_code == 403
    assert world.reload(world.ops).permissions == ["models:read"]


def test_a_role_author_cannot_define_a_role_with_a_right_they_lack_in_the_console(
    world: World, rory: Persona
) -> None:
    form = world.form(
        "/admin/accounts/role/add/", name="Greedy", slug="greedy", permissions="providers:delete"
    )

    response = rory.post("/admin/accounts/role/add/", form)

    assert response.status_code == 200
    assert "providers:delete" in response.content.decode()
    assert not Role.objects.filter(slug="greedy").exists()


def test_a_role_author_cannot_add_a_right_they_lack_in_the_console(
    world: World, rory: Persona
) -> None:
    url = f"/admin/accounts/role/{world.ops.pk}/change/"

    response = rory.post(url, world.form(url, permissions="models:read\nproviders:delete"))

    assert response.status_code == 200
    assert world.reload(world.ops).permissions == ["models:read"]


def test_a_role_author_cannot_import_a_role_with_a_right_they_lack(
    world: World, rory: Persona
) -> None:
    document = {"format": roles.EXPORT_FORMAT, "roles": [GREEDY]}

    via_api = rory.post("/api/roles/import", document, content_type=JSON)
    upload = SimpleUploadedFile("roles.json", json.dumps(document).encode())
    via_console = rory.post("/admin/accounts/role/import/", {"file": upload})

    assert via_api.status_code == 422
    assert "providers:delete" in via_api.json()["detail"]
    assert via_console.status_code == 200
    assert "providers:delete" in via_console.content.decode()
    assert not Role.objects.filter(slug="greedy").exists()


# --- Superusers and the accounts above one's own rights -----------------------------------


def test_a_superuser_holds_every_right_in_every_team(stage: Stage, world: World) -> None:
    rights = Rights.of(User.objects.get(pk=stage.people["superuser"].pk))

    assert all(rights.has(p) and rights.has(p, world.team_b.pk) for p in permissions.ALL)
    assert (
        stage.clients["superuser"]
        .patch("/api/settings", {"keys.rotation_grace_hours": 5}, content_type=JSON)
        .status_code
        == 200
    )


@pytest.fixture
def boss(world: World) -> User:
    return UserFactory(username="boss@example.com", is_superuser=True)


API_EDITS = {
    "update": lambda c, u: c.patch(f"/api/users/{u.pk}", {"first_name": "X"}, content_type=JSON),
    "password": lambda c, u: c.patch(
        f"/api/users/{u.pk}", {"password": "An0ther-long-passw0rd"}, content_type=JSON
    ),
    "disable": lambda c, u: c.patch(f"/api/users/{u.pk}", {"is_active": False}, content_type=JSON),
    "sign out": lambda c, u: c.post(f"/api/users/{u.pk}/logout"),
    "delete": lambda c, u: c.delete(f"/api/users/{u.pk}"),
}


@pytest.mark.parametrize("edit", list(API_EDITS))
def test_an_admin_cannot_change_or_delete_a_superuser(
    admin: Persona, boss: User, edit: str
) -> None:
    before = User.objects.values().get(pk=boss.pk)

    response = API_EDITS[edit](admin, boss)

    assert response.status_code == 403
    assert User.objects.values().get(pk=boss.pk) == before


@pytest.mark.parametrize("edit", list(API_EDITS))
def test_an_admin_cannot_take_over_a_super_admin(admin: Persona, sam: User, edit: str) -> None:
    """A password, an e-mail or a disabled account is a way into (or out of) rights the
    Admin does not hold."""
    before = User.objects.values().get(pk=sam.pk)

    response = API_EDITS[edit](admin, sam)

    assert response.status_code == 403
    assert "settings:update" in response.json()["detail"]
    assert User.objects.values().get(pk=sam.pk) == before


@pytest.mark.parametrize(("edit", "status"), [("update", 200), ("password", 200), ("delete", 204)])
def test_an_admin_manages_accounts_below_their_rights(
    world: World, admin: Persona, edit: str, status: int
) -> None:
    assert API_EDITS[edit](admin, world.dave).status_code == status


@pytest.mark.parametrize("page", ["delete", "password"])
def test_an_admin_cannot_open_a_superusers_pages_in_the_console(
    admin: Persona, boss: User, page: str
) -> None:
    assert admin.get(f"/admin/auth/user/{boss.pk}/{page}/").status_code == 403


@pytest.mark.parametrize("page", ["change", "delete", "password"])
def test_an_admin_cannot_change_a_super_admins_account_in_the_console(
    world: World, admin: Persona, sam: User, page: str
) -> None:
    url = f"/admin/auth/user/{sam.pk}/{page}/"
    form = {
        "post": "yes",
        "password1": "An0ther-long-passw0rd",
        "password2": "An0ther-long-passw0rd",
    }

    response = admin.post(url, form)

    assert response.status_code == 403
    assert User.objects.filter(pk=sam.pk, password=sam.password).exists()


def test_an_admin_cannot_make_anyone_a_superuser(world: World, admin: Persona) -> None:
    url = f"/admin/auth/user/{world.dave.pk}/change/"

    via_console = admin.post(url, world.form(url, is_superuser="on"))
    via_api = admin.patch(f"/api/users/{world.dave.pk}", {"is_superuser": True}, content_type=JSON)

    assert (via_console.status_code, via_api.status_code) == (302, 200)
    assert not world.reload(world.dave).is_superuser


def test_a_superuser_makes_someone_a_superuser_in_the_console(stage: Stage, world: World) -> None:
    url = f"/admin/auth/user/{world.dave.pk}/change/"

    stage.clients["superuser"].post(url, world.form(url, is_superuser="on"))

    assert world.reload(world.dave).is_superuser
