"""The AI gateway's endpoints (port 3000). Auth and routing come from in-process caches;
a warm request touches no database."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from accounts.cache import KeyGrant
from accounts.models import Surface
from gateway import cache, errors, guardrails, outputs, proxy, redaction, routing, text_filters
from gateway.accounting import Call
from gateway.auth import authenticate
from gateway.errors import GatewayError
from gateway.formats import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    PROVIDER_FORMATS,
    Ingress,
    anthropic,
    bedrock,
    gemini,
    openai_chat,
)
from gateway.formats import canonical as c
from gateway.formats import embeddings as embedding_format
from gateway.formats.openai_chat import estimate_input_tokens, rename_model
from gateway.guardrails import Rule
from providers.cache import ModelPlan, Upstream, routes
from providers.pricing import Usage
from quotas import admission


def error_response(ingress: Ingress, error: GatewayError) -> HttpResponse:
    return errors.response(error, ingress.error_body)


def _refused(call: Call, ingress: Ingress, error: GatewayError) -> HttpResponse:
    """The request's answer, and its log record's outcome, when the gateway says no."""
    call.fail(error.status, error.code, error.message)
    return _answer(call, error_response(ingress, error))


def _answer(call: Call, response: HttpResponse) -> HttpResponse:
    """`response`, its body kept for the log record when bodies are captured."""
    if call.capture is not None:
        call.capture.respond(response.content)
    return response


def _method_not_allowed(ingress: Ingress, allowed: str) -> HttpResponse:
    error = GatewayError(
        405, "invalid_request_error", f"Use {allowed} on this endpoint.", "method_not_allowed"
    )
    response = error_response(ingress, error)
    response["Allow"] = allowed
    return response


def unsupported(exc: c.Unsupported) -> GatewayError:
    return errors.bad_request(
        f"{exc} Send it to a model served by a provider that has it, or leave it out.",
        "unsupported_feature",
    )


async def plan_for(grant: KeyGrant, model: str) -> ModelPlan:
    if not grant.allows_model(model):
        raise errors.forbidden(
            f"This API key may not use the model '{model}'.", "model_not_allowed"
        )
    plan = (await routes.get()).plan(model)
    if plan is None:
        raise errors.not_found(
            f"The model '{model}' does not exist or is not served by this gateway.",
            "model_not_found",
        )
    if not plan.enabled:
        raise errors.forbidden(
            f"The model '{model}' is disabled by an administrator.", "model_disabled"
        )
    if not plan.upstreams:
        raise errors.no_route(f"No enabled provider route serves the model '{model}'.")
    return plan


def _subjects(call: Call, upstream: Upstream) -> tuple[tuple[str, Any], ...]:
    """The subjects besides the key and its owner whose limits apply to a model request."""
    grant = call.grant
    return (
        ("team", grant.team_id if grant else None),
        ("provider", upstream.provider_id),
        ("model", call.model),
    )


def _forwarded(request: HttpRequest, ingress: Ingress) -> dict[str, str] | None:
    found = {
        name: request.headers[name] for name in ingress.forwarded_headers if name in request.headers
    }
    return found or None


async def _routed(call: Call, grant: KeyGrant) -> routing.Attempts:
    """The routes the call's model may take, in the order they will be tried."""
    plan = await plan_for(grant, call.model)
    subject = f"u{grant.owner_id}" if grant.owner_id is not None else f"k{grant.id}"
    call.routing = attempts = await routing.attempts(plan, subject)
    assert attempts.current is not None
    call.upstream, call.price = attempts.current, plan.price_of(attempts.current)
    return attempts


async def _admitted(
    call: Call, grant: KeyGrant, body_bytes: int, max_tokens: int | None
) -> routing.Attempts:
    """Order the routes for the call's model and admit the request against every rule
    and budget at its worst-case cost on the first route (raises the 429 when a limit
    says no). Admission happens once: a request that fails over stays counted against
    the first route's provider limits until it settles at its real cost."""
    attempts = await _routed(call, grant)
    assert call.upstream is not None
    cost = admission.worst_case(call.price, body_bytes, max_tokens)
    await admission.admit(call, "ai_gateway", _subjects(call, call.upstream), cost)
    return attempts


