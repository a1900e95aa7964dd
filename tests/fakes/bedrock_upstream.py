"""A fake Amazon Bedrock Runtime: a real HTTP server on loopback speaking the Converse,
ConverseStream and InvokeModel (embeddings) wire formats, written from the AWS API reference
and botocore's service model for `bedrock-runtime`.

- Every request must carry a valid AWS Signature Version 4 for service `bedrock` in
  `REGION`, made with the one credential set the fake knows. The fake re-signs the received
  method, raw path, query, signed headers and body with botocore's signer and compares; each
  verdict is appended to `signatures_ok`. A script with `expected_key` instead demands a
  Bedrock API key (`Authorization: Bearer <key>`), as Bedrock accepts since 2025.
- Errors have Bedrock's shape: the status code, an `x-amzn-ErrorType` header naming the
  exception and a `{"message": ...}` body.
- ConverseStream answers `application/vnd.amazon.eventstream`: binary event-stream messages,
  each with a prelude (total length, headers length, prelude CRC32), string headers
  (`:event-type`, `:content-type`, `:message-type`), a JSON payload and a message CRC32.
"""

import binascii
import hashlib
import hmac
import json
import re
import struct
import uuid
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from tests.fakes.base import FakeServer, Script, ToolCall, embedding

EVENT_STREAM = "application/vnd.amazon.eventstream"

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_ERROR_MESSAGES = {
    "ValidationException": "Malformed input request, please reformat your input and try again.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "The requested resource could not be found.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request "
    "again.",
    "ModelErrorException": "The model failed to process the request.",
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "InternalServerException": "The server encountered an error processing the request. Try "
    "your request again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
}
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
BAD_TOKEN = "The security token included in the request is invalid."

_PATH = re.compile(r"^/model/(?P<model>[^/?]+)/(?P<action>converse|converse-stream|invoke)$")
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_GEO_PREFIXES = {"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"}  # profile ids
_STOP_REASONS = {"end": "end_turn", "max_tokens": "max_tokens"}


