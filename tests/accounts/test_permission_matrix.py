"""Each built-in role against the management API: every representative operation is
allowed exactly when the role's permission list (accounts/permissions.py) holds what the
operation needs, and a refused operation changes nothing. The console's pages are in
test_permission_matrix_console.py; team scopes, denials and grants in the files beside."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse

from accounts import roles
from accounts.access import Rights
from accounts.models import ApiKey, Membership, Role, RoleAssignment, RuntimeSetting, Team
from mcpgw.models import McpServer
from providers.models import AIModel, Provider, Route
from quotas.models import Budget, QuotaReset, RateLimitRule
from tests.accounts.access_matrix import (
    EXPECTED,
    HOLDERS,
    PUBLIC_MCP_URL,
    Action,
    Stage,
    World,
    changed,
    console_key,
    created,
    gone,
    needs,
    person,
    session,
    staged,
)

pytestmark = pytest.mark.django_db

JSON = "application/json"
DEVELOPER = tuple(EXPECTED["developer"].everywhere)


def ids(response: HttpResponse) -> list[int]:
    """The ids in a list answer (none for a refusal)."""
    body = response.json() if response.status_code == 200 else []
    return [item["id"] for item in body]


def post(path: str, body: dict[str, Any]) -> Any:
    return lambda client, w: client.post(path.format(w=w), body, content_type=JSON)


def patch(path: str, body: dict[str, Any]) -> Any:
    return lambda client, w: client.patch(path.format(w=w), body, content_type=JSON)


def get(path: str) -> Any:
    return lambda client, w: client.get(path.format(w=w))


def delete(path: str) -> Any:
    return lambda client, w: client.delete(path.format(w=w))


def hidden_without(perm: str) -> Any:
    """Objects the caller cannot even see answer 404, like objects that don't exist."""
    return lambda rights: 403 if rights.has(perm) else 404


def _lists(attr: str) -> Any:
    return lambda w, r: getattr(w, attr).pk in ids(r)


def _answered(r: HttpResponse, status: int) -> bool:
    return r.status_code == status


