"""Each built-in role against the console's pages: list, add, change and delete pages (and
the key, role and settings pages of their own) open, and their forms save, exactly when the
role's permission list holds what the page needs; a refused POST changes nothing.

Forms are posted as a browser would send them: read from the page a superuser sees, with
a few fields typed in (tests/accounts/access_matrix.py: World.form)."""

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse

from accounts import roles
from accounts.models import ApiKey, Role, RoleAssignment, Team
from mcpgw.models import McpServer
from providers.models import AIModel, Provider, Route
from quotas.models import Budget, RateLimitRule
from tests.accounts.access_matrix import (
    EXPECTED,
    HOLDERS,
    PUBLIC_MCP_URL,
    Action,
    Persona,
    Stage,
    World,
    changed,
    created,
    gone,
    needs,
    session,
    staged,
)
from tests.factories import make_key

pytestmark = pytest.mark.django_db

VIEWER = tuple(sorted(EXPECTED["viewer"].everywhere))


def errors(response: HttpResponse) -> list[str]:
    """What a re-rendered form complains about (for assertion messages)."""
    found = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode())
    return found or [response.content.decode()[:300]]


def change_url(obj: Any) -> str:
    meta = obj._meta
    return f"/admin/{meta.app_label}/{meta.model_name}/{obj.pk}/change/"


def add_url(model: type) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/add/"


def list_url(model: type) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def opens(url: str) -> Any:
    return lambda client, w: client.get(url)


def list_page(model: type) -> Any:
    return lambda client, w: client.get(list_url(model))


def links_to(attr: str) -> Any:
    """Whether the page links to the object (a list page lists it)."""
    return lambda w, r: r.status_code == 200 and change_url(getattr(w, attr)) in r.content.decode()


def adds(model: type, **typed: Any) -> Any:
    def call(client: Persona, w: World) -> HttpResponse:
        values = {k: v(w, client) if callable(v) else v for k, v in typed.items()}
        return client.post(add_url(model), w.form(add_url(model), **values))

    return call


def changes(attr: str, **typed: Any) -> Any:
    def call(client: Persona, w: World) -> HttpResponse:
        obj = getattr(w, attr)
        values = {k: v(w, client) if callable(v) else v for k, v in typed.items()}
        return client.post(change_url(obj), w.form(change_url(obj), **values))

    return call


def deletes(attr: str) -> Any:
    def call(client: Persona, w: World) -> HttpResponse:
        return client.post(
            change_url(getattr(w, attr)).replace("/change/", "/delete/"), {"post": "yes"}
        )

    return call


def _shown(r: HttpResponse) -> bool:
    return r.status_code == 200


def hidden_without(perm: str, hidden: int) -> Any:
    """The console answers for an object outside the list a user may see as if it did not
    exist (`hidden`: a redirect to the index, or 404)."""
    return lambda rights: 403 if rights.has(perm) else hidden


def _import_file(client: Persona, w: World) -> HttpResponse:
    document = {
        "format": roles.EXPORT_FORMAT,
        "roles": [{"slug": "imported", "name": "Imported", "permissions": ["models:read"]}],
    }
    upload = SimpleUploadedFile("roles.json", json.dumps(document).encode())
    return client.post("/admin/accounts/role/import/", {"file": upload})


