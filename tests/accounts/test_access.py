"""Rights derived from roles: scopes, denials, the stored form (Django + django-guardian),
the console flag, built-in roles, versions, export/import, and the generated docs."""

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from guardian.shortcuts import get_perms

from accounts import access, permissions, roles
from accounts.access import Rights
from accounts.models import Role, RoleAssignment, RoleRevision, Team
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _role(slug: str, perms: list[str]) -> Role:
    return Role.objects.create(name=slug.title(), slug=slug, permissions=perms)


def _fresh(user: User) -> Rights:
    return Rights.of(User.objects.get(pk=user.pk))


@pytest.fixture
def carol() -> User:
    user = UserFactory(username="carol@example.com")
    user.role_assignments.all().delete()  # drop the default role: start with nothing
    return user


def test_a_user_without_roles_holds_nothing_and_cannot_open_the_console(carol: User) -> None:
    rights = _fresh(carol)

    assert not rights.has("providers:read")
    assert not rights.console
    assert not User.objects.get(pk=carol.pk).is_staff


def test_a_global_role_holds_everywhere_and_opens_the_console(carol: User) -> None:
    team = Team.objects.create(name="A")
    RoleAssignment.objects.create(user=carol, role=_role("readers", ["providers:read"]))

    rights = _fresh(carol)

    assert rights.has("providers:read")
    assert rights.has("providers:read", team.pk)
    assert not rights.has("providers:update")
    assert User.objects.get(pk=carol.pk).is_staff
    # Stored the Django way: a user permission on Team.
    assert User.objects.get(pk=carol.pk).has_perm("accounts.providers:read")


def test_a_team_role_holds_in_its_team_only_and_is_stored_as_guardian_permissions(
    carol: User,
) -> None:
    team_a, team_b = Team.objects.create(name="A"), Team.objects.create(name="B")
    RoleAssignment.objects.create(user=carol, role=access.builtin_role("team-manager"), team=team_a)

    rights = _fresh(carol)

    assert rights.has("api_keys:revoke", team_a.pk)
    assert not rights.has("api_keys:revoke", team_b.pk)
    assert not rights.has("api_keys:revoke")
    assert rights.teams_with("members:manage") == {team_a.pk}
    assert "api_keys:revoke" in get_perms(User.objects.get(pk=carol.pk), team_a)
    assert get_perms(User.objects.get(pk=carol.pk), team_b) == []


def test_a_team_role_cannot_carry_rights_that_are_not_team_scopable(carol: User) -> None:
    team = Team.objects.create(name="A")
    RoleAssignment.objects.create(user=carol, role=_role("wide", ["providers:*"]), team=team)

    assert not _fresh(carol).has("providers:delete", team.pk)


def test_a_denial_wins_over_every_grant(carol: User) -> None:
    RoleAssignment.objects.create(user=carol, role=access.builtin_role("admin"))
    RoleAssignment.objects.create(user=carol, role=_role("no-delete", ["!providers:delete"]))

    rights = _fresh(carol)

    assert rights.has("providers:update")
    assert not rights.has("providers:delete")


def test_a_team_roles_denial_holds_in_that_team_only(carol: User) -> None:
    team_a, team_b = Team.objects.create(name="A"), Team.objects.create(name="B")
    RoleAssignment.objects.create(user=carol, role=access.builtin_role("admin"))
    RoleAssignment.objects.create(
        user=carol, role=_role("no-revoke", ["!api_keys:revoke"]), team=team_a
    )

    rights = _fresh(carol)

    assert not rights.has("api_keys:revoke", team_a.pk)
    assert rights.has("api_keys:revoke", team_b.pk)
    assert rights.has("api_keys:revoke")


def test_changing_a_role_changes_its_holders_rights(carol: User) -> None:
    role = _role("ops", ["providers:read"])
    RoleAssignment.objects.create(user=carol, role=role)

    role.permissions = ["providers:read", "providers:update"]
    role.save()

    assert _fresh(carol).has("providers:update")


def test_removing_the_last_console_right_closes_the_console(carol: User) -> None:
    assignment = RoleAssignment.objects.create(user=carol, role=_role("readers", ["models:read"]))
    assert User.objects.get(pk=carol.pk).is_staff

    assignment.delete()

    assert not User.objects.get(pk=carol.pk).is_staff