ACTIONS = [
    # Providers, models, routes
    Action(
        "list providers", needs("providers:read"), get("/api/providers"), 200, _lists("provider")
    ),
    Action(
        "create a provider",
        needs("providers:create"),
        post("/api/providers", {"name": "new", "type": "openai", "api_key": "sk-x"}),
        201,
        created(Provider, name="new"),
    ),
    Action(
        "update a provider",
        needs("providers:update"),
        patch("/api/providers/{w.provider.pk}", {"enabled": False}),
        200,
        changed("provider", "enabled", False),
    ),
    Action(
        "delete a provider",
        needs("providers:delete"),
        delete("/api/providers/{w.spare_provider.pk}"),
        204,
        gone("spare_provider"),
    ),
    Action("list models", needs("models:read"), get("/api/models"), 200, _lists("model")),
    Action(
        "create a model",
        needs("models:create"),
        post("/api/models", {"model_id": "new-model"}),
        201,
        created(AIModel, model_id="new-model"),
    ),
    Action(
        "update a model",
        needs("models:update"),
        patch("/api/models/{w.model.pk}", {"display_name": "Mini"}),
        200,
        changed("model", "display_name", "Mini"),
    ),
    Action(
        "delete a model",
        needs("models:delete"),
        delete("/api/models/{w.spare_model.pk}"),
        204,
        gone("spare_model"),
    ),
    Action(
        "list routes",
        needs("routes:read"),
        get("/api/models/{w.model.pk}/routes"),
        200,
        _lists("route"),
    ),
    Action(
        "create a route",
        needs("routes:create"),
        lambda c, w: c.post(
            f"/api/models/{w.model.pk}/routes",
            {"provider_id": w.spare_provider.pk, "weight": 5},
            content_type=JSON,
        ),
        201,
        created(Route, weight=5),
    ),
    Action(
        "update a route",
        needs("routes:update"),
        patch("/api/models/{w.model.pk}/routes/{w.route.pk}", {"weight": 7}),
        200,
        changed("route", "weight", 7),
    ),
    Action(
        "delete a route",
        needs("routes:delete"),
        delete("/api/models/{w.model.pk}/routes/{w.route.pk}"),
        204,
        gone("route"),
    ),
    # MCP servers
    Action(
        "list MCP servers",
        needs("mcp_servers:read"),
        get("/api/mcp/servers"),
        200,
        _lists("server"),
    ),
    Action(
        "register an MCP server",
        needs("mcp_servers:create"),
        post("/api/mcp/servers", {"name": "Linear", "prefix": "linear", "url": PUBLIC_MCP_URL}),
        201,
        created(McpServer, prefix="linear"),
    ),
    Action(
        "update an MCP server",
        needs("mcp_servers:update"),
        patch("/api/mcp/servers/{w.server.pk}", {"description": "Issues"}),
        200,
        changed("server", "description", "Issues"),
    ),
    Action(
        "delete an MCP server",
        needs("mcp_servers:delete"),
        delete("/api/mcp/servers/{w.server.pk}"),
        204,
        gone("server"),
    ),
    # Limits and budgets (on a user: global rights)
    Action(
        "read a rate limit",
        needs("limits:read"),
        get("/api/limits/rules/{w.rule.pk}"),
        200,
        lambda w, r: _answered(r, 200),
    ),
    Action(
        "list rate limits",
        needs("limits:read"),
        get("/api/limits/rules"),
        200,
        _lists("rule"),
        refused=lambda rights: 200,  # a list everyone may ask for, filtered to what they see
    ),
    Action(
        "set a rate limit",
        needs("limits:update"),
        lambda c, w: c.post(
            "/api/limits/rules",
            {"subject_kind": "user", "subject_id": str(w.erin.pk), "window": "1h", "limit": 5},
            content_type=JSON,
        ),
        201,
        created(RateLimitRule, limit=5),
    ),
    Action(
        "change a rate limit",
        needs("limits:update"),
        patch("/api/limits/rules/{w.rule.pk}", {"limit": 99}),
        200,
        changed("rule", "limit", 99),
    ),
    Action(
        "delete a rate limit",
        needs("limits:update"),
        delete("/api/limits/rules/{w.rule.pk}"),
        204,
        gone("rule"),
    ),
    Action(
        "set a budget",
        needs("limits:update"),
        lambda c, w: c.post(
            "/api/limits/budgets",
            {"subject_kind": "user", "subject_id": str(w.erin.pk), "limit": "25"},
            content_type=JSON,
        ),
        201,
        created(Budget, limit=25),
    ),
    Action(
        "delete a budget",
        needs("limits:update"),
        delete("/api/limits/budgets/{w.budget.pk}"),
        204,
        gone("budget"),
    ),
    Action(
        "reset a subject's usage",
        needs("limits:update"),
        lambda c, w: c.post(
            "/api/limits/reset",
            {"subject_kind": "user", "subject_id": str(w.dave.pk), "reason": "new month"},
            content_type=JSON,
        ),
        200,
        created(QuotaReset, reason="new month"),
    ),
    # Teams and members
    Action(
        "see a team",
        needs("teams:read"),
        get("/api/teams/{w.team_a.pk}"),
        200,
        lambda w, r: _answered(r, 200),
        refused=hidden_without("teams:read"),
    ),
    Action(
        "create a team",
        needs("teams:create"),
        post("/api/teams", {"name": "New"}),
        201,
        created(Team, name="New"),
    ),
    Action(
        "rename a team",
        needs("teams:update"),
        patch("/api/teams/{w.team_a.pk}", {"description": "Platform"}),
        200,
        changed("team_a", "description", "Platform"),
        refused=hidden_without("teams:read"),
    ),
    Action(
        "delete a team",
        needs("teams:delete"),
        delete("/api/teams/{w.empty_team.pk}"),
        204,
        gone("empty_team"),
        refused=hidden_without("teams:read"),
    ),
    Action(
        "list a team's members",
        needs("members:read"),
        get("/api/teams/{w.team_a.pk}/members"),
        200,
        _lists("dave"),
        refused=hidden_without("teams:read"),
    ),
    Action(
        "add a member",
        needs("members:manage"),
        lambda c, w: c.post(
            f"/api/teams/{w.team_a.pk}/members", {"user_id": w.erin.pk}, content_type=JSON
        ),
        201,
        lambda w, r: w.team_a.members.filter(pk=w.erin.pk).exists(),
        refused=hidden_without("teams:read"),
    ),
    Action(
        "remove a member",
        needs("members:manage"),
        delete("/api/teams/{w.team_a.pk}/members/{w.dave.pk}"),
        204,
        lambda w, r: not Membership.objects.filter(team=w.team_a, user=w.dave).exists(),
        refused=hidden_without("teams:read"),
    ),
    # Users
    Action("list users", needs("users:read"), get("/api/users"), 200, _lists("dave")),
    Action(
        "see another user",
        needs("users:read"),
        get("/api/users/{w.dave.pk}"),
        200,
        lambda w, r: _answered(r, 200),
    ),
    Action(
        "create a user",
        needs("users:create"),
        post("/api/users", {"username": "frank@example.com"}),
        201,
        created(User, username="frank@example.com"),
    ),
    Action(
        "update a user",
        needs("users:update"),
        patch("/api/users/{w.dave.pk}", {"first_name": "Dave"}),
        200,
        changed("dave", "first_name", "Dave"),
    ),
    Action(
        "delete a user",
        needs("users:delete"),
        delete("/api/users/{w.dave.pk}"),
        204,
        gone("dave"),
    ),
    # Keys: one's own need api_keys:create; someone else's the team-scopable api_keys rights.
    Action(
        "create a key for oneself",
        needs("api_keys:create"),
        post("/api/keys", {"name": "mine"}),
        201,
        created(ApiKey, name="mine"),
    ),
    Action(
        "create a key for someone else",
        needs("api_keys:create", "users:read"),
        lambda c, w: c.post(
            "/api/keys", {"name": "for dave", "owner_id": w.dave.pk}, content_type=JSON
        ),
        201,
        created(ApiKey, name="for dave"),
    ),
    Action(
        "list other people's keys",
        needs("api_keys:read"),
        get("/api/keys"),
        200,
        _lists("dave_key"),
        refused=lambda rights: 200,  # everyone lists keys: their own
    ),
    Action(
        "see someone else's key",
        needs("api_keys:read"),
        get("/api/keys/{w.dave_key.pk}"),
        200,
        lambda w, r: _answered(r, 200),
        refused=hidden_without("api_keys:read"),
    ),
    Action(
        "update someone else's key",
        needs("api_keys:update"),
        patch("/api/keys/{w.dave_key.pk}", {"name": "renamed"}),
        200,
        changed("dave_key", "name", "renamed"),
        refused=hidden_without("api_keys:read"),
    ),
    Action(
        "rotate someone else's key",
        needs("api_keys:rotate"),
        post("/api/keys/{w.dave_key.pk}/rotate", {"grace_hours": 1}),
        201,
        lambda w, r: ApiKey.objects.filter(rotated_from=w.dave_key).exists(),
        refused=hidden_without("api_keys:read"),
    ),
    Action(
        "revoke someone else's key",
        needs("api_keys:revoke"),
        delete("/api/keys/{w.dave_key.pk}?reason=left"),
        200,
        lambda w, r: w.reload(w.dave_key).revoked_at is not None,
        refused=hidden_without("api_keys:read"),
    ),
    # Roles
    Action("list roles", needs("roles:read"), get("/api/roles"), 200, _lists("ops")),
    Action(
        "read a role's history",
        needs("roles:read"),
        get("/api/roles/{w.ops.pk}/revisions"),
        200,
        lambda w, r: r.status_code == 200 and [v["version"] for v in r.json()] == [1],
    ),
    Action(
        "define a role",
        needs("roles:create", "models:read"),
        post("/api/roles", {"name": "Readers", "slug": "readers", "permissions": ["models:read"]}),
        201,
        created(Role, slug="readers"),
    ),
    Action(
        "change a role",
        needs("roles:update"),
        patch("/api/roles/{w.ops.pk}", {"description": "Runs things"}),
        200,
        changed("ops", "description", "Runs things"),
    ),
    Action(
        "delete a role",
        needs("roles:delete"),
        delete("/api/roles/{w.ops.pk}"),
        204,
        gone("ops"),
    ),
    Action(
        "give someone the Developer role in a team",
        needs("roles:assign", *DEVELOPER),
        lambda c, w: c.post(
            "/api/roles/assignments",
            {
                "user_id": w.dave.pk,
                "role_id": Role.objects.get(slug="developer").pk,
                "team_id": w.team_a.pk,
            },
            content_type=JSON,
        ),
        201,
        lambda w, r: RoleAssignment.objects.filter(
            user=w.dave, role__slug="developer", team=w.team_a
        ).exists(),
    ),
    Action(
        "give someone the Viewer role",
        needs("roles:assign", *EXPECTED["viewer"].everywhere),
        lambda c, w: c.post(
            "/api/roles/assignments",
            {"user_id": w.dave.pk, "role_id": Role.objects.get(slug="viewer").pk},
            content_type=JSON,
        ),
        201,
        lambda w, r: RoleAssignment.objects.filter(user=w.dave, role__slug="viewer").exists(),
    ),
    Action(
        "take the Developer role away",
        needs("roles:assign", *DEVELOPER),
        lambda c, w: c.delete(
            "/api/roles/assignments/"
            f"{RoleAssignment.objects.get(user=w.dave, role__slug='developer', team=None).pk}"
        ),
        204,
        lambda w, r: (
            not RoleAssignment.objects.filter(user=w.dave, role__slug="developer").exists()
        ),
    ),
    Action(
        "export roles",
        needs("roles:read"),
        get("/api/roles/export"),
        200,
        lambda w, r: r.status_code == 200 and "ops" in [x["slug"] for x in r.json()["roles"]],
    ),
    Action(
        "import roles",
        needs("roles:create", "roles:update", "models:read"),
        post(
            "/api/roles/import",
            {
                "format": roles.EXPORT_FORMAT,
                "roles": [{"slug": "imported", "name": "Imported", "permissions": ["models:read"]}],
            },
        ),
        200,
        created(Role, slug="imported"),
    ),
    # Settings
    Action(
        "read settings",
        needs("settings:read"),
        get("/api/settings"),
        200,
        lambda w, r: (
            r.status_code == 200 and "keys.rotation_grace_hours" in [s["key"] for s in r.json()]
        ),
    ),
    Action(
        "change a setting",
        needs("settings:update"),
        patch("/api/settings", {"keys.rotation_grace_hours": 5}),
        200,
        created(RuntimeSetting, key="keys.rotation_grace_hours"),
    ),
]

