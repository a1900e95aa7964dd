"""The permission strings roles are built from, and the five built-in roles.

A permission is `<area>:<action>`. A role lists permissions and patterns over them:
`*` (everything), `<area>:*` (every action of an area); `!` in front denies, and a denial
in any role a user holds wins over every grant (within the denial's scope: a global
role's denial holds everywhere, a team role's denial within that team).

`docs/permissions.md` is generated from this module's `CATALOGUE` (a test keeps it true).
"""

from collections.abc import Iterable
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError

# (permission, what it allows, whether a team-scoped role assignment can carry it)
CATALOGUE: tuple[tuple[str, str, bool], ...] = (
    ("api_keys:read", "See API keys (of the team, for a team role) and their usage.", True),
    ("api_keys:create", "Issue API keys for oneself or, with users:read, for others.", True),
    ("api_keys:update", "Change a key's name, models, tools, surfaces and expiry.", True),
    ("api_keys:rotate", "Rotate a key (its successor is shown once).", True),
    ("api_keys:revoke", "Revoke a key, with a reason.", True),
    ("teams:read", "See teams.", True),
    ("teams:create", "Create teams.", False),
    ("teams:update", "Rename and describe a team.", True),
    ("teams:delete", "Delete teams.", False),
    ("members:read", "See who is in a team.", True),
    ("members:manage", "Add people to and remove them from a team.", True),
    ("users:read", "See user accounts.", True),
    ("users:create", "Create user accounts.", False),
    ("users:update", "Change, deactivate and sign out user accounts.", False),
    ("users:delete", "Delete user accounts.", False),
    ("roles:read", "See roles, their permissions and their history.", True),
    ("roles:create", "Create custom roles (only from permissions one holds).", False),
    ("roles:update", "Change custom roles (only with permissions one holds).", False),
    ("roles:delete", "Delete custom roles.", False),
    ("roles:assign", "Give roles to people (only roles whose rights one holds).", True),
    ("providers:read", "See providers (never their secrets).", False),
    ("providers:create", "Add providers.", False),
    ("providers:update", "Change providers and their credentials.", False),
    ("providers:delete", "Delete providers.", False),
    ("models:read", "See models and their prices.", False),
    ("models:create", "Add models.", False),
    ("models:update", "Change models, prices and kill switches.", False),
    ("models:delete", "Delete models.", False),
    ("routes:read", "See routes from models to providers.", False),
    ("routes:create", "Add routes.", False),
    ("routes:update", "Change route weights and targets.", False),
    ("routes:delete", "Delete routes.", False),
    ("mcp_servers:read", "See MCP servers (never their secrets).", False),
    ("mcp_servers:create", "Register MCP servers.", False),
    ("mcp_servers:update", "Change MCP servers and their credentials.", False),
    ("mcp_servers:delete", "Remove MCP servers.", False),
    ("mcp_connections:read", "See other people's MCP account connections.", False),
    ("mcp_connections:manage", "Remove other people's MCP account connections.", False),
    ("limits:read", "See rate limits and budgets (of the team, for a team role).", True),
    ("limits:update", "Set, change and reset rate limits and budgets.", True),
    ("settings:read", "See runtime settings and sign-in (SSO) configuration.", False),
    ("settings:update", "Change runtime settings and sign-in (SSO) configuration.", False),
    ("logs:read_own", "See one's own gateway and MCP records and usage.", True),
    ("logs:read_team", "See the records and usage of one's teams.", True),
    ("logs:read_all", "See every gateway and MCP record and all usage.", False),
    ("audit:read", "See the admin audit log (who changed what).", False),
    ("audit:read_bodies", "See captured request and response bodies.", False),
    ("ai_gateway:use", "Call the AI gateway with one's keys.", True),
    ("mcp_gateway:use", "Call the MCP gateway with one's keys.", True),
)

ALL: frozenset[str] = frozenset(name for name, _, _ in CATALOGUE)
TEAM_SCOPABLE: frozenset[str] = frozenset(name for name, _, scoped in CATALOGUE if scoped)
GATEWAY: frozenset[str] = frozenset({"ai_gateway:use", "mcp_gateway:use"})
CONSOLE: frozenset[str] = ALL - GATEWAY


