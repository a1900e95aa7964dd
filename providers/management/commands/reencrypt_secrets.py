"""Move every stored secret to the current master key.

Rotate the master key by setting THINKWATCH_MASTER_KEY to a new key and listing the old
one in THINKWATCH_PREVIOUS_MASTER_KEYS, running this command, then dropping the old key.
"""

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from providers.models import SECRET_PURPOSE, Provider
from thinkwatch.lib import crypto


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        moved = 0
        with transaction.atomic():
            for provider in Provider.objects.select_for_update().exclude(secret=""):
                if crypto.sealed_by_current_key(provider.secret):
                    continue
                provider.secret = crypto.encrypt(
                    crypto.decrypt(provider.secret, SECRET_PURPOSE), SECRET_PURPOSE
                )
                provider.save(update_fields=["secret"])
                moved += 1
        self.stdout.write(f"Re-encrypted {moved} secret(s) under the current master key.")
