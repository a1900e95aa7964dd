"""The MCP log: one record per tool call (and per prompt or resource read), written in
batches off the loop like the AI gateway's, with secrets taken out of the arguments."""

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from audit.models import McpLog
from audit.writer import LogWriter, TableWriter

writer = LogWriter("mcp", TableWriter(McpLog))

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|cookie|session|private[-_]?key|"
    r"signature|bearer",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(tw-[0-9a-f]{16,}|sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|"
    r"gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|"
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|"
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)|"
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
_MAX_ARGUMENT_BYTES = 16_384


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with secrets replaced: any value under a secret-sounding key, and
    secret-looking strings (well-known token formats, JWTs, private keys) anywhere."""
    if depth > 20:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def _bounded(arguments: Any) -> Any:
    if arguments is None:
        return None
    try:
        size = len(orjson.dumps(arguments))
    except TypeError:
        return {"_unserializable": True}
    if size > _MAX_ARGUMENT_BYTES:
        return {"_truncated": True, "_bytes": size}
    return arguments


class Entry:
    """One MCP request's record, filled in as it goes and submitted once."""

    __slots__ = ("_done", "fields", "started")

    def __init__(self, **fields: Any) -> None:
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {
            "created_at": datetime.now(UTC),
            "status": "ok",
            "error_code": None,
            "error_message": "",
            "arguments": None,
            **fields,
        }
        self._done = False

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def arguments(self, arguments: Any) -> None:
        self.fields["arguments"] = _bounded(redact(arguments))

    def fail(self, status: str, code: int | None, message: str) -> None:
        self.fields.update(status=status, error_code=code, error_message=message[:2000])

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.fields["latency_ms"] = (time.perf_counter() - self.started) * 1000
        writer.submit(self.fields)
