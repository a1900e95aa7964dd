"""HTTP webhooks: a batch is one POST of JSON,

    {"forwarder": name, "family": f, "first_seq": a, "last_seq": b, "count": n, "records": [...]}

signed with the forwarder's secret so that the receiver knows it came from ThinkWatch and
was not altered or replayed:

    X-ThinkWatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Idempotency-Key: <the batch's id, the same on every attempt and outbox retry>

Retried (audit/forwarding/retry.py) on connection errors, timeouts, 408, 429 and 5xx, with
Retry-After honoured; never on another 4xx, which says the request itself was refused.
Redirects are not followed: a SIEM endpoint that moved is a configuration to change.
"""

import hashlib
import hmac
import threading
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from audit.forwarding.batch import Batch
from audit.forwarding.records import dumps
from audit.forwarding.retry import Undelivered

SIGNATURE_HEADER = "X-ThinkWatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "ThinkWatch/0.1 (forwarder)"
_RETRIED_STATUS = frozenset({408, 429})
_SNIPPET = 200

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """One client per process: connections to a SIEM are kept between runs."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(
                follow_redirects=False,
                trust_env=settings.UPSTREAM_PROXY_FROM_ENV,
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            )
        return _client


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def body(forwarder_name: str, batch: Batch) -> bytes:
    return dumps(
        {
            "forwarder": forwarder_name,
            "family": batch.family,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "count": len(batch.records),
            "records": batch.records,
        }
    )


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSender:
    def __init__(self, name: str, url: str, secret: str) -> None:
        self.name, self.url, self._secret = name, url, secret
        self.host = urlsplit(url).netloc  # for messages: never the path or query

    def __repr__(self) -> str:
        return f"WebhookSender({self.name!r}, {self.host!r})"

    def send(self, batch: Batch, deadline: float) -> None:
        payload = body(self.name, batch)
        left = deadline - time.monotonic()
        if left <= 0:
            raise Undelivered("the run's time was up before the batch was sent")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, int(time.time()), payload),
            IDEMPOTENCY_HEADER: batch.batch_id,
        }
        timeout = httpx.Timeout(left, connect=min(left, 5.0))
        try:
            response = client().post(self.url, content=payload, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise Undelivered(f"webhook {self.host}: timed out") from None
        except httpx.HTTPError as exc:
            said = str(exc).replace(self.url, self.host)
            raise Undelivered(f"webhook {self.host}: {type(exc).__name__}: {said}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        text = " ".join(response.text[:_SNIPPET].split())
        reason = f"webhook {self.host}: HTTP {status}" + (f" {text}" if text else "")
        retried = status in _RETRIED_STATUS or status >= 500
        raise Undelivered(
            reason,
            retry=retried,
            retry_after=retry_after(response.headers.get("Retry-After")) if retried else None,
        )

    def close(self) -> None:
        """The process-wide client keeps its connections for the next run."""
