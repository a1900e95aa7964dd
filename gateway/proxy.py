"""Calling the provider and relaying its answer, with the usage read on the way.

Two ways through: same-format traffic passes through as bytes (only usage is read, and the
model name restored), other traffic is converted via the canonical representation.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from django.http import HttpResponse, StreamingHttpResponse
from yarl import URL

from gateway import outputs, text_filters
from gateway.accounting import Call
from gateway.errors import GatewayError, upstream_error, upstream_timeout
from gateway.formats import Decoder, Encoder, Scan
from gateway.formats import canonical as c
from gateway.formats.openai_chat import UpstreamStreamError
from gateway.text_filters import TextFilter
from providers.cache import Upstream
from providers.pricing import Usage
from thinkwatch.lib import aws, http, sse

if TYPE_CHECKING:
    from gateway.cache import Sink

logger = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
# Upstream statuses that are the caller's business: relayed as they are.
_RELAYED = {400, 404, 409, 413, 415, 422}


def _timed_out(upstream: Upstream, connecting: bool = False) -> GatewayError:
    """A timeout: retried only while connecting (nothing was sent); a read timeout is not
    (the provider may be generating, and billing, the answer)."""
    error = upstream_timeout(f"The provider '{upstream.provider_name}' did not answer in time.")
    if connecting:
        return error.upstream_failure("connect_timeout", retryable=True, unhealthy=True)
    return error.upstream_failure("timeout", retryable=False, unhealthy=True)


def _broken(upstream: Upstream, exc: Exception, before_answer: bool = True) -> GatewayError:
    """A broken connection: retried when nothing of an answer had arrived yet."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return upstream_error(
            f"Could not connect to the provider '{upstream.provider_name}'.", "upstream_unreachable"
        ).upstream_failure("connect_error", retryable=True, unhealthy=True)
    return upstream_error(
        f"The connection to the provider '{upstream.provider_name}' failed.",
        "upstream_connection_error",
    ).upstream_failure("connection_error", retryable=before_answer, unhealthy=True)


