"""Optional capture of request and response bodies into gateway and MCP log records.

With the runtime setting `audit.capture_bodies` on, a gateway record keeps the request body
as received and the response body as sent (a stream: its events, up to the cap), and an MCP
record keeps the call's arguments and result. Off, capture costs one read of the in-memory
settings per request.

Bodies are redacted (audit/redaction_pii.py) when their record is submitted, before the
pipeline writes it to its segment file: nothing unredacted reaches a disk, a queue or the
store. Small bodies are redacted right there, on the event loop (a few milliseconds at
most); larger ones on a worker thread, which then submits the record.

Size: a body is kept up to `audit.body_max_bytes` in the record. With S3-compatible storage
configured (THINKWATCH_BODY_S3_*), a record whose bodies are larger is kept whole up to
`audit.body_hard_cap_bytes`, and a hook of the pipeline (`offload`, run before each batch
is stored) moves its bodies to one object per record, keyed by family, date and uid; the
record keeps the object's name and SHA-256, which the tamper-evidence chain then covers.
Without storage, bodies are truncated to the inline cap, with a marker saying so.

Reading bodies (`read`) needs audit:read_bodies on top of seeing the record; an offloaded
body whose content no longer has the recorded hash is reported as tampered, not served.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from django.conf import settings
from django.core.files.base import ContentFile

from accounts import runtime
from audit import pipeline
from audit.redaction_pii import redact_json, redact_text

logger = logging.getLogger(__name__)

Record = dict[str, Any]

# Bytes read past a cut, so that a value the cut splits is still recognised and redacted.
OVERLAP = 256
# Captured bytes redacted on the event loop; more goes to a worker thread.
ON_LOOP_BYTES = 32 * 1024
# The columns that hold each family's bodies (what is offloaded).
BODY_FIELDS = {"gateway": ("request_body", "response_body"), "mcp": ("arguments", "result")}
# Columns shown only to holders of audit:read_bodies, wherever records are shown: the
# bodies, and what they say about them.
PRIVATE_COLUMNS = frozenset(
    {
        *BODY_FIELDS["gateway"],
        *BODY_FIELDS["mcp"],
        "body_truncated",
        "body_redactions",
        "body_ref",
        "body_sha256",
    }
)


def truncated_marker(total: int) -> str:
    return f"\n[TRUNCATED: {total} bytes in all]"


# --- settings ----------------------------------------------------------------------------


def offloading() -> bool:
    return bool(settings.BODY_S3_BUCKET)


def inline_cap() -> int:
    return int(runtime.setting("audit.body_max_bytes"))


def capture_cap() -> int:
    """How much of a body is kept when it is captured: the hard cap when larger bodies can
    be offloaded, else what the record keeps."""
    inline = inline_cap()
    if not offloading():
        return inline
    return max(inline, int(runtime.setting("audit.body_hard_cap_bytes")))


def enabled() -> bool:
    return bool(runtime.setting("audit.capture_bodies"))


# --- capture -------------------------------------------------------------------------------


def _text(raw: bytes | bytearray, total: int, cap: int, counts: Counter[str]) -> tuple[str, bool]:
    """A body's bytes as redacted text, cut to `cap` bytes (`total`: its full size)."""
    if total <= cap:
        return redact_text(raw.decode("utf-8", "replace"), counts), False
    head = redact_text(raw[: cap + OVERLAP].decode("utf-8", "replace"), counts)
    kept = head.encode()[:cap].decode("utf-8", "ignore")
    return kept + truncated_marker(total), True


class GatewayCapture:
    """One gateway request's bodies, raw until its record is submitted."""

    __slots__ = ("cap", "request", "response", "response_bytes")

    def __init__(self, request: bytes, cap: int) -> None:
        self.cap = cap
        self.request = request  # the request's own bytes, not a copy
        self.response: bytes | bytearray = b""
        self.response_bytes = 0

    def respond(self, body: bytes) -> None:
        """The body of a response sent whole (an earlier one is replaced)."""
        self.response = body
        self.response_bytes = len(body)

    def stream(self, chunk: bytes) -> None:
        """One more piece of a streamed response: kept up to the cap, counted after."""
        self.response_bytes += len(chunk)
        room = self.cap + OVERLAP - len(self.response)
        if room <= 0:
            return
        if not isinstance(self.response, bytearray):
            self.response = bytearray(self.response)
        self.response += chunk[:room]

    @property
    def size(self) -> int:
        return min(len(self.request), self.cap + OVERLAP) + len(self.response)

    def fields(self) -> Record:
        counts: Counter[str] = Counter()
        request, cut_request = _text(self.request, len(self.request), self.cap, counts)
        response, cut_response = _text(self.response, self.response_bytes, self.cap, counts)
        return {
            "request_body": request,
            "response_body": response,
            "body_truncated": cut_request or cut_response,
            "body_redactions": dict(sorted(counts.items())),
        }