def test_gateway_rights_alone_do_not_open_the_console(carol: User) -> None:
    RoleAssignment.objects.create(user=carol, role=_role("gw", ["ai_gateway:use"]))

    rights = _fresh(carol)

    assert rights.has("ai_gateway:use")
    assert not rights.console


def test_new_accounts_get_the_default_role() -> None:
    user = UserFactory(username="new@example.com")

    assert list(user.role_assignments.values_list("role__slug", "team")) == [("developer", None)]
    assert _fresh(user).has("ai_gateway:use")


def test_grantable_refuses_rights_the_actor_lacks(carol: User) -> None:
    team = Team.objects.create(name="A")
    RoleAssignment.objects.create(user=carol, role=access.builtin_role("team-manager"), team=team)
    actor = User.objects.get(pk=carol.pk)

    assert access.grantable(actor, access.builtin_role("developer"), team.pk) is None
    assert "roles:assign" in (access.grantable(actor, access.builtin_role("developer"), None) or "")
    refusal = access.grantable(actor, access.builtin_role("admin"), team.pk) or ""
    assert "limits:update" in refusal  # within a team only team-scopable rights count


def test_unknown_permissions_are_refused() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="providers:fly"):
        permissions.validate_permissions(["providers:read", "providers:fly"])


def test_every_change_of_a_role_is_a_new_version_with_its_author(alice: User) -> None:
    role = roles.save(
        Role(name="Ops", slug="ops", permissions=["providers:read"]), alice, "created"
    )
    role.permissions = ["providers:*"]
    roles.save(role, alice, "updated")
    roles.save(role, alice, "updated")  # no change: no version
    roles.delete(role, alice)

    history = list(RoleRevision.objects.filter(slug="ops").order_by("version"))
    assert [(r.version, r.action) for r in history] == [
        (1, "created"),
        (2, "updated"),
        (3, "deleted"),
    ]
    assert history[1].snapshot["permissions"] == ["providers:*"]
    assert {r.changed_by_name for r in history} == {str(alice)}


def test_roles_round_trip_through_export_and_import(alice: User) -> None:
    roles.save(
        Role(name="Ops", slug="ops", permissions=["providers:*"], mcp_tools=["gh__*"]),
        alice,
        "created",
    )
    exported = roles.export_json()
    Role.objects.filter(slug="ops").delete()

    result = roles.import_json(exported, by=alice)

    assert result.created == ["ops"]
    ops = Role.objects.get(slug="ops")
    assert (ops.permissions, ops.mcp_tools, ops.builtin) == (["providers:*"], ["gh__*"], False)
    assert "super-admin" not in json.loads(exported)["roles"].__repr__()
    assert roles.import_json(exported, by=alice).unchanged == ["ops"]


def test_an_import_is_all_or_nothing_and_grants_nothing_the_importer_lacks(carol: User) -> None:
    RoleAssignment.objects.create(user=carol, role=_role("role-admin", ["roles:*", "models:read"]))
    actor = User.objects.get(pk=carol.pk)
    document = json.dumps(
        {
            "format": roles.EXPORT_FORMAT,
            "roles": [
                {"slug": "fine", "name": "Fine", "permissions": ["models:read"]},
                {"slug": "greedy", "name": "Greedy", "permissions": ["providers:delete"]},
            ],
        }
    )

    with pytest.raises(roles.ImportRefused, match="providers:delete"):
        roles.import_json(document, by=actor)

    assert not Role.objects.filter(slug__in=["fine", "greedy"]).exists()


def test_built_in_roles_cannot_be_imported_over(alice: User) -> None:
    access.builtin_role("viewer")
    document = json.dumps(
        {"format": roles.EXPORT_FORMAT, "roles": [{"slug": "viewer", "permissions": ["*"]}]}
    )

    with pytest.raises(roles.ImportRefused, match="built in"):
        roles.import_json(document, by=alice)


def test_docs_permissions_md_matches_the_code() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"

    assert path.read_text() == permissions.markdown(), "run: manage.py permissions_doc"


def test_the_migrated_built_in_roles_match_the_code() -> None:
    for slug, (name, _, perms) in permissions.BUILTIN_ROLES.items():
        role = Role.objects.get(slug=slug)
        assert (role.name, sorted(role.permissions), role.builtin) == (name, sorted(perms), True)
