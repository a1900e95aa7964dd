"""Move every stored secret to the current master key.

Rotate the master key by setting THINKWATCH_MASTER_KEY to a new key and listing the old
one in THINKWATCH_PREVIOUS_MASTER_KEYS, running this command, then dropping the old key.
"""

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from providers.models import SECRET_PURPOSE, SESSION_TOKEN_PURPOSE, Provider
from thinkwatch.lib import crypto


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        moved = 0
        fields = (("secret", SECRET_PURPOSE), ("session_token", SESSION_TOKEN_PURPOSE))
        with transaction.atomic():
            for provider in Provider.objects.select_for_update():
                for name, purpose in fields:
                    envelope = getattr(provider, name)
                    if envelope and not crypto.sealed_by_current_key(envelope):
                        plain = crypto.decrypt(envelope, purpose)
                        setattr(provider, name, crypto.encrypt(plain, purpose))
                        provider.save(update_fields=[name])
                        moved += 1
        self.stdout.write(f"Re-encrypted {moved} secret(s) under the current master key.")