# A few operations also through a console key rather than a session.
BY_KEY = {"list providers", "delete a provider", "rotate someone else's key", "define a role"}

CELLS = [
    pytest.param(name, action, *action.expected(EXPECTED[name]), id=f"{name}-{action.name}")
    for name in HOLDERS
    for action in ACTIONS
]
KEY_CELLS = [
    pytest.param(name, action, *action.expected(EXPECTED[name]), id=f"{name}-{action.name}")
    for name in HOLDERS
    for action in ACTIONS
    if action.name in BY_KEY
]


@pytest.fixture(scope="module")
def stage(django_db_setup: None, django_db_blocker: Any) -> Iterator[Stage]:
    with staged(django_db_blocker) as built:
        yield built


@pytest.fixture
def world(stage: Stage, db: None) -> World:
    return stage.world


@pytest.mark.parametrize(("name", "action", "status", "allowed"), CELLS)
def test_each_role_may_use_the_api_exactly_as_its_permissions_say(
    stage: Stage, world: World, name: str, action: Action, status: int, allowed: bool
) -> None:
    client = stage.clients[name]

    response = action.call(client, world)

    assert response.status_code == status, response.content
    assert action.done(world, response) is allowed


@pytest.mark.parametrize(("name", "action", "status", "allowed"), KEY_CELLS)
def test_a_console_key_carries_its_owners_rights(
    stage: Stage, world: World, name: str, action: Action, status: int, allowed: bool
) -> None:
    client = console_key(stage.people[name])

    response = action.call(client, world)

    assert response.status_code == status, response.content
    assert action.done(world, response) is allowed


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_the_matrix_has_an_allowed_and_a_refused_cell_for_every_operation(action: Action) -> None:
    outcomes = {action.expected(EXPECTED[name])[1] for name in HOLDERS}

    assert outcomes == {True, False}


