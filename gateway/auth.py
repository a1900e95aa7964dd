"""Who is calling: the gateway key from `Authorization: Bearer` or `x-api-key`."""

import hashlib
import time

from accounts.cache import KeyGrant, keys
from accounts.models import KeyState, looks_like_key
from gateway.errors import GatewayError, forbidden, unauthorized

_REFUSALS: dict[str, tuple[str, str]] = {
    KeyState.REVOKED: ("This API key has been revoked.", "revoked_api_key"),
    KeyState.ROTATED: (
        "This API key was rotated and its grace period has ended; use its successor.",
        "rotated_api_key",
    ),
    KeyState.EXPIRED: ("This API key has expired.", "expired_api_key"),
    KeyState.INACTIVE: (
        "This API key was disabled after a period without use; ask an admin to issue a new one.",
        "inactive_api_key",
    ),
    "owner_disabled": ("The account that owns this API key is disabled.", "owner_disabled"),
}


def presented_key(meta: dict[str, str]) -> str | None:
    header = meta.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = meta.get("HTTP_X_API_KEY", "").strip()
    return value or None


async def authenticate(meta: dict[str, str], surface: str) -> KeyGrant:
    plaintext = presented_key(meta)
    if plaintext is None:
        raise unauthorized(
            "No API key. Send your ThinkWatch key as 'Authorization: Bearer tw-...' "
            "or 'x-api-key: tw-...'.",
            "missing_api_key",
        )
    if not looks_like_key(plaintext):
        raise _invalid()
    grant = await keys.get(hashlib.sha256(plaintext.encode()).hexdigest())
    if grant is None:
        raise _invalid()
    refusal = grant.refusal(time.time(), keys.used.get(grant.id))
    if refusal is not None:
        message, code = _REFUSALS[refusal]
        raise unauthorized(message, code)
    if surface not in grant.surfaces:
        raise forbidden(f"This API key may not be used for {surface}.", "surface_not_allowed")
    if surface not in grant.usable:
        raise forbidden(
            f"The owner of this API key lacks the {surface}:use permission.", "permission_denied"
        )
    keys.note_use(grant)
    return grant


def _invalid() -> GatewayError:
    return unauthorized("Invalid API key.", "invalid_api_key")
