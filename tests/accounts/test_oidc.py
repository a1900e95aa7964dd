"""Console sign-in through an OpenID Provider: the real oidc-provider (npm) on loopback, the
console through Django's test client, the provider through httpx as a browser would."""

import html
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts import oidc
from accounts.access import builtin_role
from accounts.models import OidcConfig, RoleAssignment, Team
from tests.accounts.openid_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    OpenIdProvider,
    public,
    signing_jwk,
    through_the_provider,
)
from tests.factories import TeamFactory, UserFactory, make_key
from tests.mcp.oauth_helpers import MetadataServer

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytest_plugins = ["tests.accounts.oidc_fixture"]

MAPPING = [
    {"group": "tw-admins", "role": "admin", "team": None},
    {"group": "engineering", "role": "developer", "team": None},
    {"group": "payments", "role": "team-manager", "team": "Payments"},
]
DANA = {
    "email": "dana@example.com",
    "email_verified": True,
    "given_name": "Dana",
    "family_name": "Scully",
    "groups": ["engineering", "payments"],
}


@pytest.fixture
def payments(db: None) -> Team:
    return TeamFactory.create(name="Payments")


@pytest.fixture
def configured(db: None, op: OpenIdProvider, payments: Team) -> OidcConfig:
    """Single sign-on with the company's provider, saved but never tested (so off):
    tw-admins are admins, engineering developers, payments manage the Payments team."""
    changes = {"issuer": op.issuer, "client_id": CLIENT_ID, "group_roles": MAPPING}
    changes["scopes"] = "openid email profile groups"
    return oidc.configure(OidcConfig.current(), changes, CLIENT_SECRET)


@pytest.fixture
def sso(configured: OidcConfig) -> OidcConfig:
    """The same, tested and enabled."""
    assert configured.mark_tested(configured.fingerprint())
    configured.enabled = True
    configured.save()
    return configured


@pytest.fixture
def browser() -> Client:
    return Client()


@pytest.fixture
def console(alice: User) -> Client:
    """Alice's browser, signed in to the console."""
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def api(alice: User) -> Client:
    """Alice's console key, as a management API client."""
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def charlie(db: None) -> User:
    """Charlie is a Viewer: he may read settings, not change them."""
    charlie = UserFactory.create(username="charlie@example.com")
    RoleAssignment.objects.create(user=charlie, role=builtin_role("viewer"))
    return charlie


def callback_for(browser: Client, sub: str, claims: dict[str, Any]) -> str:
    """Press "Sign in with SSO" and sign in at the provider: the URL it sends the browser
    back to."""
    start = browser.get("/oidc/authenticate/")
    assert start.status_code == 302, start.content
    return through_the_provider(start["Location"], sub, claims)


def sso_sign_in(browser: Client, sub: str, claims: dict[str, Any]) -> "Response":
    return browser.get(callback_for(browser, sub, claims))


def text(response: "Response") -> str:
    return html.unescape(response.content.decode())


def signed_in_as(browser: Client) -> str | None:
    user_id = browser.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


def roles_of(user: User) -> set[tuple[str, str | None]]:
    rows = RoleAssignment.objects.filter(user=user).values_list("role__slug", "team__name")
    return set(rows)


def without_iss(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "iss"])
    return parts._replace(query=query).geturl()


def as_sent(url: str) -> str:
    return url


def put(api: Client, config: OidcConfig, **changes: Any) -> "Response":
    body = {
        "enabled": config.enabled,
        "issuer": config.issuer,
        "client_id": config.client_id,
        "scopes": config.scopes,
        "group_roles": config.group_roles,
        **changes,
    }
    return api.put("/api/sso/oidc", body, content_type="application/json")


def run_test_sign_in(console: Client, sub: str, claims: dict[str, Any]) -> "Response":
    start = console.post("/admin/accounts/oidcconfig/test/")
    assert start.status_code == 302, start.content
    return console.get(through_the_provider(start["Location"], sub, claims))


# --- signing in ---------------------------------------------------------------------------


