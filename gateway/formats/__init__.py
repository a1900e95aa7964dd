"""The API formats the gateway speaks, as data: three a client may use (ingress), four a
provider may (OpenAI-format, Anthropic, Gemini, Bedrock). Views and the proxy look them
up here instead of branching on names."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import GatewayError, openai_body
from gateway.formats import anthropic, bedrock, gemini, openai_chat, responses
from gateway.formats import canonical as c
from providers.pricing import Usage
from providers.specs import Operation, ProviderSpec


class Encoder(Protocol):
    def feed(self, events: list[c.Event]) -> bytes: ...
    def close(self) -> bytes: ...


class Decoder(Protocol):
    content_type: str

    def feed(self, chunk: bytes) -> list[c.Event]: ...
    def close(self) -> list[c.Event]: ...


class Scan(Protocol):
    usage: Usage | None
    error: str | None
    deltas: int
    estimated_input: int

    def forward(self, events: list[bytes]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Ingress:
    name: str
    parse: Callable[[bytes], dict[str, Any]]
    decode: Callable[[dict[str, Any]], c.Request]
    encode_response: Callable[[c.Response, str], dict[str, Any]]
    stream_encoder: Callable[[str, dict[str, Any]], Encoder]
    error_body: Callable[[GatewayError], dict[str, Any]]
    error_event: Callable[[GatewayError], bytes]
    # Same-format traffic: which provider operation passes it through (None: convert).
    passthrough: Callable[[ProviderSpec], Operation | None]
    upstream_body: Callable[[dict[str, Any], bytes, str, bool], tuple[bytes, bool]]
    scan: Callable[[bool, str, str, bytes], Scan]
    usage_of: Callable[[object], Usage | None]
    max_tokens: Callable[[dict[str, Any]], int | None]
    forwarded_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderFormat:
    encode_request: Callable[[c.Request, str, ProviderSpec], dict[str, Any]]
    decode_response: Callable[[dict[str, Any]], c.Response]
    stream_decoder: Callable[[], Decoder]


def _chat_passthrough(spec: ProviderSpec) -> Operation | None:
    return "chat" if spec.format == "openai_chat" else None


def _messages_passthrough(spec: ProviderSpec) -> Operation | None:
    return "chat" if spec.format == "anthropic" else None


def _responses_passthrough(spec: ProviderSpec) -> Operation | None:
    return "responses" if "responses" in spec.paths else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _include_usage(payload: dict[str, Any]) -> bool:
    return bool((payload.get("stream_options") or {}).get("include_usage"))


OPENAI_CHAT = Ingress(
    name=openai_chat.INGRESS,
    parse=openai_chat.parse_request,
    decode=openai_chat.decode_request,
    encode_response=openai_chat.encode_response,
    stream_encoder=lambda model, payload: openai_chat.StreamEncoder(model, _include_usage(payload)),
    error_body=openai_body,
    error_event=openai_chat.error_event,
    passthrough=_chat_passthrough,
    upstream_body=openai_chat.upstream_body,
    scan=openai_chat.StreamScan,
    usage_of=openai_chat.usage_of,
    max_tokens=lambda p: _int(p.get("max_completion_tokens") or p.get("max_tokens")),
)

ANTHROPIC_MESSAGES = Ingress(
    name=anthropic.INGRESS,
    parse=anthropic.parse_request,
    decode=anthropic.decode_request,
    encode_response=anthropic.encode_response,
    stream_encoder=lambda model, payload: anthropic.StreamEncoder(model),
    error_body=anthropic.error_body,
    error_event=anthropic.error_event,
    passthrough=_messages_passthrough,
    upstream_body=anthropic.upstream_body,
    scan=anthropic.StreamScan,
    usage_of=anthropic.usage_of,
    max_tokens=lambda p: _int(p.get("max_tokens")),
    forwarded_headers=("anthropic-version", "anthropic-beta"),
)

OPENAI_RESPONSES = Ingress(
    name=responses.INGRESS,
    parse=responses.parse_request,
    decode=responses.decode_request,
    encode_response=responses.encode_response,
    stream_encoder=lambda model, payload: responses.StreamEncoder(model),
    error_body=openai_body,
    error_event=responses.error_event,
    passthrough=_responses_passthrough,
    upstream_body=responses.upstream_body,
    scan=responses.StreamScan,
    usage_of=responses.usage_of,
    max_tokens=lambda p: _int(p.get("max_output_tokens")),
)

PROVIDER_FORMATS: dict[str, ProviderFormat] = {
    "openai_chat": ProviderFormat(
        openai_chat.encode_request, openai_chat.decode_response, openai_chat.StreamDecoder
    ),
    "anthropic": ProviderFormat(
        anthropic.encode_request, anthropic.decode_response, anthropic.StreamDecoder
    ),
    "gemini": ProviderFormat(gemini.encode_request, gemini.decode_response, gemini.StreamDecoder),
    "bedrock": ProviderFormat(
        bedrock.encode_request, bedrock.decode_response, bedrock.StreamDecoder
    ),
}


def for_path(path: str) -> Ingress:
    """The ingress format a request path belongs to (for errors raised before routing)."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC_MESSAGES
    if path.startswith("/v1/responses"):
        return OPENAI_RESPONSES
    return OPENAI_CHAT