ACTIONS = [
    # Providers, models, routes
    Action(
        "list providers", needs("providers:read"), list_page(Provider), 200, links_to("provider")
    ),
    Action(
        "open the add-provider page",
        needs("providers:create"),
        opens(add_url(Provider)),
        200,
        lambda w, r: _shown(r),
    ),
    Action(
        "add a provider",
        needs("providers:create"),
        adds(Provider, name="new", type="openai", api_key="sk-x"),
        302,
        created(Provider, name="new"),
    ),
    Action(
        "change a provider",
        needs("providers:update"),
        changes("provider", enabled=None),
        302,
        changed("provider", "enabled", False),
    ),
    Action(
        "delete a provider",
        needs("providers:delete"),
        deletes("spare_provider"),
        302,
        gone("spare_provider"),
    ),
    Action("list models", needs("models:read"), list_page(AIModel), 200, links_to("model")),
    Action(
        "add a model",
        needs("models:create"),
        adds(AIModel, model_id="new-model"),
        302,
        created(AIModel, model_id="new-model"),
    ),
    Action(
        "change a model",
        needs("models:update"),
        changes("model", display_name="Mini"),
        302,
        changed("model", "display_name", "Mini"),
    ),
    Action(
        "delete a model", needs("models:delete"), deletes("spare_model"), 302, gone("spare_model")
    ),
    Action(
        "add a route on a model's page",
        needs("models:update", "routes:create"),
        changes(
            "model", **{"routes-1-provider": lambda w, c: w.spare_provider.pk, "routes-1-weight": 5}
        ),
        302,
        created(Route, weight=5),
    ),
    Action(
        "delete a route on a model's page",
        needs("models:update", "routes:delete"),
        changes("model", **{"routes-0-DELETE": "on"}),
        302,
        gone("route"),
    ),
    # MCP servers
    Action(
        "list MCP servers", needs("mcp_servers:read"), list_page(McpServer), 200, links_to("server")
    ),
    Action(
        "add an MCP server",
        needs("mcp_servers:create"),
        adds(McpServer, name="Linear", prefix="linear", url=PUBLIC_MCP_URL),
        302,
        created(McpServer, prefix="linear"),
    ),
    Action(
        "change an MCP server",
        needs("mcp_servers:update"),
        changes("server", description="Issues"),
        302,
        changed("server", "description", "Issues"),
    ),
    Action(
        "delete an MCP server", needs("mcp_servers:delete"), deletes("server"), 302, gone("server")
    ),
    # Limits and budgets
    Action(
        "list rate limits", needs("limits:read"), list_page(RateLimitRule), 200, links_to("rule")
    ),
    Action(
        "add a rate limit",
        needs("limits:update"),
        adds(
            RateLimitRule,
            subject_kind="user",
            subject_id=lambda w, c: str(w.erin.pk),
            window=3600,
            limit=5,
        ),
        302,
        created(RateLimitRule, limit=5),
    ),
    Action(
        "change a rate limit",
        needs("limits:update"),
        changes("rule", limit=99),
        302,
        changed("rule", "limit", 99),
    ),
    Action("delete a rate limit", needs("limits:update"), deletes("rule"), 302, gone("rule")),
    Action(
        "add a budget",
        needs("limits:update"),
        adds(Budget, subject_kind="user", subject_id=lambda w, c: str(w.erin.pk), limit="25"),
        302,
        created(Budget, limit=25),
    ),
    # Teams and members
    Action("list teams", needs("teams:read"), list_page(Team), 200, links_to("team_a")),
    Action(
        "add a team", needs("teams:create"), adds(Team, name="New"), 302, created(Team, name="New")
    ),
    Action(
        "change a team",
        needs("teams:update"),
        changes("team_a", description="Platform"),
        302,
        changed("team_a", "description", "Platform"),
    ),
    Action(
        "delete a team",
        needs("teams:delete"),
        deletes("empty_team"),
        302,
        gone("empty_team"),
    ),
    Action(
        "add a member on a team's page",
        needs("teams:update", "members:manage"),
        changes("team_a", **{"membership_set-1-user": lambda w, c: w.erin.pk}),
        302,
        lambda w, r: w.team_a.members.filter(pk=w.erin.pk).exists(),
    ),
    # Users
    Action("list users", needs("users:read"), list_page(User), 200, links_to("dave")),
    Action(
        "add a user",
        needs("users:create"),
        adds(
            User,
            username="frank@example.com",
            password1="Sup3r-secret-pw!",
            password2="Sup3r-secret-pw!",
        ),
        302,
        created(User, username="frank@example.com"),
    ),
    Action(
        "change a user",
        needs("users:update"),
        changes("dave", first_name="Dave"),
        302,
        changed("dave", "first_name", "Dave"),
    ),
    # Not Dave: nobody deletes an account holding keys in the console (keys are not
    # deleted there, they are revoked); the API deletes it with its keys.
    Action("delete a user", needs("users:delete"), deletes("gina"), 302, gone("gina")),
    Action(
        "give someone the Viewer role on their page",
        needs("users:update", "roles:assign", *VIEWER),
        changes(
            "dave", **{"role_assignments-1-role": lambda w, c: Role.objects.get(slug="viewer").pk}
        ),
        302,
        lambda w, r: RoleAssignment.objects.filter(user=w.dave, role__slug="viewer").exists(),
    ),
    # Keys: everyone sees and manages their own; others' need the api_keys rights.
    Action(
        "see other people's keys in the list",
        needs("api_keys:read"),
        list_page(ApiKey),
        200,
        links_to("dave_key"),
        refused=lambda rights: 200,
    ),
    Action(
        "add a key for oneself",
        needs("api_keys:create"),
        adds(ApiKey, name="mine", owner=lambda w, c: c.user.pk, allowed_models="*"),
        302,  # to the page that shows the new key's secret, once
        created(ApiKey, name="mine"),
    ),
    Action(
        "add a key for someone else",
        needs("api_keys:create", "users:read"),
        adds(ApiKey, name="for dave", owner=lambda w, c: w.dave.pk, allowed_models="*"),
        302,
        created(ApiKey, name="for dave"),
        # With api_keys:create the page opens and the form says what is wrong.
        refused=lambda rights: 200 if rights.has("api_keys:create") else 403,
    ),
    Action(
        "change someone else's key",
        needs("api_keys:update"),
        changes("dave_key", name="renamed"),
        302,
        changed("dave_key", "name", "renamed"),
    ),
    Action(
        "rotate someone else's key",
        needs("api_keys:rotate"),
        lambda c, w: c.post(f"/admin/accounts/apikey/{w.dave_key.pk}/rotate/", {"grace_hours": 1}),
        302,  # to the successor's secret, shown once
        lambda w, r: ApiKey.objects.filter(rotated_from=w.dave_key).exists(),
        refused=hidden_without("api_keys:read", 404),
    ),
    Action(
        "revoke someone else's key",
        needs("api_keys:revoke"),
        lambda c, w: c.post(f"/admin/accounts/apikey/{w.dave_key.pk}/revoke/", {"reason": "left"}),
        302,
        lambda w, r: w.reload(w.dave_key).revoked_at is not None,
        refused=hidden_without("api_keys:read", 404),
    ),
    # Roles
    Action("list roles", needs("roles:read"), list_page(Role), 200, links_to("ops")),
    Action(
        "define a role",
        needs("roles:create", "models:read"),
        adds(Role, name="Readers", slug="readers", permissions="models:read"),
        302,
        created(Role, slug="readers"),
    ),
    Action(
        "change a role",
        needs("roles:update"),
        changes("ops", description="Runs things"),
        302,
        changed("ops", "description", "Runs things"),
    ),
    Action("delete a role", needs("roles:delete"), deletes("ops"), 302, gone("ops")),
    Action(
        "export roles",
        needs("roles:read"),
        opens("/admin/accounts/role/export/"),
        200,
        lambda w, r: r.status_code == 200 and b'"ops"' in r.content,
    ),
    Action(
        "import roles",
        needs("roles:create", "roles:update", "models:read"),
        _import_file,
        302,
        created(Role, slug="imported"),
    ),
    # Settings
    Action(
        "open the settings page",
        needs("settings:read"),
        opens("/admin/settings/"),
        200,
        lambda w, r: _shown(r),
    ),
]