# --- Spot checks, typed by hand: the derivation above cannot make these pass vacuously ---


def test_a_viewer_reads_providers_but_cannot_delete_one(stage: Stage, world: World) -> None:
    client = stage.clients["viewer"]

    assert client.get("/api/providers").status_code == 200
    assert client.delete(f"/api/providers/{world.spare_provider.pk}").status_code == 403
    assert Provider.objects.filter(pk=world.spare_provider.pk).exists()


def test_a_developer_cannot_see_providers_or_users(stage: Stage, world: World) -> None:
    client = stage.clients["developer"]

    assert client.get("/api/providers").status_code == 403
    assert client.get("/api/users").status_code == 403


def test_an_admin_cannot_define_roles_or_change_settings(stage: Stage, world: World) -> None:
    client = stage.clients["admin"]

    refused_role = client.post(
        "/api/roles", {"name": "X", "slug": "x", "permissions": []}, content_type=JSON
    )
    refused_setting = client.patch(
        "/api/settings", {"keys.rotation_grace_hours": 5}, content_type=JSON
    )

    assert (refused_role.status_code, refused_setting.status_code) == (403, 403)
    assert "roles:create" in refused_role.json()["detail"]


def test_an_admin_deletes_a_provider(stage: Stage, world: World) -> None:
    client = stage.clients["admin"]

    assert client.delete(f"/api/providers/{world.spare_provider.pk}").status_code == 204


