"""The AI gateway's endpoints (port 3000). Auth and routing come from in-process caches;
a warm request touches no database."""

import asyncio

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from accounts.models import Surface
from gateway import errors, openai, proxy
from gateway.accounting import Call
from gateway.auth import authenticate
from gateway.errors import GatewayError
from providers.cache import routes


def _method_not_allowed(allowed: str) -> HttpResponse:
    error = GatewayError(
        405, "invalid_request_error", f"Use {allowed} on this endpoint.", "method_not_allowed"
    )
    response = errors.openai_response(error)
    response["Allow"] = allowed
    return response


async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return _method_not_allowed("POST")
    call = Call(request, openai.INGRESS)
    handed_off = False
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        payload = openai.parse_request(request.body)
        call.model = model = payload["model"]
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
        call.price = plan.price
        call.upstream = upstream = plan.pick()
        body, added_usage = openai.upstream_body(
            payload, request.body, upstream.upstream_model, upstream.endpoint.stream_usage
        )
        if payload.get("stream"):
            scan = openai.StreamScan(added_usage, upstream.upstream_model, model, body)
            response = await proxy.stream(call, upstream, body, scan)
            handed_off = True  # the stream writes the log record when it ends
            return response
        return await proxy.complete(call, upstream, body)
    except GatewayError as error:
        call.fail(error.status, error.code, error.message)
        return errors.openai_response(error)
    except asyncio.CancelledError:
        call.fail(499, "cancelled", "the request was cancelled before it completed")
        raise
    except Exception:
        call.fail(500, "internal_error", "unexpected error in the gateway")
        raise
    finally:
        if not handed_off:
            call.finish()


async def list_models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    call = Call(request, "openai_models")
    try:
        call.grant = grant = await authenticate(request.META, Surface.AI_GATEWAY)
        table = await routes.get()
        data = [
            {
                "id": plan.model_id,
                "object": "model",
                "created": plan.created,
                "owned_by": "thinkwatch",
            }
            for plan in table.listed_models()
            if grant.allows_model(plan.model_id)
        ]
        call.status = 200
        return HttpResponse(
            orjson.dumps({"object": "list", "data": data}), content_type="application/json"
        )
    except GatewayError as error:
        call.fail(error.status, error.code, error.message)
        return errors.openai_response(error)
    finally:
        call.finish()


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return errors.openai_response(
        errors.not_found(f"There is no endpoint at {request.path} on the AI gateway.")
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return errors.openai_response(
        GatewayError(
            500, "api_error", "The gateway failed to handle this request.", "internal_error"
        )
    )