def test_it_creates_an_unknown_person_with_the_roles_of_their_groups(
    sso: OidcConfig, browser: Client
) -> None:
    response = sso_sign_in(browser, "dana-1", DANA)

    dana = User.objects.get(username="dana@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert signed_in_as(browser) == "dana@example.com"
    assert (dana.email, dana.first_name, dana.last_name) == ("dana@example.com", "Dana", "Scully")
    assert roles_of(dana) == {("developer", None), ("team-manager", "Payments")}


def test_it_signs_in_an_existing_account_and_updates_it_from_the_claims(
    sso: OidcConfig, bob: User, browser: Client
) -> None:
    claims = {"email": "bob@example.com", "given_name": "Robert", "groups": ["engineering"]}

    sso_sign_in(browser, "bob-1", claims)

    bob.refresh_from_db()
    assert signed_in_as(browser) == "bob@example.com"
    assert bob.first_name == "Robert"
    assert User.objects.filter(email__iexact="bob@example.com").count() == 1


def test_it_takes_away_mapped_roles_the_groups_no_longer_give_and_keeps_the_others(
    sso: OidcConfig, bob: User, browser: Client
) -> None:
    RoleAssignment.objects.create(user=bob, role=builtin_role("admin"))
    RoleAssignment.objects.create(user=bob, role=builtin_role("viewer"))

    sso_sign_in(browser, "bob-1", {"email": "bob@example.com", "groups": ["engineering"]})

    assert roles_of(bob) == {("developer", None), ("viewer", None)}


def test_it_gives_the_roles_of_a_group_joined_since_the_last_sign_in(
    sso: OidcConfig, bob: User, browser: Client
) -> None:
    sso_sign_in(browser, "bob-1", {"email": "bob@example.com", "groups": ["tw-admins"]})

    bob.refresh_from_db()
    assert ("admin", None) in roles_of(bob)
    assert bob.is_staff


def test_it_refuses_a_disabled_account(sso: OidcConfig, bob: User, browser: Client) -> None:
    bob.is_active = False
    bob.save()

    response = sso_sign_in(browser, "bob-1", {"email": "bob@example.com", "groups": []})

    assert response.status_code == 400
    assert "The account 'bob@example.com' is disabled" in text(response)
    assert signed_in_as(browser) is None


def test_it_refuses_someone_unknown_when_sso_does_not_create_accounts(
    sso: OidcConfig, browser: Client
) -> None:
    OidcConfig.objects.filter(pk=sso.pk).update(create_users=False)

    response = sso_sign_in(browser, "dana-1", DANA)

    assert response.status_code == 400
    assert "There is no ThinkWatch account 'dana@example.com'" in text(response)
    assert not User.objects.filter(username="dana@example.com").exists()


def test_it_refuses_an_unverified_email_as_the_username(
    sso: OidcConfig, bob: User, browser: Client
) -> None:
    claims = {"email": "bob@example.com", "email_verified": False}

    response = sso_sign_in(browser, "mallory-1", claims)

    assert response.status_code == 400
    assert "not verified" in response.content.decode()
    assert signed_in_as(browser) is None


def test_it_refuses_a_replayed_callback(sso: OidcConfig, browser: Client) -> None:
    callback = callback_for(browser, "dana-1", DANA)
    assert browser.get(callback).status_code == 302

    replayed = browser.get(callback)

    assert replayed.status_code == 400
    assert "unknown or was already used" in replayed.content.decode()


def test_it_refuses_a_callback_racing_another_with_the_same_state(
    sso: OidcConfig, browser: Client
) -> None:
    """The second of two simultaneous callbacks read the session before the first removed
    the state from it."""
    callback = callback_for(browser, "dana-1", DANA)
    states = browser.session["oidc_states"]
    assert browser.get(callback).status_code == 302
    session = browser.session
    session["oidc_states"] = states
    session.save()

    raced = browser.get(callback)

    assert raced.status_code == 400
    assert "already used" in raced.content.decode()


def test_it_refuses_a_callback_in_a_browser_that_did_not_start_the_sign_in(
    sso: OidcConfig, browser: Client
) -> None:
    """Login CSRF: Mallory cannot sign Dana's browser in as Mallory."""
    mallorys_callback = callback_for(Client(), "mallory-1", {"email": "mallory@example.com"})

    response = browser.get(mallorys_callback)

    assert response.status_code == 400
    assert signed_in_as(browser) is None


def test_it_refuses_an_id_token_without_the_nonce_it_sent(sso: OidcConfig, browser: Client) -> None:
    start = browser.get("/oidc/authenticate/")
    session = browser.session
    session["oidc_states"] = {
        state: {**flow, "nonce": "another-nonce"} for state, flow in session["oidc_states"].items()
    }
    session.save()

    response = browser.get(through_the_provider(start["Location"], "dana-1", DANA))

    assert response.status_code == 400
    assert "Nonce" in response.content.decode()
    assert signed_in_as(browser) is None


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        (as_sent, "The answer came from"),
        (without_iss, "The ID token was issued by"),
    ],
)
def test_it_refuses_an_id_token_from_another_issuer(
    sso: OidcConfig,
    impostor: OpenIdProvider,
    browser: Client,
    answer: Callable[[str], str],
    refusal: str,
) -> None:
    """Another provider (same client, same key) answers in the configured one's place; with
    the RFC 9207 iss parameter the answer is refused at once, without it the ID token is."""
    endpoints = impostor.discovery()
    OidcConfig.objects.filter(pk=sso.pk).update(
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        userinfo_endpoint=endpoints["userinfo_endpoint"],
    )

    response = browser.get(answer(callback_for(browser, "dana-1", DANA)))

    assert response.status_code == 400
    assert refusal in response.content.decode()
    assert not User.objects.filter(username="dana@example.com").exists()


