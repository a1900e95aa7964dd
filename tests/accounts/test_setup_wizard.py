"""The first-run wizard in the browser, at /setup until an admin exists."""

import re
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client

from accounts import sessions
from accounts.models import ApiKey, Organisation, RoleAssignment, hash_key
from accounts.setup_wizard import ALREADY_SET_UP
from providers.models import Provider

STRONG = "Correct-Horse-9-battery"
PROVIDER_SECRET = "sk-live-wizard-secret"


def answers(**changes: str) -> dict[str, str]:
    return {
        "site_name": "Acme AI",
        "admin_email": "carol@example.com",
        "admin_password": STRONG,
        "admin_password_again": STRONG,
        "provider_type": "",
        "provider_name": "",
        "provider_base_url": "",
        "provider_api_key": "",
        "key_name": "",
        **changes,
    }


WITH_EVERYTHING = {
    "provider_type": "openai",
    "provider_name": "OpenAI",
    "provider_api_key": PROVIDER_SECRET,
    "key_name": "carol laptop",
}


def plaintext_key(response: Any) -> str:
    found = re.search(r"tw-[0-9a-f]{96}", response.content.decode())
    assert found is not None, response.content
    return found.group(0)


# --- before an admin exists -------------------------------------------------------------------


def test_it_shows_the_wizard_while_no_admin_exists(db: None) -> None:
    response = Client().get("/setup")

    assert response.status_code == 200
    assert b'name="admin_password_again"' in response.content
    assert "no-store" in response["Cache-Control"]


def test_the_console_root_leads_to_the_wizard_while_no_admin_exists(db: None) -> None:
    assert Client().get("/")["Location"] == "/setup"


@pytest.mark.parametrize("page", ["/admin/login/", "/accounts/login/"])
def test_the_sign_in_pages_point_to_the_wizard_while_no_admin_exists(db: None, page: str) -> None:
    assert b'<a href="/setup">Set up ThinkWatch</a>' in Client().get(page).content


# --- completing it ------------------------------------------------------------------------------


def test_it_creates_the_admin_site_provider_and_key(db: None) -> None:
    response = Client().post("/setup", answers(**WITH_EVERYTHING))

    assert response.status_code == 200
    admin = User.objects.get()
    assert (admin.email, admin.is_superuser, admin.check_password(STRONG)) == (
        "carol@example.com",
        True,
        True,
    )
    assert Organisation.current().name == "Acme AI"
    assert Provider.objects.get().reveal_secret() == PROVIDER_SECRET
    key = ApiKey.objects.get(key_hash=hash_key(plaintext_key(response)))
    assert (key.name, key.owner) == ("carol laptop", admin)
    assert sorted(key.surfaces) == ["ai_gateway", "console", "mcp_gateway"]


def test_it_gives_the_admin_the_super_admin_role_everywhere(db: None) -> None:
    Client().post("/setup", answers())

    assignment = RoleAssignment.objects.get(user__email="carol@example.com")
    assert (assignment.role.slug, assignment.team) == ("super-admin", None)


def test_it_signs_the_admin_in_from_their_address(db: None) -> None:
    client = Client(REMOTE_ADDR="10.0.0.7")

    client.post("/setup", answers())

    assert client.get("/admin/").status_code == 200
    assert client.session[sessions.SIGNED_IN_FROM] == "10.0.0.7"


def test_it_shows_the_key_once_with_a_copy_button_and_no_caching(db: None) -> None:
    response = Client().post("/setup", answers(key_name="carol laptop"))

    assert "no-store" in response["Cache-Control"]
    assert b'data-copy-target="tw-secret"' in response.content
    assert b'src="/static/thinkwatch/copy.js"' in response.content
    assert plaintext_key(response).startswith("tw-")


def test_it_needs_neither_a_provider_nor_a_key(db: None) -> None:
    response = Client().post("/setup", answers())

    assert response.status_code == 200
    assert not Provider.objects.exists()
    assert not ApiKey.objects.exists()


def test_it_never_shows_the_provider_secret_or_the_password(db: None) -> None:
    done = Client().post("/setup", answers(**WITH_EVERYTHING))

    assert PROVIDER_SECRET.encode() not in done.content
    assert STRONG.encode() not in done.content


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"admin_password_again": STRONG + "x"}, "The passwords differ."),
        ({"admin_password": "short1A!", "admin_password_again": "short1A!"}, "too short"),
        (
            {"admin_password": "123456789012345", "admin_password_again": "123456789012345"},
            "entirely numeric",
        ),
        ({"admin_email": "not-an-email"}, "Enter a valid email address."),
        ({"site_name": ""}, "This field is required."),
        ({"provider_type": "openai"}, "Give the provider a name."),
        ({"provider_name": "vllm"}, "Choose a type to add a provider."),
        (
            {"provider_type": "openai_compatible", "provider_name": "vllm"},
            "This provider type needs a base URL.",
        ),
    ],
)
def test_it_shows_what_is_wrong_and_creates_nothing(
    db: None, changes: dict[str, str], message: str
) -> None:
    response = Client().post("/setup", answers(**changes))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not User.objects.exists()
    assert not Provider.objects.exists()


def test_it_keeps_secrets_out_of_a_form_shown_again(db: None) -> None:
    response = Client().post(
        "/setup", answers(**WITH_EVERYTHING, admin_password_again=STRONG + "x")
    )

    assert response.status_code == 400
    assert PROVIDER_SECRET.encode() not in response.content
    assert STRONG.encode() not in response.content


def test_it_is_protected_against_cross_site_posts(db: None) -> None:
    response = Client(enforce_csrf_checks=True).post("/setup", answers())

    assert response.status_code == 403
    assert not User.objects.exists()


# --- once an admin exists ---------------------------------------------------------------------


def test_it_sends_visitors_to_the_sign_in_page_once_an_admin_exists(alice: User) -> None:
    response = Client().get("/setup")

    assert response["Location"] == "/admin/login/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [ALREADY_SET_UP]


def test_it_refuses_a_post_once_an_admin_exists(alice: User) -> None:
    response = Client().post("/setup", answers(key_name="mallory"))

    assert response["Location"] == "/admin/login/"
    assert list(User.objects.values_list("email", flat=True)) == ["alice@example.com"]
    assert not ApiKey.objects.exists()


def test_the_console_root_leads_to_the_console_once_an_admin_exists(alice: User) -> None:
    assert Client().get("/")["Location"] == "/admin/"


def test_the_sign_in_page_stops_pointing_to_the_wizard_once_an_admin_exists(alice: User) -> None:
    assert b'href="/setup"' not in Client().get("/admin/login/").content


def test_two_wizards_at_once_make_one_admin(transactional_db: None) -> None:
    start = threading.Barrier(2)
    statuses: list[int] = []

    def wizard(email: str) -> None:
        client = Client()
        client.get("/setup")
        start.wait()
        statuses.append(client.post("/setup", answers(admin_email=email)).status_code)
        connection.close()

    threads = [
        threading.Thread(target=wizard, args=(f"{name}@example.com",)) for name in ("carol", "dave")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses) == [200, 302]
    assert User.objects.filter(is_superuser=True).count() == 1
