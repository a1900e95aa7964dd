"""OpenAI's embeddings API on the wire (what clients send), and the answer built from the
vectors of providers that have another format."""

import base64
import struct
from typing import Any

from gateway.errors import bad_request
from gateway.formats import canonical as c
from gateway.formats.openai_chat import parse_json_object
from providers.pricing import Usage

INGRESS = "openai_embeddings"


def parse_request(body: bytes) -> dict[str, Any]:
    payload = parse_json_object(body)
    if not isinstance(payload.get("model"), str) or not payload["model"].strip():
        raise bad_request("'model' is required and must be a non-empty string.", "missing_model")
    given = payload.get("input")
    if not (isinstance(given, str) and given) and not (isinstance(given, list) and given):
        raise bad_request("'input' is required: a non-empty string or array.", "invalid_input")
    if payload.get("encoding_format", "float") not in ("float", "base64"):
        raise bad_request(
            "'encoding_format' must be 'float' or 'base64'.", "invalid_encoding_format"
        )
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise bad_request("'dimensions' must be a positive integer.", "invalid_dimensions")
    return payload


def texts_of(payload: dict[str, Any], where: str) -> list[str]:
    """The input as texts; token-id arrays only OpenAI-format providers understand."""
    given = payload["input"]
    if isinstance(given, str):
        return [given]
    if all(isinstance(item, str) for item in given):
        return list(given)
    raise c.Unsupported("embedding input given as token ids", where)


def _vector(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def response_body(
    model: str, vectors: list[list[float]], usage: Usage, encoding: str
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(values, encoding)}
            for i, values in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input},
    }