async def _screen(call: Call, grant: KeyGrant, payload: dict[str, Any]) -> list[Rule]:
    """Apply the content policy to what the request sends the model; a `block` rule refuses
    it before anything goes upstream (400 naming the rule). Redact rules are not screening
    rules: `_redact` applies them. Returns the rules that apply to the answer."""
    rules = [
        rule
        for rule in await guardrails.applicable(grant.team_id, grant.id, call.model)
        if rule.action != "redact"
    ]
    if not rules:
        return []
    output = outputs.output_rules(rules)
    hits = guardrails.evaluate(rules, "\n".join(guardrails.texts(payload)), "input")
    if not hits:
        return output
    call.guardrails = [hit.public() for hit in hits]
    blocked = guardrails.blocking(hits)
    if blocked is not None:
        raise errors.bad_request(
            f"The request was refused by the content policy rule '{blocked.rule}'.",
            "guardrail_blocked",
        )
    return output


def _checked(
    call: Call, ingress: Ingress, output: list[Rule], response: HttpResponseBase
) -> HttpResponseBase:
    """A whole answer under the output rules: withheld (400 naming the rule; the provider's
    usage stays on the record) when a `block` rule fires, flagged or recorded otherwise."""
    if not output or not isinstance(response, HttpResponse) or response.status_code != 200:
        return response
    hits = outputs.check_body(output, response.content)
    if not hits:
        return response
    call.guardrails = [*(call.guardrails or ()), *outputs.public(hits)]
    blocked = guardrails.blocking(hits)
    if blocked is None:
        return response
    return _refused(call, ingress, outputs.refusal(blocked))


