"""Role changes are versioned with their author, through the API and the console; the
custom roles survive an export and an import into an empty set; an import is all or
nothing. Sue holds Super Admin (a role): the one built-in role that may define roles."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import roles
from accounts.models import Role, RoleRevision
from tests.accounts.access_matrix import Persona, Stage, World, staged

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
def sue(stage: Stage) -> Persona:
    return stage.clients["super-admin"]


def history(slug: str) -> list[tuple[int, str, int | None]]:
    return list(
        RoleRevision.objects.filter(slug=slug)
        .order_by("version")
        .values_list("version", "action", "changed_by_id")
    )


def custom_roles() -> list[dict[str, Any]]:
    return sorted(
        (roles.snapshot(role) for role in Role.objects.filter(builtin=False)),
        key=lambda s: s["slug"],
    )


def import_file(document: dict[str, Any]) -> dict[str, SimpleUploadedFile]:
    return {"file": SimpleUploadedFile("roles.json", json.dumps(document).encode())}


def test_the_api_versions_every_role_change_with_its_author(world: World, sue: Persona) -> None:
    body = {"slug": "reviewers", "name": "Reviewers", "permissions": ["audit:read"]}
    role = sue.post("/api/roles", body, content_type=JSON).json()
    sue.patch(f"/api/roles/{role['id']}", {"permissions": ["audit:*"]}, content_type=JSON)
    sue.patch(f"/api/roles/{role['id']}", {"permissions": ["audit:*"]}, content_type=JSON)
    revisions = sue.get(f"/api/roles/{role['id']}/revisions").json()
    sue.delete(f"/api/roles/{role['id']}")

    assert history("reviewers") == [
        (1, "created", sue.user.pk),
        (2, "updated", sue.user.pk),  # the same change again is no new version
        (3, "deleted", sue.user.pk),
    ]
    assert [(r["version"], r["snapshot"]["permissions"]) for r in revisions] == [
        (2, ["audit:*"]),
        (1, ["audit:read"]),
    ]
    assert {r["changed_by_name"] for r in revisions} == {str(sue.user)}


def test_the_console_versions_every_role_change_with_its_author(world: World, sue: Persona) -> None:
    add = world.form(
        "/admin/accounts/role/add/", name="Reviewers", slug="reviewers", permissions="audit:read"
    )
    assert sue.post("/admin/accounts/role/add/", add).status_code == 302
    role = Role.objects.get(slug="reviewers")
    url = f"/admin/accounts/role/{role.pk}/change/"
    change = {**world.form(url), "permissions": "audit:*"}  # the page as it is now
    assert sue.post(url, change).status_code == 302
    delete = sue.post(f"/admin/accounts/role/{role.pk}/delete/", {"post": "yes"})

    assert delete.status_code == 302
    assert history("reviewers") == [
        (1, "created", sue.user.pk),
        (2, "updated", sue.user.pk),
        (3, "deleted", sue.user.pk),
    ]


def test_the_console_shows_a_roles_history(world: World, sue: Persona) -> None:
    sue.patch(f"/api/roles/{world.ops.pk}", {"description": "Runs things"}, content_type=JSON)

    page = sue.get(f"/admin/accounts/role/{world.ops.pk}/change/").content.decode()

    assert "history" in page.lower()
    assert str(sue.user) in page  # who made version 2


def test_a_built_in_roles_description_is_versioned_but_its_permissions_stay(
    world: World, sue: Persona
) -> None:
    viewer = Role.objects.get(slug="viewer")
    url = f"/admin/accounts/role/{viewer.pk}/change/"

    response = sue.post(url, world.form(url, description="Reads", permissions="*"))

    assert response.status_code == 302
    viewer.refresh_from_db()
    assert (viewer.description, "*" in viewer.permissions) == ("Reads", False)
    assert history("viewer")[-1][1:] == ("updated", sue.user.pk)


def test_roles_round_trip_through_the_api_into_an_empty_set(world: World, sue: Persona) -> None:
    on_call = sue.post(
        "/api/roles",
        {"slug": "on-call", "name": "On call", "permissions": ["api_keys:*"]},
        content_type=JSON,
    )
    support = sue.post(
        "/api/roles",
        {
            "slug": "support",
            "name": "Support",
            "description": "Helps people",
            "permissions": ["users:read", "api_keys:*", "!api_keys:revoke"],
            "mcp_tools": ["github__*", "!github__delete_repo"],
        },
        content_type=JSON,
    )
    assert (on_call.status_code, support.status_code) == (201, 201)
    before = custom_roles()
    exported = sue.get("/api/roles/export").json()
    Role.objects.filter(builtin=False).delete()

    response = sue.post("/api/roles/import", exported, content_type=JSON)

    assert response.status_code == 200
    assert custom_roles() == before
    assert sorted(response.json()["created"]) == [r["slug"] for r in before]
    assert history("support")[-1][1:] == ("imported", sue.user.pk)


def test_roles_round_trip_through_the_console_into_an_empty_set(world: World, sue: Persona) -> None:
    before = custom_roles()
    exported = json.loads(sue.get("/admin/accounts/role/export/").content)
    Role.objects.filter(builtin=False).delete()

    response = sue.post("/admin/accounts/role/import/", import_file(exported))

    assert response.status_code == 302
    assert custom_roles() == before
    assert {"ops", "auditors"} <= {r["slug"] for r in before}


BAD_IMPORTS = {
    "an unknown permission": {"slug": "bad", "name": "Bad", "permissions": ["providers:fly"]},
    "a built-in role": {"slug": "viewer", "name": "Viewer", "permissions": ["*"]},
    "no slug": {"name": "Nameless", "permissions": []},
    "an unknown field": {"slug": "odd", "name": "Odd", "colour": "red"},
}


@pytest.mark.parametrize("bad", list(BAD_IMPORTS))
def test_an_import_with_one_bad_role_changes_nothing(world: World, sue: Persona, bad: str) -> None:
    document = {
        "format": roles.EXPORT_FORMAT,
        "roles": [
            {"slug": "fresh", "name": "Fresh", "permissions": ["models:read"]},
            {"slug": "ops", "name": "Ops", "permissions": ["models:*"]},
            BAD_IMPORTS[bad],
        ],
    }
    before, revisions = custom_roles(), RoleRevision.objects.count()

    response = sue.post("/api/roles/import", document, content_type=JSON)

    assert response.status_code == 422
    assert (custom_roles(), RoleRevision.objects.count()) == (before, revisions)


def test_a_console_import_with_one_bad_role_changes_nothing(world: World, sue: Persona) -> None:
    document = {
        "format": roles.EXPORT_FORMAT,
        "roles": [
            {"slug": "ops", "name": "Ops", "permissions": ["models:*"]},
            BAD_IMPORTS["an unknown permission"],
        ],
    }
    before, revisions = custom_roles(), RoleRevision.objects.count()

    response = sue.post("/admin/accounts/role/import/", import_file(document))

    assert response.status_code == 200
    assert "providers:fly" in response.content.decode()
    assert (custom_roles(), RoleRevision.objects.count()) == (before, revisions)
