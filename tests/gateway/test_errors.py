"""Every refusal in OpenAI's error shape with an honest status, and logged."""

from datetime import timedelta

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiKey
from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.factories import AIModelFactory, RouteFactory, make_key
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Say hello."}]


def sdk(gateway: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=30)


def post(gateway: LiveServer, key: str | None, body: bytes, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", content=body, headers=headers, timeout=30
    )


def test_it_rejects_a_request_without_a_key(gateway: LiveServer, openai_provider: Provider) -> None:
    response = post(gateway, None, b'{"model": "gpt-4o-mini", "messages": []}')

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_it_rejects_an_unknown_key(gateway: LiveServer, openai_provider: Provider) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, "tw-" + "0" * 96).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_it_accepts_the_key_as_x_api_key(
    gateway: LiveServer, openai_provider: Provider, bob_key: str
) -> None:
    response = post(
        gateway,
        None,
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
        **{"x-api-key": bob_key},
    )

    assert response.status_code == 200


def test_it_rejects_an_expired_key(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    _, key = make_key(bob, expires_at=timezone.now() - timedelta(minutes=1))

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "expired_api_key"


def test_it_rejects_a_revoked_key(
    gateway: LiveServer, openai_provider: Provider, bob: User, alice: User
) -> None:
    api_key, key = make_key(bob)
    api_key.revoke("laptop stolen", by=alice)

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "revoked_api_key"


def test_it_rejects_a_key_revoked_after_it_was_cached(
    gateway: LiveServer, openai_provider: Provider, bob: User, alice: User
) -> None:
    api_key, key = make_key(bob)
    sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    api_key.revoke("leaked in a public repository", by=alice)

    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_it_rejects_a_key_unused_longer_than_its_inactivity_timeout(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    api_key, key = make_key(bob, inactivity_timeout_days=30)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(days=31))

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "inactive_api_key"


def test_it_rejects_a_key_without_the_ai_gateway_surface(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    _, key = make_key(bob, surfaces=["mcp_gateway"])

    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "surface_not_allowed"


def test_it_rejects_a_model_the_key_may_not_use(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    _, key = make_key(bob, allowed_models=["gpt-4o-mini"])

    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk(gateway, key).chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert caught.value.code == "model_not_allowed"


def test_it_allows_models_matching_the_keys_patterns(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    _, key = make_key(bob, allowed_models=["gpt-4o*"])

    completion = sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.model == "gpt-4o-mini"


def test_it_answers_404_for_an_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="llama-unknown", messages=MESSAGES)

    assert caught.value.code == "model_not_found"


def test_it_refuses_a_disabled_model(client: openai.OpenAI, openai_provider: Provider) -> None:
    RouteFactory(
        model=AIModelFactory(model_id="gpt-4o-mini", enabled=False), provider=openai_provider
    )

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "model_disabled"


def test_it_answers_503_when_no_route_is_enabled(
    client: openai.OpenAI, openai_provider: Provider
) -> None:
    RouteFactory(
        model=AIModelFactory(model_id="house-model"), provider=openai_provider, enabled=False
    )

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="house-model", messages=MESSAGES)

    assert caught.value.status_code == 503


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_model"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "invalid_messages"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], '
            b'"stream": "yes"}',
            "invalid_stream",
        ),
    ],
)
def test_it_rejects_a_malformed_request(
    gateway: LiveServer,
    openai_provider: Provider,
    bob_key: str,
    upstream: FakeOpenAI,
    body: bytes,
    code: str,
) -> None:
    response = post(gateway, bob_key, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert upstream.requests == []


def test_it_rejects_an_oversize_body_with_413(
    gateway: LiveServer,
    openai_provider: Provider,
    bob_key: str,
    upstream: FakeOpenAI,
    settings: object,
) -> None:
    body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * (11 * 1024 * 1024)
        + b'"}]}'
    )

    response = post(gateway, bob_key, body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert upstream.requests == []


def test_it_answers_502_when_the_provider_fails(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(status=500)

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert [(r.status_code, r.error_code) for r in logged()] == [(502, "upstream_error")]


def test_it_answers_504_when_the_provider_is_too_slow(
    client: openai.OpenAI, upstream: FakeOpenAI, openai_provider: Provider
) -> None:
    openai_provider.read_timeout = 0.3
    openai_provider.save()
    upstream.script(delay=2)

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_it_answers_502_when_the_provider_is_unreachable(
    client: openai.OpenAI, openai_provider: Provider
) -> None:
    openai_provider.base_url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    openai_provider.save()

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"


def test_it_relays_the_providers_validation_error(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(
        status=400,
        error={
            "message": "max_tokens is too large",
            "type": "invalid_request_error",
            "code": "invalid_value",
        },
    )

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.message.endswith("max_tokens is too large")


def test_it_hides_the_providers_auth_failure_behind_a_502(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(expected_key="sk-some-other-key")

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "upstream_auth_failed"
    assert "sk-" not in str(caught.value.body)


def test_it_passes_the_providers_retry_after_on_429(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(status=429, headers={"Retry-After": "7"})

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert caught.value.response.headers["retry-after"] == "7"


def test_it_logs_refused_requests(gateway: LiveServer, openai_provider: Provider) -> None:
    post(gateway, "tw-" + "1" * 96, b'{"model": "gpt-4o-mini", "messages": []}')

    assert [(r.status_code, r.error_code, r.api_key_id) for r in logged()] == [
        (401, "invalid_api_key", None)
    ]


def test_it_answers_unknown_paths_with_a_json_404(gateway: LiveServer) -> None:
    response = httpx.get(f"{gateway.url}/admin/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