CELLS = [
    pytest.param(name, action, *action.expected(EXPECTED[name]), id=f"{name}-{action.name}")
    for name in HOLDERS
    for action in ACTIONS
]


@pytest.fixture(scope="module")
def stage(django_db_setup: None, django_db_blocker: Any) -> Iterator[Stage]:
    with staged(django_db_blocker) as built:
        yield built


@pytest.fixture
def world(stage: Stage, db: None) -> World:
    return stage.world


@pytest.mark.parametrize(("name", "action", "status", "allowed"), CELLS)
def test_each_role_may_use_the_console_exactly_as_its_permissions_say(
    stage: Stage, world: World, name: str, action: Action, status: int, allowed: bool
) -> None:
    client = stage.clients[name]

    response = action.call(client, world)

    assert response.status_code == status, errors(response)
    assert action.done(world, response) is allowed


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_the_console_matrix_has_an_allowed_and_a_refused_cell_for_every_page(
    action: Action,
) -> None:
    outcomes = {action.expected(EXPECTED[name])[1] for name in HOLDERS}

    assert outcomes == {True, False}


# --- Spot checks, typed by hand ----------------------------------------------------------


def test_a_viewer_sees_the_provider_list_but_not_the_add_page(stage: Stage, world: World) -> None:
    client = stage.clients["viewer"]

    assert client.get("/admin/providers/provider/").status_code == 200
    assert client.get("/admin/providers/provider/add/").status_code == 403


def test_a_developer_cannot_open_the_user_list(stage: Stage, world: World) -> None:
    assert stage.clients["developer"].get("/admin/auth/user/").status_code == 403


def test_an_admin_cannot_open_the_import_page(stage: Stage, world: World) -> None:
    assert stage.clients["admin"].get("/admin/accounts/role/import/").status_code == 403


def test_a_developer_sees_their_own_keys_in_the_console(stage: Stage, world: World) -> None:
    developer = stage.people["developer"]
    own, _ = make_key(developer, name="own")

    page = session(developer).get("/admin/accounts/apikey/")

    assert page.status_code == 200
    assert change_url(own) in page.content.decode()
    assert change_url(world.dave_key) not in page.content.decode()