async def _redact(call: Call, grant: KeyGrant, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload to send upstream: with the values redact rules detect replaced by
    placeholders (the answer gets them back), counted on the record. If redaction fails, a
    fail-closed rule refuses the request (503); otherwise it goes as it came, the failure
    recorded."""
    rules = await redaction.applicable(grant.team_id, grant.id, call.model)
    if not rules:
        return payload
    outcome = redaction.redact(rules, payload)
    if outcome.hits:
        call.guardrails = [*(call.guardrails or ()), *outcome.hits]
    if outcome.counts:
        call.redactions = outcome.counts
    if outcome.failed and any(rule.fail_closed for rule in rules):
        raise redaction.failure()
    return outcome.payload


async def serve(request: HttpRequest, ingress: Ingress) -> HttpResponseBase:
    """One model request in any ingress format, to whichever provider serves the model."""
    if request.method != "POST":
        return _method_not_allowed(ingress, "POST")
    call = Call(request, ingress.name)
    handed_off = False
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        payload = ingress.parse(request.body)
        call.model = payload["model"]
        output = await _screen(call, grant, payload)
        reuse = await cache.lookup(call, grant, ingress, payload, request.headers)
        if reuse is not None and reuse.entry is not None:
            await plan_for(grant, call.model)  # a stored answer only for a model served now
            hit = await cache.replay(call, reuse)
            return _headed(call, _checked(call, ingress, output, hit))

        payload = await _redact(call, grant, payload)
        attempts = await _admitted(call, grant, len(request.body), ingress.max_tokens(payload))
        if payload.get("stream"):
            response = await attempts.run(
                call,
                lambda upstream: _stream(
                    request, call, ingress, payload, upstream, attempts.stream_ended, output
                ),
            )
            handed_off = True  # the stream writes the log record when it ends
        else:
            response = await attempts.run(
                call, lambda upstream: _complete(request, call, ingress, payload, upstream)
            )
            response = _checked(call, ingress, output, response)
        if reuse is not None:
            cache.keep(call, reuse, response)
        return _headed(call, response)
    except c.Unsupported as exc:
        return _refused(call, ingress, unsupported(exc))
    except GatewayError as error:
        return _refused(call, ingress, error)
    except asyncio.CancelledError:
        call.fail(499, "cancelled", "the request was cancelled before it completed")
        raise
    except Exception:
        call.fail(500, "internal_error", "unexpected error in the gateway")
        raise
    finally:
        if not handed_off:
            call.finish()


def _headed(call: Call, response: HttpResponseBase) -> HttpResponseBase:
    """`response` with the request's rate-limit headers and the warn rules that fired."""
    for name, value in admission.headers(call.quota).items():
        response[name] = value
    warned = [hit["rule"] for hit in call.guardrails or () if hit["action"] == "warn"]
    if warned:
        response["x-thinkwatch-guardrail"] = "warn; rules=" + ",".join(warned)
    return response


def _operation(upstream: Upstream, operation: str) -> str:
    endpoint = upstream.endpoint
    if not endpoint.supports(operation):  # type: ignore[arg-type]
        raise c.Unsupported(
            f"this kind of request ({operation})", f"the provider '{endpoint.name}'"
        )
    return endpoint.url(operation, upstream.upstream_model)  # type: ignore[arg-type]


async def _complete(
    request: HttpRequest, call: Call, ingress: Ingress, payload: dict[str, Any], upstream: Upstream
) -> HttpResponse:
    endpoint, asked = upstream.endpoint, call.model
    restorer = redaction.restorer(payload)
    operation = ingress.passthrough(endpoint.spec)
    if operation is not None:
        raw = redaction.body(payload, request.body)
        body, _ = ingress.upstream_body(payload, raw, upstream.upstream_model, False)

        def same_format(answer: Any, data: bytes) -> tuple[bytes, Any]:
            usage = ingress.usage_of(answer.get("usage") if isinstance(answer, dict) else None)
            if restorer is not None:
                data = text_filters.answer_bytes(answer, data, restorer.whole)
            if upstream.upstream_model != asked:
                data = rename_model(data, upstream.upstream_model, asked)
            return data, usage

        url = _operation(upstream, operation)
        return await proxy.complete(
            call, upstream, url, body, same_format, _forwarded(request, ingress)
        )
    canonical = ingress.decode(payload)
    provider = PROVIDER_FORMATS[endpoint.spec.format]
    body = orjson.dumps(provider.encode_request(canonical, upstream.upstream_model, endpoint.spec))

    def converted(answer: Any, data: bytes) -> tuple[bytes, Any]:
        response = provider.decode_response(answer)
        out = ingress.encode_response(response, asked)
        if restorer is not None:
            out = text_filters.map_strings(out, restorer.whole)
        return orjson.dumps(out), response.usage

    return await proxy.complete(call, upstream, _operation(upstream, "chat"), body, converted)


async def _stream(
    request: HttpRequest,
    call: Call,
    ingress: Ingress,
    payload: dict[str, Any],
    upstream: Upstream,
    on_end: Callable[[bool], None],
    output: list[Rule],
) -> HttpResponseBase:
    endpoint, asked = upstream.endpoint, call.model
    filters = redaction.filters(payload)
    if output:
        # After the restorer: the rules see what the client is sent.
        guard = outputs.StreamGuard(output)
        filters.append(guard)
        on_end = guard.recorded(call, on_end)
    operation = ingress.passthrough(endpoint.spec)
    if operation is not None:
        raw = redaction.body(payload, request.body)
        body, added_usage = ingress.upstream_body(
            payload, raw, upstream.upstream_model, endpoint.stream_usage
        )
        scan = ingress.scan(added_usage, upstream.upstream_model, asked, body)
        return await proxy.stream(
            call,
            upstream,
            _operation(upstream, operation),
            body,
            proxy.PassThrough(scan, filters, ingress.name),
            ingress.error_event,
            scan.estimated_input,
            _forwarded(request, ingress),
            on_end,
        )
    canonical = ingress.decode(payload)
    provider = PROVIDER_FORMATS[endpoint.spec.format]
    encoded = provider.encode_request(canonical, upstream.upstream_model, endpoint.spec)
    if endpoint.spec.format == "openai_chat" and not endpoint.stream_usage:
        encoded.pop("stream_options", None)
    body = orjson.dumps(encoded)
    translator = proxy.Conversion(
        provider.stream_decoder(), ingress.stream_encoder(asked, payload), filters
    )
    url = _operation(upstream, "chat_stream")
    return await proxy.stream(
        call,
        upstream,
        url,
        body,
        translator,
        ingress.error_event,
        estimate_input_tokens(body),
        on_end=on_end,
    )


async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await serve(request, OPENAI_CHAT)


async def messages(request: HttpRequest) -> HttpResponseBase:
    return await serve(request, ANTHROPIC_MESSAGES)


async def responses(request: HttpRequest) -> HttpResponseBase:
    return await serve(request, OPENAI_RESPONSES)


async def list_models(request: HttpRequest) -> HttpResponse:
    """The models the calling key may use, in OpenAI's shape (or Anthropic's, when the
    client sends `anthropic-version`)."""
    anthropic = "anthropic-version" in request.headers
    ingress = ANTHROPIC_MESSAGES if anthropic else OPENAI_CHAT
    if request.method != "GET":
        return _method_not_allowed(ingress, "GET")
    call = Call(request, "anthropic_models" if anthropic else "openai_models")
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        table = await routes.get()
        plans = [p for p in table.listed_models() if grant.allows_model(p.model_id)]
        call.status = 200
        if anthropic:
            return _json(
                {
                    "data": [
                        {
                            "type": "model",
                            "id": p.model_id,
                            "display_name": p.display_name or p.model_id,
                            "created_at": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.created)
                            ),
                        }
                        for p in plans
                    ],
                    "has_more": False,
                    "first_id": plans[0].model_id if plans else None,
                    "last_id": plans[-1].model_id if plans else None,
                }
            )
        data = [
            {"id": p.model_id, "object": "model", "created": p.created, "owned_by": "thinkwatch"}
            for p in plans
        ]
        return _json({"object": "list", "data": data})
    except GatewayError as error:
        return _refused(call, ingress, error)
    finally:
        call.finish()


