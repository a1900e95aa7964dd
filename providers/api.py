from datetime import datetime
from decimal import Decimal
from typing import Literal

from django.db.models import ProtectedError
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from providers import logic
from providers.models import AIModel, Provider, Route
from thinkwatch.edits import apply_edits
from thinkwatch.guard import needs

providers_router = Router(tags=["providers"])
models_router = Router(tags=["models"])

ProviderType = Literal[
    "openai", "openai_compatible", "azure_openai", "anthropic", "gemini", "bedrock"
]


class ProviderOut(Schema):
    id: int
    name: str
    type: str
    base_url: str = Field(..., alias="effective_base_url")
    api_version: str
    region: str
    aws_access_key_id: str
    enabled: bool
    read_timeout: float | None
    stream_usage: bool
    has_api_key: bool = Field(..., alias="has_secret")
    created_at: datetime
    updated_at: datetime


class ProviderIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    type: ProviderType
    base_url: str = ""
    api_key: str = Field(
        "",
        description="Write-only; stored encrypted, never returned. Bedrock: the AWS secret key.",
    )
    api_version: str = Field("", description="Azure OpenAI's api-version.")
    region: str = Field("", description="AWS Bedrock's region.")
    aws_access_key_id: str = ""
    aws_session_token: str = Field("", description="Bedrock temporary credentials; write-only.")
    enabled: bool = True
    read_timeout: float | None = Field(None, gt=0)
    stream_usage: bool = True


class ProviderPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    base_url: str | None = None
    api_key: str | None = Field(None, description="Write-only. An empty string removes the key.")
    api_version: str | None = None
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_session_token: str | None = Field(
        None, description="Write-only. An empty string removes it."
    )
    enabled: bool | None = None
    read_timeout: float | None = Field(None, gt=0)
    stream_usage: bool | None = None


@providers_router.get("", response=list[ProviderOut])
@needs("providers:read")
def list_providers(request: HttpRequest) -> list[Provider]:
    return list(Provider.objects.all())


@providers_router.post("", response={201: ProviderOut})
@needs("providers:create")
def create_provider(request: HttpRequest, payload: ProviderIn) -> Status[Provider]:
    return Status(201, logic.create_provider(**payload.dict()))


@providers_router.get("/{provider_id}", response=ProviderOut)
@needs("providers:read")
def get_provider(request: HttpRequest, provider_id: int) -> Provider:
    return get_object_or_404(Provider, pk=provider_id)


@providers_router.patch("/{provider_id}", response=ProviderOut)
@needs("providers:update")
def update_provider(request: HttpRequest, provider_id: int, payload: ProviderPatch) -> Provider:
    provider = get_object_or_404(Provider, pk=provider_id)
    changes = payload.dict(exclude_unset=True)
    if "api_key" in changes:
        provider.set_secret(changes.pop("api_key") or "")
    if "aws_session_token" in changes:
        provider.set_session_token(changes.pop("aws_session_token") or "")
    return apply_edits(provider, changes)


@providers_router.delete("/{provider_id}", response={204: None})
@needs("providers:delete")
def delete_provider(request: HttpRequest, provider_id: int) -> Status[None]:
    provider = get_object_or_404(Provider, pk=provider_id)
    try:
        provider.delete_softly()
    except ProtectedError:
        raise HttpError(409, "Routes still use this provider; delete or move them first.") from None
    return Status(204, None)


Strategy = Literal["", "weighted", "latency", "healthiest", "cheapest"]
STRATEGY_HELP = (
    "How the model's routes are ordered: weighted, latency (lowest moving average), "
    "healthiest (fewest recent failures), cheapest; empty: the global default "
    "(runtime setting gateway.routing_strategy)."
)
AFFINITY_HELP = (
    "Keep a user (or service key) on the route that last served them for this many "
    "seconds while it stays healthy; 0: off."
)
ROUTE_PRICE_HELP = "USD per 1M tokens on this route; null: the model's price."


class ModelOut(Schema):
    id: int
    model_id: str
    display_name: str
    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal | None
    input_multiplier: Decimal
    output_multiplier: Decimal
    enabled: bool
    routing_strategy: str
    affinity_seconds: int
    created_at: datetime
    updated_at: datetime