class FakeBedrock(FakeServer):
    name = "bedrock"

    ACCESS_KEY_ID = "AKIDFAKEBEDROCK"
    SECRET_ACCESS_KEY = "fake-secret-access-key"
    REGION = "us-east-1"
    SERVICE = "bedrock"

    def __init__(self) -> None:
        super().__init__()
        self.signatures_ok: list[bool] = []  # one verdict per SigV4-signed request
        self.session_tokens: list[str | None] = []  # X-Amz-Security-Token, per signed request
        self.model_ids: list[str] = []  # the decoded modelId of every request

    @property
    def url(self) -> str:
        return self.root

    def reset(self) -> None:
        super().reset()
        self.signatures_ok.clear()
        self.session_tokens.clear()
        self.model_ids.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{tail:.+}", self._model)

    async def _model(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        script = self.script_now
        match = _PATH.match(request.rel_url.raw_path)
        if match is None:
            return _error(404, "UnknownOperationException", "Unknown operation.")
        model_id = unquote(match["model"])
        self.model_ids.append(model_id)
        refused = self._authenticate(request, seen.raw, script)
        if refused is not None:
            return refused
        canned = self.canned()
        if canned is not None:
            return canned
        if script.status >= 300:
            kind = _ERROR_TYPES.get(
                script.status,
                "InternalServerException" if script.status >= 500 else "ValidationException",
            )
            message = (script.error or {}).get("message") or _ERROR_MESSAGES[kind]
            return _error(script.status, kind, message, script.headers)
        if not isinstance(seen.body, dict):
            return _error(400, "ValidationException", _ERROR_MESSAGES["ValidationException"])
        action = match["action"]
        if action == "converse":
            return _json(_converse(script), script.headers)
        if action == "converse-stream":
            return await self.send_events(request, _stream_events(script), EVENT_STREAM)
        return _invoke(model_id, seen.body, script)

    def _authenticate(
        self, request: web.Request, body: bytes, script: Script
    ) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if script.expected_key:
            if header == f"Bearer {script.expected_key}":
                return None
            return _error(403, "UnrecognizedClientException", BAD_TOKEN)
        self.session_tokens.append(request.headers.get("X-Amz-Security-Token"))
        verdict = self._verify_sigv4(request, body, header)
        self.signatures_ok.append(verdict is None)
        return verdict

    def _verify_sigv4(self, request: web.Request, body: bytes, header: str) -> web.Response | None:
        parsed = _AUTHORIZATION.match(header)
        timestamp = request.headers.get("X-Amz-Date", "")
        if parsed is None or not timestamp:
            return _error(403, "UnrecognizedClientException", BAD_TOKEN)
        access_key, _, scope = parsed["credential"].partition("/")
        if access_key != self.ACCESS_KEY_ID:
            return _error(403, "UnrecognizedClientException", BAD_TOKEN)
        if scope != f"{timestamp[:8]}/{self.REGION}/{self.SERVICE}/aws4_request":
            return _error(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, service and date: {scope}.",
            )
        signed = parsed["signed"].split(";")
        # AWS insists on signing host and the date; every named header must have come.
        if not {"host", "x-amz-date"} <= set(signed) or any(
            name not in request.headers for name in signed
        ):
            return _error(403, "InvalidSignatureException", BAD_SIGNATURE)
        expected = _sigv4_signature(
            Credentials(self.ACCESS_KEY_ID, self.SECRET_ACCESS_KEY),
            self.REGION,
            self.SERVICE,
            request,
            body,
            signed,
            timestamp,
        )
        if not hmac.compare_digest(expected, parsed["signature"]):
            return _error(403, "InvalidSignatureException", BAD_SIGNATURE)
        return None


class _Verifier(SigV4Auth):
    """botocore's SigV4 signer, told which headers the client signed instead of choosing."""

    def __init__(
        self, credentials: Credentials, service: str, region: str, signed: HTTPHeaders
    ) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed

    def payload(self, request: AWSRequest) -> str:
        # The server hashes the body it received; it never trusts a client's claimed hash.
        return hashlib.sha256(request.body or b"").hexdigest()


def _sigv4_signature(
    credentials: Credentials,
    region: str,
    service: str,
    request: web.Request,
    body: bytes,
    signed_names: list[str],
    timestamp: str,
) -> str:
    """The signature botocore computes for the received request and the given scope."""
    signed = HTTPHeaders()
    for name in signed_names:
        for value in request.headers.getall(name):
            signed[name] = value
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{request.headers['Host']}{request.raw_path}",
        data=body,
    )
    aws_request.context["timestamp"] = timestamp
    signer = _Verifier(credentials, service, region, signed)
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))