def _serialised(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except TypeError:
        return None


class McpCapture:
    """One MCP call's arguments and result, until its record is submitted. Each is
    serialised when taken (orjson: a millisecond a megabyte), which gives its size."""

    __slots__ = ("arguments", "arguments_json", "cap", "result", "result_json", "taken")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.taken: set[str] = set()
        self.arguments: Any = None
        self.arguments_json: bytes | None = None
        self.result: Any = None
        self.result_json: bytes | None = None

    def take_arguments(self, arguments: Any) -> None:
        self.arguments, self.arguments_json = arguments, _serialised(arguments)
        self.taken.add("arguments")

    def take_result(self, result: Any) -> None:
        self.result, self.result_json = result, _serialised(result)
        self.taken.add("result")

    @property
    def size(self) -> int:
        return len(self.arguments_json or b"") + len(self.result_json or b"")

    def fields(self) -> Record:
        counts: Counter[str] = Counter()
        found: Record = {}
        truncated = False
        if "arguments" in self.taken:
            found["arguments"], truncated = self._arguments(counts)
        if "result" in self.taken:
            found["result"], cut = self._result(counts)
            truncated = truncated or cut
        found["body_truncated"] = truncated
        found["body_redactions"] = dict(sorted(counts.items()))
        return found

    def _arguments(self, counts: Counter[str]) -> tuple[Any, bool]:
        if self.arguments is None:
            return None, False
        if self.arguments_json is None:
            return {"_unserializable": True}, False
        if len(self.arguments_json) > self.cap:
            return {"_truncated": True, "_bytes": len(self.arguments_json)}, True
        return redact_json(self.arguments, counts), False

    def _result(self, counts: Counter[str]) -> tuple[str, bool]:
        raw = self.result_json
        if raw is None:
            return '{"_unserializable": true}', False
        if len(raw) <= self.cap:
            return orjson.dumps(redact_json(self.result, counts)).decode(), False
        return _text(raw, len(raw), self.cap, counts)


def gateway_capture(request_body: bytes) -> GatewayCapture | None:
    """A capture for a gateway request, or None when capture is off."""
    return GatewayCapture(request_body, capture_cap()) if enabled() else None


def mcp_capture() -> McpCapture | None:
    return McpCapture(capture_cap()) if enabled() else None


# --- submitting ----------------------------------------------------------------------------

Capture = GatewayCapture | McpCapture


class _Redactor:
    """The worker threads that redact large bodies and submit their records."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def submit(self, deliver: Callable[[Record], None], record: Record, capture: Capture) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="audit-bodies")
            self._pending += 1
        self._pool.submit(self._run, deliver, record, capture)

    def _run(self, deliver: Callable[[Record], None], record: Record, capture: Capture) -> None:
        try:
            complete(deliver, record, capture)
        finally:
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every record handed to the threads is submitted."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


redactor = _Redactor()


def _reset_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own when needed."""
    global redactor
    redactor = _Redactor()


os.register_at_fork(after_in_child=_reset_after_fork)


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def submit(deliver: Callable[[Record], None], record: Record, capture: Capture) -> None:
    """Redact `capture` into `record`, then `deliver` it (the family's pipeline submit)."""
    if capture.size <= ON_LOOP_BYTES or not _on_loop():
        complete(deliver, record, capture)
    else:
        redactor.submit(deliver, record, capture)


def complete(deliver: Callable[[Record], None], record: Record, capture: Capture) -> None:
    try:
        record.update(capture.fields())
    except Exception:
        # The record matters more than its bodies: it goes without them.
        logger.exception("audit.body_capture_failed", extra={"uid": record.get("uid")})
    deliver(record)


def settle(timeout: float = 10.0) -> bool:
    """Wait until the records being redacted off the loop are submitted (tests; a process
    stopping)."""
    return redactor.settle(timeout)


# --- offload to S3-compatible storage -----------------------------------------------------


@cache
def _storage(bucket: str, endpoint: str, region: str, key_id: str, secret: str) -> Any:
    from botocore.config import Config
    from storages.backends.s3 import S3Storage

    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        # S3-compatible servers (MinIO, Ceph, moto) answer on one host: path-style URLs.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return S3Storage(
        bucket_name=bucket,
        endpoint_url=endpoint or None,
        region_name=region or None,
        access_key=key_id or None,
        secret_key=secret or None,
        file_overwrite=True,  # the hook may run twice for a record: same name, same bytes
        default_acl=None,
        querystring_auth=False,
        client_config=config,
    )


def storage() -> Any:
    """The S3 storage bodies are offloaded to, or None when none is configured."""
    if not offloading():
        return None
    return _storage(
        settings.BODY_S3_BUCKET,
        settings.BODY_S3_ENDPOINT_URL,
        settings.BODY_S3_REGION,
        settings.BODY_S3_ACCESS_KEY_ID,
        settings.BODY_S3_SECRET_ACCESS_KEY,
    )