class ModelIn(Schema):
    model_id: str = Field(..., min_length=1, max_length=200)
    display_name: str = ""
    input_price: Decimal = Field(Decimal(0), ge=0, description="USD per 1M input tokens")
    output_price: Decimal = Field(Decimal(0), ge=0, description="USD per 1M output tokens")
    cached_input_price: Decimal | None = Field(None, ge=0)
    input_multiplier: Decimal = Field(Decimal(1), ge=0)
    output_multiplier: Decimal = Field(Decimal(1), ge=0)
    enabled: bool = True
    routing_strategy: Strategy = Field("", description=STRATEGY_HELP)
    affinity_seconds: int = Field(0, ge=0, le=86400, description=AFFINITY_HELP)


class ModelPatch(Schema):
    display_name: str | None = None
    input_price: Decimal | None = Field(None, ge=0)
    output_price: Decimal | None = Field(None, ge=0)
    cached_input_price: Decimal | None = Field(None, ge=0)
    input_multiplier: Decimal | None = Field(None, ge=0)
    output_multiplier: Decimal | None = Field(None, ge=0)
    enabled: bool | None = None
    routing_strategy: Strategy | None = Field(None, description=STRATEGY_HELP)
    affinity_seconds: int | None = Field(None, ge=0, le=86400, description=AFFINITY_HELP)


@models_router.get("", response=list[ModelOut])
@needs("models:read")
def list_models(request: HttpRequest) -> list[AIModel]:
    return list(AIModel.objects.all())


@models_router.post("", response={201: ModelOut})
@needs("models:create")
def create_model(request: HttpRequest, payload: ModelIn) -> Status[AIModel]:
    return Status(201, apply_edits(AIModel(), payload.dict()))


@models_router.get("/{model_pk}", response=ModelOut)
@needs("models:read")
def get_model(request: HttpRequest, model_pk: int) -> AIModel:
    return get_object_or_404(AIModel, pk=model_pk)


@models_router.patch("/{model_pk}", response=ModelOut)
@needs("models:update")
def update_model(request: HttpRequest, model_pk: int, payload: ModelPatch) -> AIModel:
    model = get_object_or_404(AIModel, pk=model_pk)
    return apply_edits(model, payload.dict(exclude_unset=True))


@models_router.delete("/{model_pk}", response={204: None})
@needs("models:delete")
def delete_model(request: HttpRequest, model_pk: int) -> Status[None]:
    get_object_or_404(AIModel, pk=model_pk).delete()
    return Status(204, None)


class RouteOut(Schema):
    id: int
    provider_id: int
    upstream_model: str
    weight: int
    enabled: bool
    input_price: Decimal | None
    output_price: Decimal | None
    created_at: datetime


class RouteIn(Schema):
    provider_id: int
    upstream_model: str = Field("", max_length=200, description="Empty: send the model id as is.")
    weight: int = Field(100, ge=1)
    enabled: bool = True
    input_price: Decimal | None = Field(None, ge=0, description=ROUTE_PRICE_HELP)
    output_price: Decimal | None = Field(None, ge=0, description=ROUTE_PRICE_HELP)


class RoutePatch(Schema):
    upstream_model: str | None = Field(None, max_length=200)
    weight: int | None = Field(None, ge=1)
    enabled: bool | None = None
    input_price: Decimal | None = Field(None, ge=0, description=ROUTE_PRICE_HELP)
    output_price: Decimal | None = Field(None, ge=0, description=ROUTE_PRICE_HELP)


@models_router.get("/{model_pk}/routes", response=list[RouteOut])
@needs("routes:read")
def list_routes(request: HttpRequest, model_pk: int) -> list[Route]:
    return list(get_object_or_404(AIModel, pk=model_pk).routes.all())


@models_router.post("/{model_pk}/routes", response={201: RouteOut})
@needs("routes:create")
def create_route(request: HttpRequest, model_pk: int, payload: RouteIn) -> Status[Route]:
    model = get_object_or_404(AIModel, pk=model_pk)
    if not Provider.objects.filter(pk=payload.provider_id).exists():
        raise HttpError(422, f"There is no provider with id {payload.provider_id}.")
    return Status(201, apply_edits(Route(model=model), payload.dict()))


@models_router.patch("/{model_pk}/routes/{route_id}", response=RouteOut)
@needs("routes:update")
def update_route(request: HttpRequest, model_pk: int, route_id: int, payload: RoutePatch) -> Route:
    route = get_object_or_404(Route, pk=route_id, model_id=model_pk)
    return apply_edits(route, payload.dict(exclude_unset=True))


@models_router.delete("/{model_pk}/routes/{route_id}", response={204: None})
@needs("routes:delete")
def delete_route(request: HttpRequest, model_pk: int, route_id: int) -> Status[None]:
    get_object_or_404(Route, pk=route_id, model_id=model_pk).delete()
    return Status(204, None)
