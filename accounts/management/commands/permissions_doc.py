from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.permissions import markdown


class Command(BaseCommand):
    help = "Write docs/permissions.md from accounts/permissions.py."

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(settings.BASE_DIR) / "docs" / "permissions.md"
        path.write_text(markdown())
        self.stdout.write(f"wrote {path}")