def object_name(family: str, record: Record) -> str:
    created = record["created_at"]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return f"{family}/{created:%Y/%m/%d}/{record['uid']}.json"


def _payload(family: str, record: Record) -> bytes:
    return orjson.dumps({name: record.get(name) for name in BODY_FIELDS[family]})


def _failure(exc: Exception) -> str:
    """What went wrong, for the log: an S3 error code or the exception's class, never a
    message that could quote a credential or a body."""
    error = getattr(exc, "response", None)
    if isinstance(error, dict):
        return str(error.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def offload(family: str, records: list[Record]) -> None:
    """Move the bodies of records above the inline cap to storage (a `before_store` hook:
    it runs off the request path, again if the batch is retried)."""
    target = storage()
    if target is None:
        return
    cap = inline_cap()
    for record in records:
        if record.get("body_redactions") is None or record.get("body_ref"):
            continue  # not captured, or offloaded by an earlier run of this hook
        data = _payload(family, record)
        if len(data) <= cap:
            continue
        name = object_name(family, record)
        try:
            target.save(name, ContentFile(data))
        except Exception as exc:
            # Records keep flowing while storage is down: this one keeps what fits inline.
            logger.warning(
                "audit.body_offload_failed",
                extra={"family": family, "uid": record.get("uid"), "error": _failure(exc)},
            )
            _truncate(family, record, cap)
            continue
        record["body_ref"] = name
        record["body_sha256"] = hashlib.sha256(data).hexdigest()
        for column in BODY_FIELDS[family]:
            record[column] = None


def _truncate(family: str, record: Record, cap: int) -> None:
    for column in BODY_FIELDS[family]:
        value = record.get(column)
        if isinstance(value, str) and len(value.encode()) > cap:
            kept = value.encode()[:cap].decode("utf-8", "ignore")
            record[column] = kept + truncated_marker(len(value.encode()))
            record["body_truncated"] = True
        elif column == "arguments" and value is not None:
            size = len(orjson.dumps(value))
            if size > cap:
                record[column] = {"_truncated": True, "_bytes": size}
                record["body_truncated"] = True


def _offload_gateway(records: list[Record]) -> None:
    offload("gateway", records)


def _offload_mcp(records: list[Record]) -> None:
    offload("mcp", records)


pipeline.before_store("gateway", _offload_gateway)
pipeline.before_store("mcp", _offload_mcp)


# --- reading -------------------------------------------------------------------------------


class Unreadable(Exception):
    """The bodies of a record cannot be served; `state` says why."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


@dataclass
class Bodies:
    family: str
    captured: bool
    stored: str  # "inline", "offloaded", or "" when nothing was captured
    truncated: bool
    redactions: dict[str, int]
    sha256: str
    values: dict[str, Any] = field(default_factory=dict)  # column -> body


def read(family: str, record: Any) -> Bodies:
    """The bodies of a record (a model instance) the caller may read, fetched from storage
    when offloaded. Raises Unreadable: "tampered" when the object's content does not have
    the recorded SHA-256, "missing" when it is gone, "unavailable" when storage cannot be
    reached or is not configured."""
    columns = BODY_FIELDS[family]
    captured = record.body_redactions is not None
    bodies = Bodies(
        family=family,
        captured=captured,
        stored="",
        truncated=bool(record.body_truncated),
        redactions=dict(record.body_redactions or {}),
        sha256=record.body_sha256 or "",
    )
    if not captured:
        return bodies
    if not record.body_ref:
        bodies.stored = "inline"
        bodies.values = {column: getattr(record, column) for column in columns}
        return bodies
    data = _fetch(record.body_ref)
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, record.body_sha256 or ""):
        logger.warning(
            "audit.body_tampered",
            extra={"family": family, "uid": record.uid, "ref": record.body_ref},
        )
        raise Unreadable(
            "tampered",
            "The stored body does not match the SHA-256 in its record: it was altered after "
            "it was written.",
        )
    stored = orjson.loads(data)
    bodies.stored = "offloaded"
    bodies.values = {column: stored.get(column) for column in columns}
    return bodies


def _fetch(name: str) -> bytes:
    target = storage()
    if target is None:
        raise Unreadable(
            "unavailable",
            "This body was offloaded to S3-compatible storage, which is not configured here "
            "(THINKWATCH_BODY_S3_BUCKET).",
        )
    try:
        with target.open(name, "rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError:
        raise Unreadable(
            "missing", "The stored body is gone from storage: it was deleted after it was written."
        ) from None
    except Exception as exc:
        if _failure(exc) in ("NoSuchKey", "404"):
            raise Unreadable(
                "missing",
                "The stored body is gone from storage: it was deleted after it was written.",
            ) from None
        logger.warning("audit.body_fetch_failed", extra={"ref": name, "error": _failure(exc)})
        raise Unreadable(
            "unavailable", "The body's storage could not be reached; try again later."
        ) from None
    return data