def _json(body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), content_type="application/json")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from gateway.formats import for_path

    return error_response(
        for_path(request.path),
        errors.not_found(f"There is no endpoint at {request.path} on the AI gateway."),
    )


def server_error(request: HttpRequest) -> HttpResponse:
    from gateway.formats import for_path

    error = GatewayError(
        500, "api_error", "The gateway failed to handle this request.", "internal_error"
    )
    return error_response(for_path(request.path), error)


# --- embeddings -------------------------------------------------------------------------


async def embeddings(request: HttpRequest) -> HttpResponseBase:
    """OpenAI's embeddings API, to OpenAI-format providers (passed through), Gemini and
    Bedrock's Titan and Cohere embedding models (converted)."""
    if request.method != "POST":
        return _method_not_allowed(OPENAI_CHAT, "POST")
    call = Call(request, embedding_format.INGRESS)
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        payload = embedding_format.parse_request(request.body)
        call.model = payload["model"]
        await _screen(call, grant, payload)  # input rules apply to what is embedded
        payload = await _redact(call, grant, payload)
        attempts = await _admitted(call, grant, len(request.body), 0)

        async def send(upstream: Upstream) -> HttpResponse:
            embed = _EMBEDDERS.get(upstream.endpoint.spec.embedding_dialect)
            if embed is None:
                raise c.Unsupported("embeddings", f"the provider '{upstream.provider_name}'")
            return await embed(request, call, payload, upstream)

        response = await attempts.run(call, send)
        for name, value in admission.headers(call.quota).items():
            response[name] = value
        return response
    except c.Unsupported as exc:
        return _refused(call, OPENAI_CHAT, unsupported(exc))
    except GatewayError as error:
        return _refused(call, OPENAI_CHAT, error)
    except Exception:
        call.fail(500, "internal_error", "unexpected error in the gateway")
        raise
    finally:
        call.finish()


async def _embed_through(
    request: HttpRequest, call: Call, payload: dict[str, Any], upstream: Upstream
) -> HttpResponse:
    body = redaction.body(payload, request.body)
    if payload["model"] != upstream.upstream_model:
        body = orjson.dumps({**payload, "model": upstream.upstream_model})

    def same_format(answer: Any, data: bytes) -> tuple[bytes, Any]:
        usage = openai_chat.usage_of(answer.get("usage") if isinstance(answer, dict) else None)
        if upstream.upstream_model != call.model:
            data = rename_model(data, upstream.upstream_model, call.model)
        return data, usage

    return await proxy.complete(
        call, upstream, _operation(upstream, "embeddings"), body, same_format
    )


