"""The MCP log: one record per tool call (and per prompt or resource read), written in
batches off the loop like the AI gateway's, with secrets taken out of the arguments."""

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from audit import bodies, pipeline
from audit.redaction_pii import SECRET_KEY, replace_secrets
from thinkwatch import metrics

writer = pipeline.FamilyWriter("mcp")

REDACTED = "[REDACTED]"
_MAX_ARGUMENT_BYTES = 16_384


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with secrets replaced: any value under a secret-sounding key, and
    secret-looking strings (well-known token formats, JWTs, private keys) anywhere."""
    if depth > 20:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        return replace_secrets(value, REDACTED)
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

    __slots__ = ("_done", "capture", "fields", "started")

    def __init__(self, **fields: Any) -> None:
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {
            "created_at": datetime.now(UTC),
            "status": "ok",
            "error_code": None,
            "error_message": "",
            "arguments": None,
            # Set once the server is known; a call naming no server is recorded without one.
            "server": "",
            "upstream_name": "",
            **fields,
        }
        # Arguments and result, when audit.capture_bodies is on (audit/bodies.py).
        self.capture = bodies.mcp_capture()
        self._done = False

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def arguments(self, arguments: Any) -> None:
        self.fields["arguments"] = _bounded(redact(arguments))
        if self.capture is not None:
            self.capture.take_arguments(arguments)

    def result(self, result: Any) -> None:
        """What the upstream answered (kept only when bodies are captured)."""
        if self.capture is not None:
            self.capture.take_result(result)

    def fail(self, status: str, code: int | None, message: str) -> None:
        self.fields.update(status=status, error_code=code, error_message=message[:2000])

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.fields["latency_ms"] = (time.perf_counter() - self.started) * 1000
        metrics.observe_mcp(self.fields)
        if self.capture is None:
            writer.submit(self.fields)
        else:
            bodies.submit(writer.submit, self.fields, self.capture)