def test_it_refuses_an_id_token_the_providers_keys_do_not_verify(
    sso: OidcConfig, browser: Client
) -> None:
    with MetadataServer() as keys:
        keys.documents["/jwks"] = {"keys": [public(signing_jwk())]}  # same kid, another key
        OidcConfig.objects.filter(pk=sso.pk).update(jwks_uri=f"{keys.url}/jwks")

        response = sso_sign_in(browser, "dana-1", DANA)

    assert response.status_code == 400
    assert "signature does not verify" in response.content.decode()


def test_it_refuses_sso_while_it_is_off(configured: OidcConfig, browser: Client) -> None:
    response = browser.get("/oidc/authenticate/")

    assert response.status_code == 400
    assert "Single sign-on is not enabled" in response.content.decode()


def test_it_logs_neither_the_client_secret_nor_the_code(
    sso: OidcConfig, browser: Client, caplog: pytest.LogCaptureFixture
) -> None:
    callback = callback_for(browser, "dana-1", DANA)
    code = dict(parse_qsl(urlsplit(callback).query))["code"]
    caplog.set_level(logging.DEBUG)

    browser.get(callback)

    assert "sso.signed_in" in caplog.text
    assert CLIENT_SECRET not in caplog.text
    assert code not in caplog.text


# --- discovery ----------------------------------------------------------------------------


def test_it_keeps_the_endpoints_the_discovery_document_names(
    configured: OidcConfig, op: OpenIdProvider
) -> None:
    assert configured.jwks_uri == f"{op.issuer}/jwks"
    assert configured.token_endpoint == f"{op.issuer}/token"
    assert configured.pkce


def test_it_refuses_an_issuer_other_than_the_one_the_provider_names(
    api: Client, op: OpenIdProvider
) -> None:
    response = put(api, OidcConfig.current(), issuer=op.issuer + "/", client_id=CLIENT_ID)

    assert response.status_code == 422
    assert f"names the issuer '{op.issuer}'" in response.json()["detail"][0]["msg"]
    assert OidcConfig.current().issuer == ""


def test_it_refuses_a_discovery_document_that_names_another_issuer(
    api: Client, op: OpenIdProvider
) -> None:
    with MetadataServer() as lookalike:
        lookalike.documents["/.well-known/openid-configuration"] = op.discovery()

        response = put(api, OidcConfig.current(), issuer=lookalike.url, client_id=CLIENT_ID)

    assert response.status_code == 422
    assert OidcConfig.current().jwks_uri == ""


# --- the test sign-in and activation ---------------------------------------------------------


def test_a_test_sign_in_shows_what_arrived_and_signs_nobody_in(
    configured: OidcConfig, console: Client
) -> None:
    response = run_test_sign_in(console, "dana-1", DANA)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Test sign-in passed" in page
    assert "A new account would be created" in page
    assert "Team Manager in team Payments" in page
    assert signed_in_as(console) == "alice@example.com"
    assert not User.objects.filter(username="dana@example.com").exists()
    assert OidcConfig.current().tested


def test_a_test_sign_in_fails_when_the_username_claim_is_missing(
    configured: OidcConfig, console: Client
) -> None:
    OidcConfig.objects.filter(pk=configured.pk).update(username_claim="preferred_username")

    response = run_test_sign_in(console, "dana-1", DANA)

    assert "Test sign-in failed" in response.content.decode()
    assert not OidcConfig.current().tested


