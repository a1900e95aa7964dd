"""What the admin audit log never writes: secrets. They are shown as "[redacted]" (or as
empty, when none is set), so a reader still sees that a secret was set or changed.

A field is secret when its name says so (secret, password, token, key_hash, credential,
verifier, webhook_url, fingerprint, an `_enc` part, ...) or when its model lists it in
`audit_redacted_fields`; a runtime setting's value is when the setting is declared secret.
Inside JSON values, keys are judged the same way (Authorization, api_key, ...), and URLs
lose their password and secret-looking query parameters.
"""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.db import models

from accounts import runtime
from accounts.models import RuntimeSetting

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"(secret|password|passwd|passphrase|token|key_hash|credentials?|verifier|private_key"
    r"|webhook_url|authorization|api_?key|cookie|signature|fingerprint)$|(^|_)enc($|_)",
    re.IGNORECASE,
)
# Query parameters that carry credentials under short names (?key=, ?sig=, ?code=).
_SECRET_PARAMS = frozenset({"key", "sig", "code", "auth"})
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.replace("-", "_").rsplit(".", 1)[-1]))


def secret_fields(model: type[models.Model]) -> frozenset[str]:
    """The fields of `model` whose values are never written. Relations hold ids: never."""
    declared = set(getattr(model, "audit_redacted_fields", ()))
    return frozenset(
        f.name
        for f in model._meta.concrete_fields
        if not f.is_relation and (f.name in declared or secret_name(f.name))
    )


def redact(instance: models.Model, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (field name -> JSON-able value) of `instance`, with secrets replaced."""
    hidden = secret_fields(type(instance)) | _secret_values(instance)
    return {
        name: _hide(value) if name in hidden else scrub(value) for name, value in values.items()
    }


def _secret_values(instance: models.Model) -> frozenset[str]:
    """Fields secret in some rows only: a runtime setting's value, when the setting is."""
    if isinstance(instance, RuntimeSetting):
        spec = runtime.REGISTRY.get(instance.key)
        if secret_name(instance.key) or getattr(spec, "secret", False):
            return frozenset({"value"})
    return frozenset()


def scrub(value: Any) -> Any:
    """A JSON-able value with secrets inside it (keys, URLs) replaced."""
    if isinstance(value, dict):
        return {k: _hide(v) if secret_name(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and _URL.match(value):
        return _scrub_url(value)
    return value


def _hide(value: Any) -> Any:
    return value if value in (None, "", [], {}) else REDACTED


def _scrub_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:{REDACTED}@{host}" + (f":{port}" if port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _secret_param(k) else v) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_param(name: str) -> bool:
    return name.lower() in _SECRET_PARAMS or secret_name(name)
