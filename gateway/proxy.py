"""Calling the provider and relaying its answer, with the usage read on the way."""

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
from django.http import HttpResponse, StreamingHttpResponse

from gateway import openai
from gateway.accounting import Call
from gateway.errors import GatewayError, upstream_error, upstream_timeout
from providers.cache import Upstream
from providers.pricing import Usage
from thinkwatch.lib import http, sse

logger = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
# Upstream statuses that are the caller's business: relayed as they are.
_RELAYED = {400, 404, 409, 413, 415, 422}


def _timed_out(upstream: Upstream) -> GatewayError:
    return upstream_timeout(f"The provider '{upstream.provider_name}' did not answer in time.")


def _broken(upstream: Upstream, exc: Exception) -> GatewayError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return upstream_error(
            f"Could not connect to the provider '{upstream.provider_name}'.", "upstream_unreachable"
        )
    return upstream_error(
        f"The connection to the provider '{upstream.provider_name}' failed.",
        "upstream_connection_error",
    )


async def _open(upstream: Upstream, body: bytes) -> aiohttp.ClientResponse:
    endpoint = upstream.endpoint
    try:
        return await http.session().post(
            endpoint.chat_url, data=body, headers=endpoint.headers, timeout=endpoint.timeout
        )
    except TimeoutError:
        raise _timed_out(upstream) from None
    except aiohttp.ClientError as exc:
        raise _broken(upstream, exc) from None


async def _refusal(
    upstream: Upstream, response: aiohttp.ClientResponse, asked: str
) -> GatewayError:
    """The error to answer with when the provider did not return 2xx."""
    status = response.status
    try:
        raw = await response.content.read(_ERROR_BODY_LIMIT)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    detail = _error_detail(raw)
    # An auth failure's message may quote part of the gateway's provider key: not logged.
    logged_detail = "" if status in (401, 403) else str(detail.get("message", ""))[:300]
    logger.warning(
        "upstream.error",
        extra={"provider": upstream.provider_name, "status": status, "detail": logged_detail},
    )
    name = upstream.provider_name
    if status in _RELAYED:
        message = str(
            detail.get("message") or f"The provider '{name}' rejected the request (HTTP {status})."
        )
        return GatewayError(
            status,
            str(detail.get("type") or "invalid_request_error"),
            message.replace(upstream.upstream_model, asked),
            str(detail["code"]) if detail.get("code") else None,
        )
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        return GatewayError(
            429,
            "rate_limit_error",
            f"The provider '{name}' is rate limiting this gateway; retry later.",
            "upstream_rate_limited",
            {"Retry-After": retry_after} if retry_after else None,
        )
    if status in (401, 403):
        return upstream_error(
            f"The provider '{name}' refused the gateway's credentials; an administrator must "
            "check this provider's API key.",
            "upstream_auth_failed",
        )
    if status == 408:
        return _timed_out(upstream)
    return upstream_error(f"The provider '{name}' returned HTTP {status}.")


def _error_detail(raw: bytes) -> dict[str, object]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return {}


class EventStream(StreamingHttpResponse):
    """An SSE response whose source the gateway handler iterates, then closes, itself."""

    def __init__(self, source: "Relay") -> None:
        super().__init__(source, content_type="text/event-stream")
        self.source = source


def _cost_header(cost: float) -> str:
    return f"{cost:.10f}".rstrip("0").rstrip(".") or "0"


async def complete(call: Call, upstream: Upstream, body: bytes) -> HttpResponse:
    response = await _open(upstream, body)
    try:
        if response.status >= 300:
            raise await _refusal(upstream, response, call.model)
        try:
            data = await response.read()
        except TimeoutError:
            raise _timed_out(upstream) from None
        except aiohttp.ClientError as exc:
            raise _broken(upstream, exc) from None
    finally:
        response.release()
    try:
        completion = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise upstream_error(
            f"The provider '{upstream.provider_name}' returned a body that is not JSON.",
            "upstream_invalid_response",
        ) from None
    usage = openai.usage_of(completion.get("usage") if isinstance(completion, dict) else None)
    if usage is not None:
        call.usage = usage
    if upstream.upstream_model != call.model:
        data = openai.rename_model(data, upstream.upstream_model, call.model)
    call.status = 200
    reply = HttpResponse(data, content_type="application/json")
    reply["x-thinkwatch-provider"] = upstream.provider_name
    reply["x-thinkwatch-cost-usd"] = _cost_header(call.cost())
    return reply


async def stream(
    call: Call, upstream: Upstream, body: bytes, scan: openai.StreamScan
) -> StreamingHttpResponse:
    response = await _open(upstream, body)
    if response.status >= 300:
        try:
            raise await _refusal(upstream, response, call.model)
        finally:
            response.release()
    if not response.content_type.startswith("text/event-stream"):
        response.close()
        raise upstream_error(
            f"The provider '{upstream.provider_name}' did not answer with an event stream.",
            "upstream_invalid_response",
        )
    call.streamed = True
    call.status = 200
    reply = EventStream(Relay(call, upstream, response, scan))
    reply["Cache-Control"] = "no-cache"
    reply["X-Accel-Buffering"] = "no"
    reply["x-thinkwatch-provider"] = upstream.provider_name
    return reply


class Relay:
    """Upstream events passed through as they arrive; owns the call's log record.

    `close()` settles the record and the upstream connection whether the stream ran to the
    end, failed, or never started (a client that left before the first byte).
    """

    def __init__(
        self,
        call: Call,
        upstream: Upstream,
        response: aiohttp.ClientResponse,
        scan: openai.StreamScan,
    ) -> None:
        self.call, self.upstream, self.response, self.scan = call, upstream, response, scan
        self.complete = False
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        call, scan = self.call, self.scan
        splitter = sse.EventSplitter()
        try:
            try:
                async for chunk in self.response.content.iter_any():
                    out = scan.forward(splitter.feed(chunk))
                    if out:
                        call.first_byte()
                        yield out
                rest = splitter.rest()
                if rest:
                    yield rest
                self.complete = True
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = (
                    _timed_out(self.upstream)
                    if isinstance(exc, TimeoutError)
                    else _broken(self.upstream, exc)
                )
                call.fail(error.status, error.code, error.message)
                yield openai.error_event(error)
            if scan.error and self.complete:
                call.error_code, call.error_message = "upstream_stream_error", scan.error
        except (asyncio.CancelledError, GeneratorExit):
            call.disconnected = True
            raise
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        call, scan = self.call, self.scan
        if scan.usage is not None:
            call.usage = scan.usage
        elif scan.deltas:
            # The provider bills what it generated even if its usage chunk never came.
            call.usage = Usage(input=scan.estimated_input, output=scan.deltas)
            call.estimated = True
        if self.complete:
            self.response.release()
        else:
            self.response.close()
        call.finish()
