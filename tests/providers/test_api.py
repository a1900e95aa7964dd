"""Providers, models and routes through the management API."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from providers.models import Provider
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory, make_key


@pytest.fixture
def api(alice: User) -> Client:
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_stores_a_provider_secret_encrypted_and_never_returns_it(api: Client) -> None:
    response = api.post(
        "/api/providers",
        {"name": "OpenAI", "type": "openai", "api_key": "sk-live-very-secret"},
        content_type="application/json",
    )

    provider = Provider.objects.get()
    listed = api.get("/api/providers")
    assert response.status_code == 201
    assert response.json()["has_api_key"] is True
    assert (
        "sk-live-very-secret"
        not in response.content.decode() + listed.content.decode() + provider.secret
    )
    assert provider.reveal_secret() == "sk-live-very-secret"


def test_it_documents_the_secret_as_write_only(api: Client) -> None:
    schemas = api.get("/api/openapi.json").json()["components"]["schemas"]

    assert "api_key" in schemas["ProviderIn"]["properties"]
    assert "api_key" not in schemas["ProviderOut"]["properties"]


def test_it_removes_a_provider_secret_with_an_empty_string(api: Client) -> None:
    provider = ProviderFactory(type="openai_compatible")

    response = api.patch(
        f"/api/providers/{provider.pk}", {"api_key": ""}, content_type="application/json"
    )

    assert response.json()["has_api_key"] is False


def test_it_keeps_the_secret_when_a_patch_leaves_it_out(api: Client) -> None:
    provider = ProviderFactory(api_key="sk-keep-me")

    api.patch(f"/api/providers/{provider.pk}", {"enabled": False}, content_type="application/json")

    provider.refresh_from_db()
    assert provider.reveal_secret() == "sk-keep-me"


def test_it_refuses_to_remove_the_key_a_provider_type_needs(api: Client) -> None:
    provider = ProviderFactory(type="openai")

    response = api.patch(
        f"/api/providers/{provider.pk}", {"api_key": ""}, content_type="application/json"
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "api_key"


def test_it_requires_a_base_url_for_a_compatible_provider(api: Client) -> None:
    response = api.post(
        "/api/providers",
        {"name": "vllm", "type": "openai_compatible"},
        content_type="application/json",
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "base_url"


def test_it_rejects_a_base_url_that_is_not_http(api: Client) -> None:
    response = api.post(
        "/api/providers",
        {"name": "x", "type": "openai_compatible", "base_url": "file:///etc/passwd"},
        content_type="application/json",
    )

    assert response.status_code == 422


def test_it_refuses_to_delete_a_provider_with_routes(api: Client) -> None:
    route = RouteFactory()

    response = api.delete(f"/api/providers/{route.provider_id}")

    assert response.status_code == 409


def test_it_manages_a_model_and_its_routes(api: Client) -> None:
    provider = ProviderFactory()
    model = api.post(
        "/api/models",
        {"model_id": "house-chat", "input_price": "0.5"},
        content_type="application/json",
    ).json()

    route = api.post(
        f"/api/models/{model['id']}/routes",
        {"provider_id": provider.pk, "upstream_model": "gpt-4o", "weight": 3},
        content_type="application/json",
    ).json()
    api.patch(
        f"/api/models/{model['id']}/routes/{route['id']}",
        {"enabled": False},
        content_type="application/json",
    )

    routes = api.get(f"/api/models/{model['id']}/routes").json()
    assert [(r["upstream_model"], r["weight"], r["enabled"]) for r in routes] == [
        ("gpt-4o", 3, False)
    ]


def test_it_rejects_a_duplicate_model_id(api: Client) -> None:
    AIModelFactory(model_id="house-chat")

    response = api.post("/api/models", {"model_id": "house-chat"}, content_type="application/json")

    assert response.status_code == 422


def test_it_rejects_a_route_to_a_missing_provider(api: Client) -> None:
    model = AIModelFactory()

    response = api.post(
        f"/api/models/{model.pk}/routes", {"provider_id": 999}, content_type="application/json"
    )

    assert response.status_code == 422


def test_it_rejects_a_negative_price(api: Client) -> None:
    response = api.post(
        "/api/models", {"model_id": "m", "input_price": "-1"}, content_type="application/json"
    )

    assert response.status_code == 422


def test_it_sets_a_models_routing_and_a_routes_own_price(api: Client) -> None:
    route = RouteFactory()
    model = route.model

    changed = api.patch(
        f"/api/models/{model.pk}",
        {"routing_strategy": "cheapest", "affinity_seconds": 300},
        content_type="application/json",
    ).json()
    priced = api.patch(
        f"/api/models/{model.pk}/routes/{route.pk}",
        {"input_price": "0.05", "output_price": "0.2"},
        content_type="application/json",
    ).json()

    assert (changed["routing_strategy"], changed["affinity_seconds"]) == ("cheapest", 300)
    route.refresh_from_db()
    assert (Decimal(priced["input_price"]), Decimal(priced["output_price"])) == (
        Decimal("0.05"),
        Decimal("0.2"),
    )
    assert (route.input_price, route.output_price) == (Decimal("0.05"), Decimal("0.2"))


@pytest.mark.parametrize(
    "change",
    [{"routing_strategy": "fastest"}, {"affinity_seconds": -1}, {"affinity_seconds": 86401}],
)
def test_it_rejects_an_unknown_strategy_or_affinity(api: Client, change: dict[str, object]) -> None:
    model = AIModelFactory()

    response = api.patch(f"/api/models/{model.pk}", change, content_type="application/json")

    assert response.status_code == 422