def event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message carrying a JSON event (all integers big-endian)."""
    headers = b"".join(
        _string_header(name, value)
        for name, value in (
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        )
    )
    body = json.dumps(payload, separators=(",", ":")).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def _string_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + b"\x07"  # header value type 7: string
        + struct.pack(">H", len(raw_value))
        + raw_value
    )


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json({"message": message}, {"x-amzn-ErrorType": kind, **(headers or {})}, status)


def _json(body: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers={"x-amzn-RequestId": str(uuid.uuid4()), **headers},
    )


def _pieces(text: str) -> list[str]:
    """A text cut at spaces the way the model streams it (each piece keeps its space)."""
    if not text:
        return []
    parts = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(parts)]


def _stop_reason(script: Script) -> str:
    if script.stop == "end" and script.tool_calls:
        return "tool_use"
    return _STOP_REASONS.get(script.stop, script.stop)


def _usage(script: Script) -> dict[str, int]:
    # Bedrock counts cache reads apart from inputTokens, and totalTokens adds them all up.
    # script.prompt_tokens is the whole prompt, cached part included (as OpenAI counts it).
    return {
        "inputTokens": script.prompt_tokens - script.cached_tokens,
        "outputTokens": script.completion_tokens,
        "totalTokens": script.prompt_tokens + script.completion_tokens,
        "cacheReadInputTokens": script.cached_tokens,
        "cacheWriteInputTokens": 0,
    }


def _converse(script: Script) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if script.thinking:
        content.append(
            {
                "reasoningContent": {
                    "reasoningText": {"text": script.thinking, "signature": script.signature}
                }
            }
        )
    if script.text:
        content.append({"text": script.text})
    content.extend(
        {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        for call in script.tool_calls
    )
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop_reason(script),
        "usage": _usage(script),
        "metrics": {"latencyMs": 12},
    }


def _fragments(call: ToolCall) -> list[str]:
    """The tool's input as JSON, cut into two or three string fragments."""
    whole = json.dumps(call.arguments, separators=(",", ":"))
    step = max(1, -(-len(whole) // 3))
    return [whole[i : i + step] for i in range(0, len(whole), step)]


def _stream_events(script: Script) -> list[bytes]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    index = 0
    if script.thinking:
        events += [
            (
                "contentBlockDelta",
                {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}},
            )
            for piece in _pieces(script.thinking)
        ]
        events.append(
            (
                "contentBlockDelta",
                {
                    "contentBlockIndex": index,
                    "delta": {"reasoningContent": {"signature": script.signature}},
                },
            )
        )
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if script.text:
        events += [
            ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": word}})
            for word in script.words
        ]
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    for call in script.tool_calls:
        events.append(
            (
                "contentBlockStart",
                {
                    "contentBlockIndex": index,
                    "start": {"toolUse": {"toolUseId": call.id, "name": call.name}},
                },
            )
        )
        events += [
            (
                "contentBlockDelta",
                {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
            )
            for fragment in call.pieces or _fragments(call)
        ]
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    events.append(("messageStop", {"stopReason": _stop_reason(script)}))
    events.append(("metadata", {"usage": _usage(script), "metrics": {"latencyMs": 12}}))
    # Bedrock pads each event with a "p" field of varying length (against length side
    # channels); clients must ignore it.
    padding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
    return [
        event_message(kind, {**payload, "p": padding[: 1 + n % len(padding)]})
        for n, (kind, payload) in enumerate(events)
    ]


def _invoke(model_id: str, body: dict[str, Any], script: Script) -> web.Response:
    base = model_id.rsplit("/", 1)[-1]  # an inference-profile ARN ends in its id
    prefix, _, rest = base.partition(".")
    base = rest if prefix in _GEO_PREFIXES else base
    headers = {
        "X-Amzn-Bedrock-Input-Token-Count": str(script.prompt_tokens),
        "X-Amzn-Bedrock-Invocation-Latency": "12",
        **script.headers,
    }
    if base.startswith("amazon.titan-embed-text"):
        text = body.get("inputText")
        dims = body.get("dimensions", script.embedding_dims)
        if not isinstance(text, str) or not isinstance(dims, int) or isinstance(dims, bool):
            return _error(
                400,
                "ValidationException",
                "Malformed input request: #: required key [inputText] not found",
            )
        vector = embedding(text, dims)
        answer: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": script.prompt_tokens}
        if base.startswith("amazon.titan-embed-text-v2"):
            answer["embeddingsByType"] = {"float": vector}
        return _json(answer, headers)
    if base.startswith("cohere.embed"):
        texts = body.get("texts")
        if (
            not isinstance(texts, list)
            or not all(isinstance(t, str) for t in texts)
            or body.get("input_type")
            not in {"search_document", "search_query", "classification", "clustering"}
        ):
            return _error(
                400,
                "ValidationException",
                "Malformed input request: #: required key [texts] or [input_type] not found",
            )
        vectors = [embedding(text, script.embedding_dims) for text in texts]
        types = body.get("embedding_types")
        answer = {"id": str(uuid.uuid4()), "texts": texts}
        if types is None:
            answer |= {"embeddings": vectors, "response_type": "embeddings_floats"}
        elif types == ["float"]:
            answer |= {"embeddings": {"float": vectors}, "response_type": "embeddings_by_type"}
        else:
            return _error(400, "ValidationException", "The fake embeds only as floats.")
        return _json(answer, headers)
    return _error(400, "ValidationException", "The provided model identifier is invalid.")