async def _embed_gemini(
    request: HttpRequest, call: Call, payload: dict[str, Any], upstream: Upstream
) -> HttpResponse:
    texts = embedding_format.texts_of(payload, "Gemini")
    body = orjson.dumps(
        gemini.encode_embeddings(upstream.upstream_model, texts, payload.get("dimensions"))
    )
    usage = Usage(input=sum(max(1, len(t) // 4) for t in texts))
    call.estimated = True  # Gemini's embedding API reports no token count

    def render(answer: Any, data: bytes) -> tuple[bytes, Any]:
        vectors = gemini.decode_embeddings(answer)
        out = embedding_format.response_body(
            call.model, vectors, usage, payload.get("encoding_format", "float")
        )
        return orjson.dumps(out), usage

    return await proxy.complete(call, upstream, _operation(upstream, "embeddings"), body, render)


async def _embed_bedrock(
    request: HttpRequest, call: Call, payload: dict[str, Any], upstream: Upstream
) -> HttpResponse:
    texts = embedding_format.texts_of(payload, "AWS Bedrock")
    model, url = upstream.upstream_model, _operation(upstream, "embeddings")
    if bedrock.embedding_dialect(model) == "cohere":

        def cohere(answer: Any, data: bytes) -> tuple[bytes, Any]:
            given = answer["embeddings"]
            vectors: list[list[float]] = given["float"] if isinstance(given, dict) else given
            usage = Usage(input=sum(max(1, len(t) // 4) for t in texts))
            call.estimated = True
            out = embedding_format.response_body(
                call.model, vectors, usage, payload.get("encoding_format", "float")
            )
            return orjson.dumps(out), usage

        return await proxy.complete(
            call, upstream, url, orjson.dumps(bedrock.encode_cohere(texts)), cohere
        )
    # Titan embeds one text per call: the calls run together, then answer as one.
    dimensions = payload.get("dimensions")
    answers = await asyncio.gather(
        *(
            proxy.fetch(
                upstream, url, orjson.dumps(bedrock.encode_titan(t, dimensions)), call.model
            )
            for t in texts
        )
    )
    try:
        vectors = [answer["embedding"] for answer, _ in answers]
        usage = Usage(
            input=sum(int(answer.get("inputTextTokenCount") or 0) for answer, _ in answers)
        )
    except (KeyError, TypeError) as exc:
        raise proxy.unreadable(upstream, exc) from None
    out = embedding_format.response_body(
        call.model, vectors, usage, payload.get("encoding_format", "float")
    )
    return proxy.reply(call, upstream, orjson.dumps(out), usage)


_EMBEDDERS = {"openai": _embed_through, "gemini": _embed_gemini, "bedrock": _embed_bedrock}


# --- count_tokens (Anthropic) -----------------------------------------------------------


async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    """Anthropic's token counter: asked of Anthropic and Gemini, estimated for the others
    (`x-thinkwatch-estimated: true`). Counting is free, so the log record has no usage."""
    ingress = ANTHROPIC_MESSAGES
    if request.method != "POST":
        return _method_not_allowed(ingress, "POST")
    call = Call(request, "anthropic_count_tokens")
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        payload = anthropic.parse_count_request(request.body)
        call.model = payload["model"]
        # Counting sends the text to the provider too: redacted like the request it counts.
        payload = await _redact(call, grant, payload)
        attempts = await _routed(call, grant)

        async def send(upstream: Upstream) -> tuple[int, bool]:
            fmt = upstream.endpoint.spec.format
            if fmt == "anthropic":
                raw = redaction.body(payload, request.body)
                body, _ = anthropic.upstream_body(payload, raw, upstream.upstream_model, False)
                url = _operation(upstream, "count_tokens")
                answer, _ = await proxy.fetch(
                    upstream, url, body, call.model, _forwarded(request, ingress)
                )
                return int(answer["input_tokens"]), False
            if fmt == "gemini":
                canonical = anthropic.decode_request({**payload, "max_tokens": 1})
                body = orjson.dumps(gemini.encode_count(canonical, upstream.upstream_model))
                answer, _ = await proxy.fetch(
                    upstream, _operation(upstream, "count_tokens"), body, call.model
                )
                return int(answer["totalTokens"]), False
            return estimate_input_tokens(request.body), True

        count, estimated = await attempts.run(call, send)
        call.status = 200
        response = _answer(call, _json({"input_tokens": count}))
        if estimated:
            response["x-thinkwatch-estimated"] = "true"
        return response
    except c.Unsupported as exc:
        return _refused(call, ingress, unsupported(exc))
    except GatewayError as error:
        return _refused(call, ingress, error)
    except (KeyError, TypeError, ValueError) as exc:
        unreadable = proxy.unreadable(call.upstream, exc)  # type: ignore[arg-type]
        call.fail(unreadable.status, unreadable.code, unreadable.message)
        return _answer(call, error_response(ingress, unreadable))
    finally:
        call.finish()