async def open_upstream(
    upstream: Upstream, url: str, body: bytes, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    endpoint = upstream.endpoint
    sent = {**endpoint.headers, **headers} if headers else endpoint.headers
    target: str | URL = url
    if endpoint.aws is not None:
        sent = aws.sign(endpoint.aws, "bedrock", url, body, sent)
        target = URL(url, encoded=True)  # sent exactly as signed
    try:
        return await http.session().post(target, data=body, headers=sent, timeout=endpoint.timeout)
    except TimeoutError as exc:
        raise _timed_out(upstream, isinstance(exc, aiohttp.ConnectionTimeoutError)) from None
    except aiohttp.ClientError as exc:
        raise _broken(upstream, exc) from None


async def refusal(upstream: Upstream, response: aiohttp.ClientResponse, asked: str) -> GatewayError:
    """The error to answer with when the provider did not return 2xx."""
    status = response.status
    try:
        raw = await response.content.read(_ERROR_BODY_LIMIT)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    detail = _error_detail(raw)
    message = str(detail.get("message") or "")
    auth_failed = status in (401, 403) or (status == 400 and "API key not valid" in message)
    # An auth failure's message may quote part of the gateway's provider key: not logged.
    logger.warning(
        "upstream.error",
        extra={
            "provider": upstream.provider_name,
            "status": status,
            "detail": "" if auth_failed else message[:300],
            "aws_error": response.headers.get("x-amzn-ErrorType", ""),
        },
    )
    name, outcome = upstream.provider_name, f"http_{status}"
    if auth_failed:
        return upstream_error(
            f"The provider '{name}' refused the gateway's credentials; an administrator must "
            "check this provider's API key.",
            "upstream_auth_failed",
        ).upstream_failure(outcome, retryable=False, unhealthy=True)
    if status in _RELAYED:
        code = detail.get("code")
        return GatewayError(
            status,
            str(detail.get("type") or "invalid_request_error"),
            (message or f"The provider '{name}' rejected the request (HTTP {status}).").replace(
                upstream.upstream_model, asked
            ),
            str(code) if isinstance(code, str) else None,
        ).upstream_failure(outcome, retryable=False, unhealthy=False)
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        return GatewayError(
            429,
            "rate_limit_error",
            f"The provider '{name}' is rate limiting this gateway; retry later.",
            "upstream_rate_limited",
            {"Retry-After": retry_after} if retry_after else None,
        ).upstream_failure(outcome, True, True, http.retry_after_seconds(retry_after))
    if status == 408:
        error = upstream_timeout(f"The provider '{name}' did not answer in time.")
        return error.upstream_failure(outcome, retryable=True, unhealthy=True)
    error = upstream_error(f"The provider '{name}' returned HTTP {status}.")
    if status >= 500:
        wait = http.retry_after_seconds(response.headers.get("Retry-After"))
        return error.upstream_failure(outcome, True, True, wait)
    return error.upstream_failure(outcome, retryable=False, unhealthy=False)


def _error_detail(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    if isinstance(body.get("message"), str):  # AWS
        return {"message": body["message"]}
    return {}


def cost_header(cost: float) -> str:
    return f"{cost:.10f}".rstrip("0").rstrip(".") or "0"


Render = Callable[[Any, bytes], tuple[bytes, Usage | None]]


async def fetch(
    upstream: Upstream, url: str, body: bytes, asked: str, headers: dict[str, str] | None = None
) -> tuple[Any, bytes]:
    """A non-streaming call: the provider's JSON answer, parsed, and its bytes."""
    response = await open_upstream(upstream, url, body, headers)
    try:
        if response.status >= 300:
            raise await refusal(upstream, response, asked)
        try:
            data = await response.read()
        except TimeoutError:
            raise _timed_out(upstream) from None
        except aiohttp.ClientError as exc:
            raise _broken(upstream, exc) from None
    finally:
        response.release()
    try:
        return orjson.loads(data), data
    except orjson.JSONDecodeError:
        raise upstream_error(
            f"The provider '{upstream.provider_name}' returned a body that is not JSON.",
            "upstream_invalid_response",
        ) from None


def reply(call: Call, upstream: Upstream, out: bytes, usage: Usage | None) -> HttpResponse:
    if usage is not None:
        call.usage = usage
    call.status = 200
    if call.capture is not None:
        call.capture.respond(out)
    response = HttpResponse(out, content_type="application/json")
    response["x-thinkwatch-provider"] = upstream.provider_name
    response["x-thinkwatch-cost-usd"] = cost_header(call.cost())
    return response


def unreadable(upstream: Upstream, exc: Exception) -> GatewayError:
    logger.warning(
        "upstream.unreadable", extra={"provider": upstream.provider_name, "reason": repr(exc)[:200]}
    )
    return upstream_error(
        f"The provider '{upstream.provider_name}' returned an answer the gateway cannot read.",
        "upstream_invalid_response",
    )


async def complete(
    call: Call,
    upstream: Upstream,
    url: str,
    body: bytes,
    render: Render,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """A non-streaming call: `render` turns the provider's JSON (and its bytes) into the
    client's bytes and the usage."""
    answer, data = await fetch(upstream, url, body, call.model, headers)
    try:
        out, usage = render(answer, data)
    except (UpstreamStreamError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise unreadable(upstream, exc) from None
    return reply(call, upstream, out, usage)


class PassThrough:
    """Same-format stream: upstream events go out as they came; a scan reads the usage.
    With text filters, the events of the ingress format `ingress` that carry text go
    through them (gateway/text_filters.py); without, no event is parsed."""

    def __init__(self, scan: Scan, filters: Sequence[TextFilter] = (), ingress: str = "") -> None:
        self.scan = scan
        self._splitter = sse.EventSplitter()
        self._texts = text_filters.rewriter(ingress, filters) if filters else None
        self.content_type = "text/event-stream"

    def forward(self, chunk: bytes) -> bytes:
        if self._texts is None:
            return self.scan.forward(self._splitter.feed(chunk))
        return self.scan.forward(self._texts.rewrite(self._splitter.feed(chunk)))

    def finish(self) -> bytes:
        rest = self._splitter.rest()
        if self._texts is None:
            return rest
        # An event without its blank line still goes through the filters; then what they
        # held back.
        events = self._texts.rewrite([rest + b"\n\n"]) if rest.strip() else []
        return self.scan.forward([*events, *self._texts.finish()])

    @property
    def usage(self) -> Usage | None:
        return self.scan.usage

    @property
    def deltas(self) -> int:
        return self.scan.deltas

    @property
    def error(self) -> str | None:
        return self.scan.error


class Conversion:
    """Converted stream: provider events are decoded and re-encoded in the client's format;
    with text filters, the text of the canonical events goes through them in between."""

    def __init__(
        self, decoder: Decoder, encoder: Encoder, filters: Sequence[TextFilter] = ()
    ) -> None:
        self.decoder, self.encoder = decoder, encoder
        self.content_type = decoder.content_type
        self.usage: Usage | None = None
        self.deltas = 0
        self.error: str | None = None
        self._texts = text_filters.CanonicalTexts(text_filters.Chain(filters)) if filters else None

    def _track(self, events: list[c.Event]) -> list[c.Event]:
        for event in events:
            if isinstance(event, c.UsageReport):
                self.usage = event.usage
            elif isinstance(event, c.Delta):
                self.deltas += 1
        return events

    def forward(self, chunk: bytes) -> bytes:
        if self._texts is None:
            return self.encoder.feed(self._track(self.decoder.feed(chunk)))
        return self.encoder.feed(self._texts.events(self._track(self.decoder.feed(chunk))))

    def finish(self) -> bytes:
        if self._texts is None:
            return self.encoder.feed(self._track(self.decoder.close())) + self.encoder.close()
        events = self._texts.events(self._track(self.decoder.close()))
        return self.encoder.feed([*events, *self._texts.close()]) + self.encoder.close()


Translator = PassThrough | Conversion


class StreamSource(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class EventStream(StreamingHttpResponse):
    """An SSE response whose source the gateway handler iterates, then closes, itself
    (the AI gateway's relays and the MCP gateway's streams)."""

    def __init__(self, source: StreamSource, headers: dict[str, str] | None = None) -> None:
        super().__init__(source, content_type="text/event-stream", headers=headers)
        self.source = source
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"


async def stream(
    call: Call,
    upstream: Upstream,
    url: str,
    body: bytes,
    translator: Translator,
    error_event: Callable[[GatewayError], bytes],
    estimated_input: int,
    headers: dict[str, str] | None = None,
    on_end: Callable[[bool], None] | None = None,
) -> StreamingHttpResponse:
    """Open the provider's stream and wait for its first bytes; until they arrive a failure
    is the view's to handle (it may try another route), after that the relay's."""
    response = await open_upstream(upstream, url, body, headers)
    if response.status >= 300:
        try:
            raise await refusal(upstream, response, call.model)
        finally:
            response.release()
    if response.content_type != translator.content_type:
        response.close()
        raise upstream_error(
            f"The provider '{upstream.provider_name}' did not answer with a stream.",
            "upstream_invalid_response",
        ).upstream_failure("not_a_stream", retryable=False, unhealthy=True)
    # Until the first bytes, the client leaving cancels the request (nothing was sent).
    call.request.cancel_on_disconnect = True
    try:
        first = await _first_bytes(upstream, response)
    finally:
        call.request.cancel_on_disconnect = False
    call.streamed = True
    call.status = 200
    relay = Relay(call, upstream, response, translator, error_event, estimated_input, first)
    relay.on_end = on_end
    reply = EventStream(relay)
    reply["x-thinkwatch-provider"] = upstream.provider_name
    return reply


async def _first_bytes(upstream: Upstream, response: aiohttp.ClientResponse) -> bytes:
    try:
        first = await response.content.readany()
    except TimeoutError:
        response.close()
        raise _timed_out(upstream) from None
    except aiohttp.ClientError as exc:
        response.close()
        raise _broken(upstream, exc) from None
    except BaseException:  # cancelled: the client left
        response.close()
        raise
    if not first:
        response.close()
        raise upstream_error(
            f"The provider '{upstream.provider_name}' ended the stream before sending anything.",
            "upstream_stream_error",
        ).upstream_failure("empty_stream", retryable=True, unhealthy=True)
    return first


class Relay:
    """The stream to the client; owns the call's log record.

    `close()` settles the record and the upstream connection whether the stream ran to the
    end, failed, or never started (a client that left before the first byte).
    """

    def __init__(
        self,
        call: Call,
        upstream: Upstream,
        response: aiohttp.ClientResponse,
        translator: Translator,
        error_event: Callable[[GatewayError], bytes],
        estimated_input: int,
        first: bytes = b"",
    ) -> None:
        self.call, self.upstream, self.response = call, upstream, response
        self.translator, self.error_event = translator, error_event
        self.estimated_input = estimated_input
        self.first = first  # read before the response began (gateway/proxy.stream)
        self.complete = False
        self.closed = False
        self.withheld = False  # an output rule stopped the stream (not the provider's fault)
        # Told whether the provider's stream ran to its end cleanly (routing's health).
        self.on_end: Callable[[bool], None] | None = None
        # The response cache's copy of what the client is sent, when it keeps this answer.
        self.sink: Sink | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        call, translator = self.call, self.translator
        # Body capture (audit/bodies.py) keeps what the client is sent, up to its cap.
        keep = call.capture.stream if call.capture is not None else None
        sink = self.sink
        try:
            try:
                async for chunk in self._chunks():
                    out = translator.forward(chunk)
                    if out:
                        call.first_byte()
                        if keep is not None:
                            keep(out)
                        if sink is not None:
                            sink.feed(out)
                        yield out
                rest = translator.finish()
                self.complete = True
                if rest:
                    if keep is not None:
                        keep(rest)
                    if sink is not None:
                        sink.feed(rest)
                    yield rest
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = (
                    _timed_out(self.upstream)
                    if isinstance(exc, TimeoutError)
                    else _broken(self.upstream, exc)
                )
                call.fail(error.status, error.code, error.message)
                yield self._sent(self.error_event(error))
            except outputs.Blocked as blocked:
                # An output rule fired: the held text is not sent; the stream ends here.
                error = outputs.refusal(blocked.hit)
                self.withheld = True
                call.fail(error.status, error.code, error.message)
                yield self._sent(self.error_event(error))
            except (UpstreamStreamError, ValueError, KeyError, TypeError) as exc:
                # The provider reported an error mid-stream, or sent what cannot be read.
                detail = str(exc) if isinstance(exc, UpstreamStreamError) else "an unreadable event"
                error = upstream_error(
                    f"The provider '{self.upstream.provider_name}' sent {detail}.",
                    "upstream_stream_error",
                )
                call.fail(error.status, error.code, str(exc)[:500])
                yield self._sent(self.error_event(error))
            if translator.error and self.complete:
                call.error_code, call.error_message = "upstream_stream_error", translator.error
        except (asyncio.CancelledError, GeneratorExit):
            call.disconnected = True
            raise
        finally:
            self.close()
            if sink is not None:
                sink.ended(self.complete)

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self.first:
            first, self.first = self.first, b""
            yield first
        async for chunk in self.response.content.iter_any():
            yield chunk

    def _sent(self, event: bytes) -> bytes:
        if self.call.capture is not None:
            self.call.capture.stream(event)
        return event

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        call, translator = self.call, self.translator
        if translator.usage is not None:
            call.usage = translator.usage
        if translator.deltas and (call.usage.output == 0 or not self.complete):
            # The provider bills what it generated even if its usage never came.
            call.usage = Usage(
                input=call.usage.input or self.estimated_input,
                output=max(call.usage.output, translator.deltas),
                cached=call.usage.cached,
            )
            call.estimated = True
        if self.complete:
            self.response.release()
        else:
            self.response.close()
        if self.on_end is not None:
            # A client that left is not the provider's failure; a broken stream is.
            self.on_end(
                self.complete or self.withheld or (call.disconnected and not call.error_code)
            )
        call.finish()