def test_a_developer_manages_their_own_keys_without_any_api_keys_right(
    stage: Stage, world: World
) -> None:
    dave = person("dave2", ("developer", None))
    client = session(dave)
    key = client.post("/api/keys", {"name": "mine"}, content_type=JSON).json()

    rotated = client.post(f"/api/keys/{key['id']}/rotate", {}, content_type=JSON)
    revoked = client.delete(f"/api/keys/{key['id']}?reason=done")

    assert (rotated.status_code, revoked.status_code) == (201, 200)
    assert not Rights.of(dave).has("api_keys:rotate")


def test_an_account_without_console_rights_cannot_use_the_api(stage: Stage, world: World) -> None:
    nobody = person("nobody")

    assert session(nobody).get("/api/keys").status_code == 401
    assert console_key(nobody).get("/api/keys").status_code == 403


def test_the_expected_rights_come_from_the_role_definitions() -> None:
    assert EXPECTED["team-manager"].has("api_keys:revoke")
    assert not EXPECTED["team-manager"].has("limits:update")
    assert not EXPECTED["admin"].has("roles:create")
    assert EXPECTED["viewer"].has("settings:read")
    assert not EXPECTED["viewer"].has("ai_gateway:use")


def test_the_export_is_json(stage: Stage, world: World) -> None:
    response = stage.clients["viewer"].get("/api/roles/export")

    assert json.loads(response.content)["format"] == roles.EXPORT_FORMAT
