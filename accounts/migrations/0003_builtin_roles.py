from django.db import migrations

BUILTIN = [
    ("Super Admin", "super-admin", "Everything, including other admins."),
    ("Admin", "admin", "Runs the installation: providers, models, keys, teams, limits."),
    ("Team Manager", "team-manager", "Manages the members and keys of their teams."),
    ("Developer", "developer", "Uses the gateways with their own keys."),
    ("Viewer", "viewer", "Reads usage and logs."),
]


def create(apps, schema_editor):
    Role = apps.get_model("accounts", "Role")
    for name, slug, description in BUILTIN:
        Role.objects.update_or_create(slug=slug, defaults={"name": name, "description": description, "builtin": True})


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_roles")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
