"""The pieces of the permission matrix: personas holding one built-in role each, the world
they act on, what each role may do (derived from accounts/permissions.py, not typed by
hand), and the console's forms read back as the POST data a browser would send."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpResponse
from django.test import Client

from accounts import access, deletion, permissions, roles
from accounts.access import Rights
from accounts.models import ApiKey, Role, RoleAssignment, Team
from mcpgw.models import McpServer
from providers.models import AIModel, Provider, Route
from quotas.models import Budget, RateLimitRule
from tests.factories import (
    AIModelFactory,
    BudgetFactory,
    McpServerFactory,
    ProviderFactory,
    RateLimitRuleFactory,
    RouteFactory,
    TeamFactory,
    UserFactory,
    make_key,
)

# An address the MCP SSRF guard accepts without DNS; nothing connects to it here.
PUBLIC_MCP_URL = "https://1.1.1.1/mcp"

# The matrix's columns: each built-in role, a superuser, and an auditor who holds one
# console right (audit:read) and nothing else, so every operation has a refused cell.
HOLDERS = (*permissions.BUILTIN_ROLES, "superuser", "auditor")


def rights_of_role(slug: str) -> Rights:
    """What holding built-in role `slug` globally gives, straight from its definition."""
    granted, denied = permissions.expand(permissions.BUILTIN_ROLES[slug][2])
    return Rights(everywhere=granted - denied)


EXPECTED: dict[str, Rights] = {
    **{slug: rights_of_role(slug) for slug in permissions.BUILTIN_ROLES},
    "superuser": Rights(superuser=True),
    "auditor": Rights(everywhere=frozenset({"audit:read"})),
}


def person(username: str, *roles_held: tuple[str | Role, Team | None]) -> User:
    """A user holding exactly these roles (built-in slugs or Role rows), each globally or in
    a team; the default role new accounts get is taken away first."""
    user = UserFactory(username=f"{username}@example.com")
    user.role_assignments.all().delete()
    for role, team in roles_held:
        held = access.builtin_role(role) if isinstance(role, str) else role
        RoleAssignment.objects.create(user=user, role=held, team=team)
    return User.objects.get(pk=user.pk)


def holder(name: str) -> User:
    """A persona for one column of the matrix: a built-in role held globally, a superuser
    with no role at all, or the auditor."""
    if name == "superuser":
        user = UserFactory(username="root@example.com", is_superuser=True)
        user.role_assignments.all().delete()
        return User.objects.get(pk=user.pk)
    if name == "auditor":
        return person(name, (custom_role("auditors", ["audit:read"]), None))
    return person(name, (name, None))


class Persona(Client):
    """A test client that remembers whom it acts for."""

    def __init__(self, user: User, **defaults: Any) -> None:
        super().__init__(**defaults)
        self.user = user


def session(user: User) -> Persona:
    client = Persona(user)
    client.force_login(user)
    return client


def console_key(user: User) -> Persona:
    """A management API client authenticated by a `tw-` key with the console surface."""
    _, plaintext = make_key(user, name="console", surfaces=["console"])
    return Persona(user, HTTP_AUTHORIZATION=f"Bearer {plaintext}")


def custom_role(slug: str, perms: list[str], by: User | None = None) -> Role:
    return roles.save(Role(name=slug.title(), slug=slug, permissions=perms), by, "created")


@dataclass
class World:
    """Everything the personas act on. Team A holds Dave and his key, team B Erin and hers;
    `spare_*` objects have nothing depending on them, so they can be deleted."""

    team_a: Team
    team_b: Team
    empty_team: Team
    dave: User
    erin: User
    gina: User  # in no team, holding no key
    dave_key: ApiKey
    erin_key: ApiKey
    provider: Provider
    spare_provider: Provider
    model: AIModel
    spare_model: AIModel
    route: Route
    server: McpServer
    rule: RateLimitRule
    budget: Budget
    ops: Role
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reload(self, obj: Any) -> Any:
        """The object as stored now, or None if it was deleted."""
        found = type(obj).objects.filter(pk=obj.pk)
        if isinstance(obj, User):
            found = deletion.live(found)  # deleting an account is a soft delete
        return found.first()

    def form(self, url: str, /, **changes: Any) -> dict[str, Any]:
        """The POST a browser sends from this console page as a superuser sees it, with
        `changes` typed in (None leaves a field out: an unticked box). Each page is read
        once: every test starts from the same world."""
        if url not in self.pages:
            superuser = User.objects.get(username="root@example.com")
            self.pages[url] = form_data(session(superuser).get(url))
        return {k: v for k, v in {**self.pages[url], **changes}.items() if v is not None}


def build_world() -> World:
    team_a, team_b = TeamFactory(name="A"), TeamFactory(name="B")
    dave, erin = UserFactory(username="dave@example.com"), UserFactory(username="erin@example.com")
    team_a.members.add(dave)
    team_b.members.add(erin)
    provider = ProviderFactory(name="openai")
    model = AIModelFactory(model_id="gpt-4o-mini")
    return World(
        team_a=team_a,
        team_b=team_b,
        empty_team=TeamFactory(name="Empty"),
        dave=dave,
        erin=erin,
        gina=UserFactory(username="gina@example.com"),
        dave_key=make_key(dave, name="dave laptop", team=team_a)[0],
        erin_key=make_key(erin, name="erin laptop", team=team_b)[0],
        provider=provider,
        spare_provider=ProviderFactory(name="spare"),
        model=model,
        spare_model=AIModelFactory(model_id="spare-model"),
        route=RouteFactory(model=model, provider=provider, weight=100),
        server=McpServerFactory(name="GitHub", prefix="github"),
        rule=RateLimitRuleFactory(subject_kind="user", subject_id=str(dave.pk), limit=10),
        budget=BudgetFactory(subject_kind="user", subject_id=str(dave.pk)),
        ops=custom_role("ops", ["models:read"]),
    )


@dataclass
class Stage:
    world: World
    people: dict[str, User]
    clients: dict[str, Persona]  # each persona, signed in


@contextmanager
def staged(django_db_blocker: Any) -> Iterator[Stage]:
    """The world and one signed-in persona per column, built once for a whole test module
    inside a transaction that is rolled back at its end. Each test runs in a savepoint
    within it (pytest-django's `db`), so what one test changes the next never sees."""
    with django_db_blocker.unblock(), transaction.atomic():
        world = build_world()
        people = {name: holder(name) for name in HOLDERS}
        yield Stage(world, people, {name: session(user) for name, user in people.items()})
        transaction.set_rollback(True)


@dataclass(frozen=True)
class Action:
    """One thing a persona tries. It is allowed exactly when the persona holds every
    permission in `needs`; `done` tells from the database (or the answer) whether it
    happened, so a refusal that still changed something fails."""

    name: str
    needs: frozenset[str]
    call: Callable[[Persona, World], HttpResponse]
    ok: int
    done: Callable[[World, HttpResponse], bool]
    # The status of a refusal for these rights (404 where the object is not even visible).
    refused: Callable[[Rights], int] = lambda rights: 403

    def expected(self, rights: Rights) -> tuple[int, bool]:
        allowed = rights.holds_all(self.needs)
        return (self.ok, True) if allowed else (self.refused(rights), False)


def needs(*perms: str) -> frozenset[str]:
    return frozenset(perms)


# What an action's `done` looks for.


def created(model: type, **lookup: Any) -> Callable[[World, HttpResponse], bool]:
    return lambda w, r: model.objects.filter(**lookup).exists()


def gone(attr: str) -> Callable[[World, HttpResponse], bool]:
    return lambda w, r: w.reload(getattr(w, attr)) is None


def changed(attr: str, field: str, value: Any) -> Callable[[World, HttpResponse], bool]:
    return lambda w, r: getattr(w.reload(getattr(w, attr)), field) == value


# --- The console's forms, read the way a browser submits them ----------------------------


class _FormReader(HTMLParser):
    """The fields of the page's change form (the admin's `<form id="..._form">`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: dict[str, list[str]] = {}
        self._in_form = False
        self._select: tuple[str, bool] | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id", "").endswith("_form"):
            self._in_form = True
        if not self._in_form or "disabled" in a:
            return
        name = a.get("name", "")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.setdefault(name, []).append(
                a.get("value", "on" if kind == "checkbox" else "")
            )
        elif tag == "select" and name:
            self._select, self._options = (name, "multiple" in a), []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select is not None:
            name, multiple = self._select
            chosen = [value for value, selected in self._options if selected]
            if not chosen and not multiple and self._options:
                chosen = [self._options[0][0]]
            self.fields.setdefault(name, []).extend(chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.setdefault(self._textarea, []).append(self._text.lstrip("\n"))
            self._textarea = None


def form_data(page: HttpResponse, **changes: Any) -> dict[str, Any]:
    """The POST a browser sends from this admin page, with `changes` typed in."""
    assert page.status_code == 200, page.status_code
    reader = _FormReader()
    reader.feed(page.content.decode())
    assert "csrfmiddlewaretoken" in reader.fields, "no admin change form on the page"
    data: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in reader.fields.items()}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}
