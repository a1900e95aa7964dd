"""Who may do what: the rights a user's roles give, where they hold, and the checks.

Roles (with their permission patterns) and role assignments are the source of truth.
`sync` turns them into a user's *effective* rights and stores those the Django way: global
rights as the user's model permissions on Team, team-scoped rights as django-guardian
object permissions on each team. Checks read that store (`Rights.of`), two queries per
request at most.

Rules:
- a global assignment's grants hold everywhere; its denials too;
- a team assignment's grants hold within that team, and only for permissions that can be
  team-scoped (permissions.TEAM_SCOPABLE); its denials hold within that team;
- a denial wins over every grant in its scope; superusers hold everything;
- `is_staff` (may open the console) follows: any console right, anywhere.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q

from accounts import permissions
from accounts.models import Role, RoleAssignment, Team, TeamUserObjectPermission

APP = "accounts"


class Everywhere:
    """Stands for "every team" where a set of team ids is expected."""

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "Everywhere"


EVERYWHERE = Everywhere()


@dataclass
class Rights:
    superuser: bool = False
    everywhere: frozenset[str] = frozenset()
    # Teams where the user holds a team role: the full effective set there.
    teams: dict[int, frozenset[str]] = field(default_factory=dict)

    def has(self, perm: str, team_id: int | None = None) -> bool:
        if self.superuser:
            return True
        if team_id is not None and team_id in self.teams:
            return perm in self.teams[team_id]
        return perm in self.everywhere

    def anywhere(self, perm: str) -> bool:
        """Held globally or in at least one team."""
        return self.has(perm) or any(perm in rights for rights in self.teams.values())

    def teams_with(self, perm: str) -> Everywhere | set[int]:
        """The teams where `perm` holds: EVERYWHERE for a global right."""
        if self.has(perm):
            return EVERYWHERE  # a team role's denial may still exclude single teams
        return {team for team, rights in self.teams.items() if perm in rights}

    def excluded_teams(self, perm: str) -> set[int]:
        """Teams where a team role's denial takes away a right held globally."""
        if self.superuser or perm not in self.everywhere:
            return set()
        return {team for team, rights in self.teams.items() if perm not in rights}

    def holds_all(self, perms: Iterable[str], team_id: int | None = None) -> bool:
        return all(self.has(p, team_id) for p in perms)

    @property
    def console(self) -> bool:
        if self.superuser:
            return True
        scopes = [self.everywhere, *self.teams.values()]
        return any(rights & permissions.CONSOLE for rights in scopes)

    @classmethod
    def of(cls, user: Any) -> "Rights":
        """The stored rights of `user` (a User, or AnonymousUser), cached on the user
        object for the request."""
        if not user.is_authenticated or not user.is_active:
            return cls()
        cached = getattr(user, "_tw_rights", None)
        if cached is not None:
            return cached
        if user.is_superuser:
            rights = cls(superuser=True)
        else:
            prefix = APP + "."
            everywhere = frozenset(
                p[len(prefix) :]
                for p in user.get_all_permissions()
                if p.startswith(prefix) and p[len(prefix) :] in permissions.ALL
            )
            teams: dict[int, set[str]] = {}
            rows = TeamUserObjectPermission.objects.filter(user_id=user.pk).values_list(
                "content_object_id", "permission__codename"
            )
            for team_id, codename in rows:
                teams.setdefault(team_id, set()).add(codename)
            # A team role whose rights were all denied leaves no rows; remember the team.
            for team_id in RoleAssignment.objects.filter(
                user_id=user.pk, team__isnull=False
            ).values_list("team_id", flat=True):
                teams.setdefault(team_id, set())
            rights = cls(everywhere=everywhere, teams={t: frozenset(r) for t, r in teams.items()})
        user._tw_rights = rights
        return rights


# --- Deriving rights from roles -----------------------------------------------------------


