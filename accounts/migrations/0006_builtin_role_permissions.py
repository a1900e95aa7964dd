"""Give the five built-in roles their permissions (frozen here as of this migration)."""

from django.db import migrations

BUILTIN = {
    "admin": (
        "Admin",
        "Runs the installation day to day: everything but defining roles, runtime settings "
        "and reading captured bodies.",
        [
            "ai_gateway:use",
            "api_keys:create",
            "api_keys:read",
            "api_keys:revoke",
            "api_keys:rotate",
            "api_keys:update",
            "audit:read",
            "limits:read",
            "limits:update",
            "logs:read_all",
            "logs:read_own",
            "logs:read_team",
            "mcp_connections:manage",
            "mcp_connections:read",
            "mcp_gateway:use",
            "mcp_servers:create",
            "mcp_servers:delete",
            "mcp_servers:read",
            "mcp_servers:update",
            "members:manage",
            "members:read",
            "models:create",
            "models:delete",
            "models:read",
            "models:update",
            "providers:create",
            "providers:delete",
            "providers:read",
            "providers:update",
            "roles:assign",
            "roles:read",
            "routes:create",
            "routes:delete",
            "routes:read",
            "routes:update",
            "settings:read",
            "teams:create",
            "teams:delete",
            "teams:read",
            "teams:update",
            "users:create",
            "users:delete",
            "users:read",
            "users:update",
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
    "super-admin": ("Super Admin", "Everything, including roles and settings.", ["*"]),
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
    "viewer": (
        "Viewer",
        "Reads configuration and their teams' usage; cannot call the gateways.",
        [
            "api_keys:read",
            "audit:read",
            "limits:read",
            "mcp_connections:read",
            "mcp_servers:read",
            "members:read",
            "models:read",
            "providers:read",
            "roles:read",
            "routes:read",
            "settings:read",
            "teams:read",
            "users:read",
            "logs:read_own",
            "logs:read_team",
        ],
    ),
}


def grant(apps, schema_editor):
    Role = apps.get_model("accounts", "Role")
    for slug, (name, description, permissions) in BUILTIN.items():
        Role.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "description": description,
                "permissions": permissions,
                "builtin": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0005_access_control")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