def test_it_refuses_to_enable_sso_before_a_test_sign_in_passed(
    configured: OidcConfig, api: Client
) -> None:
    response = put(api, configured, enabled=True)

    assert response.status_code == 422
    assert "has not passed a test sign-in" in response.content.decode()
    assert not OidcConfig.current().enabled


def test_it_enables_sso_once_a_test_sign_in_passed(
    configured: OidcConfig, console: Client, api: Client
) -> None:
    run_test_sign_in(console, "dana-1", DANA)

    response = put(api, configured, enabled=True)

    assert response.status_code == 200, response.content
    assert response.json()["enabled"]


def test_the_console_refuses_to_enable_sso_before_a_test_sign_in_passed(
    configured: OidcConfig, console: Client
) -> None:
    form = {
        "enabled": "on",
        "issuer": configured.issuer,
        "client_id": CLIENT_ID,
        "scopes": configured.scopes,
        "username_claim": "email",
        "group_roles": "engineering | developer",
    }

    response = console.post(f"/admin/accounts/oidcconfig/{configured.pk}/change/", form)

    assert response.status_code == 200
    assert "has not passed a test sign-in" in response.content.decode()
    assert not OidcConfig.current().enabled


@pytest.mark.parametrize(
    "change",
    [
        {"client_secret": "a-new-secret"},
        {"client_id": "another-client"},
        {"group_roles": [{"group": "everyone", "role": "viewer", "team": None}]},
    ],
)
def test_changing_what_the_test_exercised_clears_it(
    sso: OidcConfig, api: Client, change: dict[str, Any]
) -> None:
    response = put(api, sso, enabled=False, **change)

    assert response.status_code == 200, response.content
    assert not response.json()["tested"]
    assert OidcConfig.current().tested_at is None


def test_it_refuses_to_change_live_sso_without_a_new_test(sso: OidcConfig, api: Client) -> None:
    response = put(api, sso, client_secret="a-new-secret")

    assert response.status_code == 422
    assert OidcConfig.current().reveal_client_secret() == CLIENT_SECRET


# --- secrets and permissions ---------------------------------------------------------------


def test_it_never_shows_the_client_secret(sso: OidcConfig, api: Client, console: Client) -> None:
    read = api.get("/api/sso/oidc")
    written = put(api, sso)
    page = console.get(f"/admin/accounts/oidcconfig/{sso.pk}/change/")
    result = run_test_sign_in(console, "dana-1", DANA)

    assert read.json()["has_client_secret"]
    for response in (read, written, page, result):
        assert CLIENT_SECRET not in response.content.decode()
    assert CLIENT_SECRET not in OidcConfig.current().client_secret


def test_a_viewer_may_read_sso_but_not_change_or_test_it(
    configured: OidcConfig, charlie: User
) -> None:
    _, key = make_key(charlie, surfaces=["console"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    console = Client()
    console.force_login(charlie)
    page = console.get(f"/admin/accounts/oidcconfig/{configured.pk}/change/")

    assert page.status_code == 200
    assert "/admin/accounts/oidcconfig/test/" not in page.content.decode()
    assert api.get("/api/sso/oidc").status_code == 200
    assert put(api, configured, scopes="openid").status_code == 403
    assert console.post("/admin/accounts/oidcconfig/test/").status_code == 403


def test_the_sso_page_lets_its_test_form_lead_to_the_provider(
    configured: OidcConfig, console: Client
) -> None:
    """Chrome holds the redirect that answers a form to the page's CSP form-action."""
    page = console.get(f"/admin/accounts/oidcconfig/{configured.pk}/change/")

    assert "form-action 'self' https: http:" in page["Content-Security-Policy"]


@pytest.mark.parametrize("page", ["/admin/login/", "/accounts/login/"])
def test_the_sign_in_pages_offer_sso_while_it_is_enabled(
    sso: OidcConfig, browser: Client, page: str
) -> None:
    assert "Sign in with SSO" in browser.get(page).content.decode()


@pytest.mark.parametrize("page", ["/admin/login/", "/accounts/login/"])
def test_the_sign_in_pages_do_not_offer_sso_while_it_is_off(
    configured: OidcConfig, browser: Client, page: str
) -> None:
    assert "Sign in with SSO" not in browser.get(page).content.decode()