def derive(user: User) -> Rights:
    """The effective rights `user`'s role assignments give (ignores the stored ones)."""
    if user.is_superuser:
        return Rights(superuser=True)
    allow: set[str] = set()
    deny: set[str] = set()
    team_allow: dict[int, set[str]] = {}
    team_deny: dict[int, set[str]] = {}
    for team_id, patterns in RoleAssignment.objects.filter(user=user).values_list(
        "team_id", "role__permissions"
    ):
        granted, denied = permissions.expand(patterns or [])
        if team_id is None:
            allow |= granted
            deny |= denied
        else:
            team_allow.setdefault(team_id, set()).update(granted & permissions.TEAM_SCOPABLE)
            team_deny.setdefault(team_id, set()).update(denied)
    everywhere = frozenset(allow - deny)
    teams = {
        team: frozenset((allow | granted) - deny - team_deny.get(team, set()))
        for team, granted in team_allow.items()
    }
    return Rights(everywhere=everywhere, teams=teams)


def _permission_ids() -> dict[str, int]:
    team_type = ContentType.objects.get_for_model(Team)
    return dict(Permission.objects.filter(content_type=team_type).values_list("codename", "id"))


@transaction.atomic
def sync(user: User) -> Rights:
    """Store what `user`'s roles give, as Django and guardian permissions."""
    rights = derive(user)
    ids = _permission_ids()
    team_type = ContentType.objects.get_for_model(Team)
    # Only this module's permissions are managed here; others a user may have stay.
    user.user_permissions.remove(
        *Permission.objects.filter(content_type=team_type, codename__in=permissions.ALL)
    )
    user.user_permissions.add(*(ids[p] for p in rights.everywhere if p in ids))
    TeamUserObjectPermission.objects.filter(user=user).delete()
    TeamUserObjectPermission.objects.bulk_create(
        TeamUserObjectPermission(user=user, permission_id=ids[p], content_object_id=team)
        for team, perms in rights.teams.items()
        for p in perms
        if p in ids
    )
    staff = rights.superuser or rights.console
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
    for attr in ("_perm_cache", "_user_perm_cache", "_tw_rights"):
        user.__dict__.pop(attr, None)
    return rights


def sync_holders(role: Role) -> None:
    """Re-derive the rights of everyone holding `role` (after the role changed)."""
    for user in User.objects.filter(role_assignments__role=role).distinct():
        sync(user)


# --- Checks used by the console and the API ------------------------------------------------


class Denied(Exception):
    """The caller lacks a right; the message says which, never more."""


def require(user: Any, perm: str, team_id: int | None = None) -> None:
    if not Rights.of(user).has(perm, team_id):
        where = f" in team {team_id}" if team_id is not None else ""
        raise Denied(f"You need the {perm} permission{where}.")


def team_filter(user: Any, perm: str, field_name: str = "team") -> Q:
    """A filter for objects with a team: those in teams where `perm` holds. Objects without a
    team need the global right. Matches nothing when the right is held nowhere."""
    rights = Rights.of(user)
    scope = rights.teams_with(perm)
    if isinstance(scope, Everywhere):
        excluded = rights.excluded_teams(perm)
        # Not Q(): an empty Q vanishes when OR-ed (`team_filter(...) | Q(owner=...)`).
        return ~Q(**{f"{field_name}__in": excluded}) if excluded else Q(pk__isnull=False)
    return Q(**{f"{field_name}__in": scope}) if scope else Q(pk__in=[])


def log_filter(user: Any, user_field: str = "user_id", team_field: str = "team_id") -> Q:
    """Which gateway/MCP records (and usage) `user` may see: all, their teams', their own."""
    rights = Rights.of(user)
    if rights.has("logs:read_all"):
        return Q(pk__isnull=False)
    condition = Q(pk__in=[])
    if rights.anywhere("logs:read_team"):
        scope = rights.teams_with("logs:read_team")
        member_of = set(user.teams.values_list("pk", flat=True))
        teams = member_of if isinstance(scope, Everywhere) else member_of | scope
        if isinstance(scope, Everywhere):
            teams -= rights.excluded_teams("logs:read_team")
        condition |= Q(**{f"{team_field}__in": teams})
    if rights.anywhere("logs:read_own") or rights.anywhere("logs:read_team"):
        condition |= Q(**{user_field: user.pk})
    return condition


