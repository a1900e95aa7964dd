"""Providers, models and routes as the gateway sees them: one immutable snapshot, loaded
whole (it is small) and swapped when the config revision changes. Secrets are decrypted
once, here, and live only in this process's memory.
"""

import logging
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from providers.models import AIModel, Provider, Route
from providers.pricing import FREE, Price
from providers.specs import Operation, ProviderSpec
from thinkwatch.lib import crypto, http
from thinkwatch.lib.aws import AwsCredentials
from thinkwatch.lib.db import off_loop
from thinkwatch.lib.snapshot import Snapshot

logger = logging.getLogger(__name__)

_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A provider, ready to be called."""

    id: int
    name: str
    spec: ProviderSpec
    base_url: str
    headers: dict[str, str] = field(repr=False)  # carries the secret (not for Bedrock)
    timeout: aiohttp.ClientTimeout
    stream_usage: bool
    api_version: str = ""
    aws: AwsCredentials | None = field(default=None, repr=False)

    def supports(self, operation: Operation) -> bool:
        return operation in self.spec.paths

    def url(self, operation: Operation, model: str) -> str:
        path = self.spec.paths[operation].replace("{model}", quote(model, safe=""))
        url = self.base_url + path
        if self.spec.query:
            query = self.spec.query.format(api_version=quote(self.api_version, safe=""))
            url += ("&" if "?" in url else "?") + query[1:]
        return url


@dataclass(frozen=True, slots=True)
class Upstream:
    """One route of a model: where to send it, under which name, at which price."""

    endpoint: Endpoint
    upstream_model: str
    weight: int
    route_id: int | None
    price: Price | None = None  # the route's own price; None: the model's

    @property
    def provider_id(self) -> int:
        return self.endpoint.id

    @property
    def provider_name(self) -> str:
        return self.endpoint.name

    @property
    def key(self) -> str:
        """Names the route for its breaker, statistics and affinity: the route's id, or for
        models served by prefix, the provider (one breaker for all of them: the model names
        are the clients', and a provider that fails fails them all)."""
        if self.route_id is not None:
            return f"r{self.route_id}"
        return f"p{self.endpoint.id}"


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model_id: str
    registered: bool
    enabled: bool
    price: Price
    upstreams: tuple[Upstream, ...]
    created: int = 0  # unix time the model was registered
    display_name: str = ""
    strategy: str = ""  # empty: the global default (gateway.routing_strategy)
    affinity_seconds: int = 0

    def price_of(self, upstream: Upstream) -> Price:
        return upstream.price or self.price


@dataclass(frozen=True, slots=True)
class RouteTable:
    models: dict[str, ModelPlan]
    # (prefix, endpoint) for models that are not registered, longest prefix first.
    prefixes: tuple[tuple[str, Endpoint], ...]
    enabled_providers: int

    def plan(self, model_id: str) -> ModelPlan | None:
        plan = self.models.get(model_id)
        if plan is not None:
            return plan
        for prefix, endpoint in self.prefixes:
            if model_id.startswith(prefix):
                upstream = Upstream(endpoint, model_id, 1, None)
                return ModelPlan(model_id, False, True, FREE, (upstream,))
        return None

    def listed_models(self) -> list[ModelPlan]:
        return [p for p in self.models.values() if p.enabled and p.upstreams]


def _endpoint(provider: Provider) -> Endpoint | None:
    spec = provider.spec
    headers = {"Content-Type": "application/json", **spec.static_headers}
    try:
        secret = provider.reveal_secret()
        session_token = provider.reveal_session_token()
    except crypto.DecryptionError as exc:
        # Left out of the table (its models answer "no route"); the reason is logged.
        logger.error(
            "provider.secret_unreadable",
            extra={"provider": provider.name, "provider_id": provider.pk, "reason": str(exc)},
        )
        return None
    aws = None
    if spec.format == "bedrock":
        aws = AwsCredentials(provider.aws_access_key_id, secret, session_token, provider.region)
    elif secret:
        headers[spec.auth_header] = spec.auth_scheme + secret
    return Endpoint(
        id=provider.pk,
        name=provider.name,
        spec=spec,
        base_url=provider.effective_base_url,
        headers=headers,
        timeout=http.timeout(provider.read_timeout),
        stream_usage=provider.stream_usage,
        api_version=provider.api_version,
        aws=aws,
    )


def _price(model: AIModel) -> Price:
    cached = model.cached_input_price if model.cached_input_price is not None else model.input_price
    return Price(
        input=float(model.input_price) / _PER_MILLION,
        output=float(model.output_price) / _PER_MILLION,
        cached_input=float(cached) / _PER_MILLION,
        input_weight=float(model.input_multiplier),
        output_weight=float(model.output_multiplier),
    )


def _route_price(route: Route, model: Price) -> Price | None:
    """The route's price where it sets one (the rest, and the quota weights, from the
    model's). A route priced differently has its cached input at its input price unless
    the model discounts cached input: then by the same ratio."""
    if route.input_price is None and route.output_price is None:
        return None
    given = float(route.input_price) / _PER_MILLION if route.input_price is not None else None
    input_price = model.input if given is None else given
    ratio = model.cached_input / model.input if model.input else 1.0
    return Price(
        input=input_price,
        output=(
            float(route.output_price) / _PER_MILLION
            if route.output_price is not None
            else model.output
        ),
        cached_input=input_price * ratio,
        input_weight=model.input_weight,
        output_weight=model.output_weight,
    )


def load_route_table() -> RouteTable:
    endpoints: dict[int, Endpoint] = {}
    prefixes: list[tuple[str, Endpoint]] = []
    for provider in Provider.objects.filter(enabled=True).order_by("pk"):
        endpoint = _endpoint(provider)
        if endpoint is None:
            continue
        endpoints[provider.pk] = endpoint
        # The oldest enabled provider of a type serves that type's default prefixes.
        claimed = {prefix for prefix, _ in prefixes}
        prefixes += [(p, endpoint) for p in provider.spec.default_prefixes if p not in claimed]
    prices = {m.pk: (m, _price(m)) for m in AIModel.objects.all()}
    routes: dict[int, list[Upstream]] = {}
    for route in Route.objects.filter(enabled=True).order_by("pk"):
        endpoint = endpoints.get(route.provider_id)
        model, price = prices[route.model_id]
        if endpoint is not None:
            upstream = Upstream(
                endpoint,
                route.upstream_model or model.model_id,
                route.weight,
                route.pk,
                _route_price(route, price),
            )
            routes.setdefault(route.model_id, []).append(upstream)
    models = {
        m.model_id: ModelPlan(
            m.model_id,
            True,
            m.enabled,
            price,
            tuple(routes.get(m.pk, ())),
            int(m.created_at.timestamp()),
            m.display_name,
            m.routing_strategy,
            m.affinity_seconds,
        )
        for m, price in prices.values()
    }
    prefixes.sort(key=lambda item: -len(item[0]))
    return RouteTable(models, tuple(prefixes), len(endpoints))


# Reloaded on a config change (gateway/revision.py).
routes: Snapshot[RouteTable] = Snapshot(off_loop(load_route_table))
