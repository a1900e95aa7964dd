"""AES-256-GCM envelopes for secrets at rest (provider keys, OAuth tokens).

An envelope is text: `tw1.<key id>.<base64url(nonce || ciphertext || tag)>`. The key id
(first 8 hex digits of the key's SHA-256) says which master key sealed it, so secrets stay
readable while a new master key is rolled out, and `manage.py reencrypt_secrets` can move
them. The purpose string is authenticated data: a secret sealed for one field cannot be
replayed into another.
"""

import base64
import hashlib
import os
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

VERSION = "tw1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The envelope is malformed, sealed by an unknown key, or was tampered with."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


@cache
def _keyring(current: bytes, previous: tuple[bytes, ...]) -> dict[str, AESGCM]:
    return {key_id(key): AESGCM(key) for key in (current, *previous)}


def _keys() -> dict[str, AESGCM]:
    return _keyring(settings.MASTER_KEY, tuple(settings.PREVIOUS_MASTER_KEYS))


def encrypt(plaintext: str, purpose: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(settings.MASTER_KEY).encrypt(nonce, plaintext.encode(), purpose.encode())
    body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    return f"{VERSION}.{key_id(settings.MASTER_KEY)}.{body}"


def decrypt(envelope: str, purpose: str) -> str:
    try:
        version, kid, body = envelope.split(".")
    except ValueError:
        raise DecryptionError("not a ThinkWatch envelope") from None
    if version != VERSION:
        raise DecryptionError(f"unsupported envelope version {version!r}")
    aead = _keys().get(kid)
    if aead is None:
        raise DecryptionError(f"sealed by unknown master key {kid}")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
    except (InvalidTag, ValueError):
        raise DecryptionError("envelope failed authentication") from None
    return plain.decode()


def sealed_by_current_key(envelope: str) -> bool:
    parts = envelope.split(".")
    return len(parts) == 3 and parts[1] == key_id(settings.MASTER_KEY)