def expand(patterns: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(granted, denied) permission names a list of patterns stands for."""
    granted: set[str] = set()
    denied: set[str] = set()
    for pattern in patterns:
        target = denied if pattern.startswith("!") else granted
        target.update(p for p in ALL if fnmatchcase(p, pattern.lstrip("!")))
    return frozenset(granted), frozenset(denied)


def validate_permissions(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError(
            'Give a list of permissions, e.g. ["api_keys:*", "!api_keys:revoke"].'
        )
    unknown = [p for p in value if not any(fnmatchcase(n, p.lstrip("!")) for n in ALL)]
    if unknown:
        raise ValidationError(
            f"Not a permission: {', '.join(unknown)}. See docs/permissions.md for the list."
        )


def _all_but(*excluded: str) -> list[str]:
    return sorted(p for p in ALL if not any(fnmatchcase(p, e) for e in excluded))


# Built-in roles (slug -> name, description, permissions). They hold no denials, so that
# holding one never takes away what another role gives.
BUILTIN_ROLES: dict[str, tuple[str, str, list[str]]] = {
    "super-admin": ("Super Admin", "Everything, including roles and settings.", ["*"]),
    "admin": (
        "Admin",
        "Runs the installation day to day: everything but defining roles, runtime settings "
        "and reading captured bodies.",
        _all_but(
            "roles:create", "roles:update", "roles:delete", "settings:update", "audit:read_bodies"
        ),
    ),
    "team-manager": (
        "Team Manager",
        "Manages a team: its members, keys, limits and usage. Assign it per team.",
        [
            "api_keys:*",
            "teams:read",
            "teams:update",
            "members:*",
            "users:read",
            "roles:read",
            "roles:assign",
            "limits:read",
            "logs:read_own",
            "logs:read_team",
            "models:read",
            "mcp_servers:read",
            "ai_gateway:use",
            "mcp_gateway:use",
        ],
    ),
    "developer": (
        "Developer",
        "Uses the gateways with keys of their own and sees their own usage.",
        [
            "api_keys:create",
            "teams:read",
            "models:read",
            "mcp_servers:read",
            "limits:read",
            "logs:read_own",
            "ai_gateway:use",
            "mcp_gateway:use",
        ],
    ),
    "viewer": (
        "Viewer",
        "Reads configuration and their teams' usage; cannot call the gateways.",
        [p for p in sorted(ALL) if p.endswith(":read")] + ["logs:read_own", "logs:read_team"],
    ),
}


def markdown() -> str:
    """docs/permissions.md, generated from this module (`manage.py permissions_doc`)."""
    lines = [
        "# Permissions",
        "",
        "<!-- Generated from accounts/permissions.py by `manage.py permissions_doc`; a test",
        "     fails when this file and the code differ. -->",
        "",
        "Roles are lists of permission strings. In a role, `*` stands for every permission and",
        "`<area>:*` for every action of an area; `!` in front denies. A user's rights are the",
        "union of their roles' grants minus every denial: **a denial in any role wins**.",
        "",
        "Roles are assigned **globally** (the role holds everywhere) or **per team** (its",
        "team-scopable rights hold for that team's keys, members, limits and records only; a",
        "Team Manager of team A cannot touch team B). A denial in a global role holds",
        "everywhere; a denial in a team role holds in that team. Superusers hold everything.",
        "",
        "Nobody grants a right they don't hold: defining or importing a role needs every",
        "permission it grants; assigning one needs `roles:assign` and every permission the",
        "role grants, in the scope of the assignment. Every role change is a new version",
        "with who made it (`GET /api/roles/{id}/revisions`, the role's page in the",
        "console); custom roles are exported and imported as JSON (`/api/roles/export`,",
        "`/api/roles/import`). Nor does anyone change, disable or delete an account holding",
        "rights they lack (its password would hand them over); only a superuser touches a",
        "superuser.",
        "",
        "Everyone may always see and manage their own API keys and MCP connections. Holding",
        "any permission other than the two `*_gateway:use` ones opens the console.",
        "`ai_gateway:use` and `mcp_gateway:use` are checked by the gateway on every request",
        "(for the key's owner, in the key's team); service keys (no owner) are governed by",
        "their surfaces alone.",
        "",
        "## Permission strings",
        "",
        "| Permission | Allows | Per team |",
        "|---|---|---|",
    ]
    for name, text, scoped in CATALOGUE:
        lines.append(f"| `{name}` | {text} | {'yes' if scoped else 'no'} |")
    lines += ["", "## Built-in roles", ""]
    lines.append(
        "Their permissions are defined by ThinkWatch and cannot be edited; new accounts hold"
    )
    lines.append(
        "the role named by the `accounts.default_role` runtime setting (Developer by default)."
    )
    lines += ["", "| Role | Slug | Description | Permissions |", "|---|---|---|---|"]
    for slug, (name, description, perms) in BUILTIN_ROLES.items():
        shown = ", ".join(f"`{p}`" for p in perms)
        lines.append(f"| {name} | `{slug}` | {description} | {shown} |")
    return "\n".join(lines) + "\n"