def grantable(actor: Any, role: Role, team_id: int | None) -> str | None:
    """Why `actor` may not give `role` in this scope (global when `team_id` is None)."""
    rights = Rights.of(actor)
    if not rights.has("roles:assign", team_id):
        return "You need the roles:assign permission" + (
            f" in team {team_id}." if team_id is not None else "."
        )
    granted, _ = permissions.expand(role.permissions or [])
    if team_id is not None:
        granted &= permissions.TEAM_SCOPABLE
    missing = sorted(p for p in granted if not rights.has(p, team_id))
    if missing:
        return f"You cannot give rights you do not hold yourself: {', '.join(missing)}."
    return None


def definable(actor: Any, patterns: Iterable[str]) -> str | None:
    """Why `actor` may not put these permissions into a role (they must hold each one)."""
    rights = Rights.of(actor)
    granted, _ = permissions.expand(patterns)
    missing = sorted(p for p in granted if not rights.has(p))
    if missing:
        return f"You cannot define a role with rights you do not hold: {', '.join(missing)}."
    return None


def manageable(actor: Any, account: User) -> str | None:
    """Why `actor` may not change, disable, sign out or delete `account`: only a superuser
    touches a superuser, and nobody an account holding rights they lack (its password or
    e-mail would hand those rights over)."""
    if account.pk == getattr(actor, "pk", None):
        return None
    theirs, mine = derive(account), Rights.of(actor)  # derive: a disabled account's too
    if theirs.superuser and not mine.superuser:
        return "Only a superuser may change a superuser."
    missing = {p for p in theirs.everywhere if not mine.has(p)}
    missing |= {p for team, perms in theirs.teams.items() for p in perms if not mine.has(p, team)}
    if missing:
        return f"{account} holds rights you do not hold: {', '.join(sorted(missing))}."
    return None


# --- Built-in roles and the role new accounts get -----------------------------------------


def builtin_role(slug: str) -> Role:
    """A built-in role, recreated from permissions.BUILTIN_ROLES if it is missing."""
    name, description, perms = permissions.BUILTIN_ROLES[slug]
    role, _ = Role.objects.get_or_create(
        slug=slug,
        defaults={"name": name, "description": description, "permissions": perms, "builtin": True},
    )
    return role


def give_default_role(user: User) -> None:
    """New accounts hold the configured default role everywhere (none for superusers)."""
    from accounts.runtime import setting

    slug = setting("accounts.default_role")
    if user.is_superuser or not slug:
        return
    role = (
        builtin_role(slug)
        if slug in permissions.BUILTIN_ROLES
        else Role.objects.filter(slug=slug).first()
    )
    if role is not None:
        RoleAssignment.objects.get_or_create(user=user, role=role, team=None)


@dataclass(frozen=True)
class Problem:
    field: str  # "team" or "owner"
    message: str
    denied: bool  # a missing right (403) rather than an invalid choice (422)


def key_placement_problems(
    actor: Any, owner: Any, team: Team | None, *, placing: bool = True, assigning: bool = True
) -> list[Problem]:
    """Why `actor` may not issue a key (or move one: `placing`, or give it to someone else:
    `assigning`) for `owner` in `team`. The rule the API and the console share:
    api_keys:create where the key lives; users:read there for someone else's key; and only
    who may make the owner a member (members:manage) puts an outsider's key, and its spend,
    into a team — not any holder of a global api_keys:create, which every Developer has."""
    rights = Rights.of(actor)
    team_id = team.pk if team else None
    where = f" in {team}" if team else ""
    problems: list[Problem] = []
    if placing and not rights.has("api_keys:create", team_id):
        problems.append(Problem("team", f"You need the api_keys:create permission{where}.", True))
    outsider = (
        owner is not None and team is not None and not team.members.filter(pk=owner.pk).exists()
    )
    if outsider and not rights.has("members:manage", team_id):
        problems.append(Problem("owner", f"{owner} is not a member of {team}.", False))
    for_someone_else = owner is None or owner.pk != actor.pk
    if assigning and for_someone_else and not rights.has("users:read", team_id):
        message = f"You need the users:read permission{where} to issue keys for someone else."
        problems.append(Problem("owner", message, True))
    return problems
