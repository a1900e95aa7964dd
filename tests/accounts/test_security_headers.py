"""Security headers on every console response, pages that need nothing the CSP forbids,
and CORS for /api/ from the runtime setting."""

from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

from accounts import runtime
from tests.factories import McpCredentialFactory, McpServerFactory, ProviderFactory, make_key

TOOLS = "https://tools.example.com"


@pytest.fixture
def console(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def directives(response: Any) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def allow_origins(origins: list[str], capture: Any) -> None:
    with capture(execute=True):
        runtime.update({"security.cors_allowed_origins": origins})


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page", ["/admin/", "/admin/login/", "/accounts/login/", "/api/keys", "/health/live"]
)
def test_it_sends_the_security_headers_on_console_responses(console: Client, page: str) -> None:
    response = console.get(page)

    assert directives(response) == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self' ws://testserver wss://testserver",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    assert response["Permissions-Policy"].startswith("accelerometer=(), camera=()")
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_it_sends_each_header_once(console: Client) -> None:
    response = console.get("/admin/")

    names = [name.lower() for name, _ in response.items()]
    assert len(names) == len(set(names))


def test_it_sends_no_hsts_without_https(console: Client) -> None:
    assert "Strict-Transport-Security" not in console.get("/admin/login/")


@override_settings(SECURE_HSTS_SECONDS=31_536_000)
def test_it_sends_hsts_with_https_even_behind_a_tls_proxy(console: Client) -> None:
    response = console.get("/admin/login/")  # plain HTTP here, as behind the proxy

    assert response["Strict-Transport-Security"] == "max-age=31536000"


def test_a_page_whose_form_redirects_to_an_authorization_server_may_do_so(bob: User) -> None:
    server = McpServerFactory(auth_mode="per_user_oauth")
    McpCredentialFactory(user=bob, server=server, kind="oauth")
    client = Client()
    client.force_login(bob)

    response = client.get(f"/mcp/connect/{server.pk}/")

    assert response.status_code == 200
    assert directives(response)["form-action"] == "'self' https: http:"


# --- pages under the policy -----------------------------------------------------------------


class InlineCode(HTMLParser):
    """What a page holds that the console's CSP refuses: inline scripts, event handler and
    style attributes, <style> elements, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []
        self._inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.refused.append(f"<{tag} {name}>")
            if (value or "").strip().lower().startswith("javascript:"):
                self.refused.append(f"<{tag} {name}=javascript:...>")
        names = dict(attrs)
        if tag == "script":
            self._inline_script = "src" not in names and names.get("type") != "application/json"
        if tag == "style":
            self.refused.append("<style>")

    def handle_data(self, data: str) -> None:
        if self._inline_script and data.strip():
            self.refused.append(f"inline script {data.strip()[:60]!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inline_script = False


def refused_under_the_policy(response: Any) -> list[str]:
    assert directives(response)["script-src"] == "'self'"
    page = InlineCode()
    page.feed(response.content.decode())
    return page.refused


def admin_pages(user: User) -> list[str]:
    """The index, each list, each add form the user may use, and a few change forms."""
    request = RequestFactory().get("/admin/")
    request.user = user
    pages = ["/admin/", "/admin/password_change/"]
    for model, model_admin in admin.site._registry.items():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{name}_changelist"))
        pages += [reverse(f"{name}_add")] if model_admin.has_add_permission(request) else []
    key, _ = make_key(user, name="listed")
    provider = ProviderFactory()
    return [
        *pages,
        reverse("admin:auth_user_change", args=[user.pk]),
        reverse("admin:accounts_apikey_change", args=[key.pk]),
        reverse("admin:providers_provider_change", args=[provider.pk]),
    ]


def test_the_admin_pages_need_nothing_the_policy_forbids(console: Client, alice: User) -> None:
    responses = {page: console.get(page, follow=True) for page in admin_pages(alice)}

    refused = {page: refused_under_the_policy(r) for page, r in responses.items()}
    assert {page: r.status_code for page, r in responses.items() if r.status_code != 200} == {}
    assert {page: problems for page, problems in refused.items() if problems} == {}


@pytest.mark.parametrize("page", ["/accounts/login/", "/admin/login/", "/setup"])
def test_our_sign_in_pages_need_nothing_the_policy_forbids(db: None, page: str) -> None:
    response = Client().get(page)

    assert response.status_code == 200
    assert refused_under_the_policy(response) == []


def test_the_mcp_connections_page_needs_nothing_the_policy_forbids(bob: User) -> None:
    client = Client()
    client.force_login(bob)

    response = client.get("/mcp/connections/")

    assert response.status_code == 200
    assert refused_under_the_policy(response) == []


def test_a_new_keys_page_loads_its_copy_button_from_a_file(console: Client, alice: User) -> None:
    response = console.post(
        "/admin/accounts/apikey/add/",
        {"name": "ci", "owner": alice.pk, "surfaces": ["ai_gateway"], "allowed_models": "*"},
        follow=True,
    )

    assert b'src="/static/thinkwatch/copy.js"' in response.content
    assert refused_under_the_policy(response) == []


# --- CORS for /api/ -------------------------------------------------------------------------


def preflight(path: str = "/api/keys", origin: str = TOOLS) -> Any:
    return Client().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )


def test_it_allows_a_preflight_from_a_configured_origin(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    allow_origins([TOOLS], django_capture_on_commit_callbacks)

    response = preflight()

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == TOOLS
    assert "authorization" in response["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.parametrize(
    ("path", "origin"),
    [
        ("/api/keys", "https://evil.example.com"),
        ("/api/keys", "http://tools.example.com"),
        ("/api/keys", "null"),
        ("/admin/", TOOLS),
        ("/accounts/login/", TOOLS),
    ],
)
def test_it_refuses_other_origins_and_pages_outside_the_api(
    db: None, django_capture_on_commit_callbacks: Any, path: str, origin: str
) -> None:
    allow_origins([TOOLS], django_capture_on_commit_callbacks)

    assert "Access-Control-Allow-Origin" not in preflight(path, origin)


def test_it_refuses_every_origin_by_default(db: None) -> None:
    assert "Access-Control-Allow-Origin" not in preflight()


def test_a_change_of_the_allowed_origins_applies_without_a_restart(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    allow_origins([TOOLS], django_capture_on_commit_callbacks)
    assert preflight()["Access-Control-Allow-Origin"] == TOOLS

    allow_origins(["https://other.example.com"], django_capture_on_commit_callbacks)

    assert "Access-Control-Allow-Origin" not in preflight()
    assert preflight(origin="https://other.example.com")["Access-Control-Allow-Origin"]


def test_a_browser_on_a_configured_origin_calls_the_api_with_a_key(
    alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    allow_origins([TOOLS], django_capture_on_commit_callbacks)
    _, key = make_key(alice, surfaces=["console"])

    response = Client().get("/api/keys", HTTP_ORIGIN=TOOLS, HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == TOOLS
    assert "origin" in response["Vary"].lower()
