"""Console sessions: bound to the client IP they signed in from, ended by a force logout
and by deactivating the account."""

from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from accounts import runtime, sessions
from accounts.models import UserSecurity
from gateway.handler import client_ip as gateway_ip
from tests.factories import PASSWORD
from thinkwatch.proxies import client_ip

HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"
PROXY = "10.9.9.9"


@pytest.fixture(autouse=True)
def _fresh_state(db: None) -> Iterator[None]:
    runtime.store.clear()
    yield
    runtime.store.clear()
    # Cached revocation instants are keyed by user id, which the next test may reuse.
    cache.delete_many([sessions._cache_key(pk) for pk in User.objects.values_list("pk", flat=True)])


def signed_in(user: User, ip: str = HOME, page: str = "/admin/login/", **extra: Any) -> Client:
    client = Client(REMOTE_ADDR=ip, **extra)
    response = client.post(page, {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def change_setting(key: str, value: Any, capture: Any) -> None:
    with capture(execute=True):
        runtime.update({key: value})


@pytest.mark.parametrize("page", ["/admin/login/", "/accounts/login/"])
def test_it_records_the_address_and_instant_of_each_sign_in(alice: User, page: str) -> None:
    before = timezone.now().timestamp()
    client = signed_in(alice, page=page)

    assert client.session[sessions.SIGNED_IN_FROM] == HOME
    assert client.session[sessions.SIGNED_IN_AT] >= before


def test_it_keeps_a_session_used_from_its_own_address(alice: User) -> None:
    assert signed_in(alice).get("/admin/").status_code == 200


def test_it_ends_a_page_session_used_from_another_address(alice: User) -> None:
    client = signed_in(alice)

    moved = client.get("/admin/", REMOTE_ADDR=ELSEWHERE)

    assert moved.status_code == 302
    assert moved["Location"] == "/admin/login/?next=/admin/"
    assert [str(m) for m in get_messages(moved.wsgi_request)] == [sessions.MOVED]
    assert client.get("/admin/").status_code == 302  # ended, not merely refused once


def test_it_shows_why_on_the_sign_in_page(alice: User) -> None:
    client = signed_in(alice)

    page = client.get("/admin/", REMOTE_ADDR=ELSEWHERE, follow=True)

    assert b"used from another network address" in page.content


def test_it_answers_the_api_with_401_json_from_another_address(alice: User) -> None:
    client = signed_in(alice)

    moved = client.get("/api/keys", REMOTE_ADDR=ELSEWHERE)

    assert moved.status_code == 401
    assert moved.json() == {"detail": sessions.MOVED}


def test_it_sends_users_who_are_not_staff_to_their_own_sign_in_page(bob: User) -> None:
    client = signed_in(bob, page="/accounts/login/")

    moved = client.get("/mcp/connections/", REMOTE_ADDR=ELSEWHERE)

    assert moved["Location"] == "/accounts/login/?next=/mcp/connections/"


def test_it_lets_sessions_move_while_binding_is_off(
    alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    client = signed_in(alice)

    change_setting("security.bind_sessions_to_ip", False, django_capture_on_commit_callbacks)

    assert client.get("/admin/", REMOTE_ADDR=ELSEWHERE).status_code == 200


@override_settings(TRUSTED_PROXIES=frozenset({PROXY}))
@pytest.mark.parametrize(
    ("later", "status"),
    [("203.0.113.5", 200), ("203.0.113.6", 302), ("203.0.113.6, 203.0.113.5", 200)],
)
def test_it_binds_to_the_forwarded_address_behind_a_trusted_proxy(
    alice: User, later: str, status: int
) -> None:
    client = signed_in(alice, ip=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.5")

    assert client.get("/admin/", HTTP_X_FORWARDED_FOR=later).status_code == status


def test_it_ignores_forwarded_addresses_from_untrusted_peers(alice: User) -> None:
    client = signed_in(alice, HTTP_X_FORWARDED_FOR="203.0.113.5")

    assert client.get("/admin/", HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 200


def test_it_binds_a_session_without_an_address_to_its_first_one(alice: User) -> None:
    client = Client(REMOTE_ADDR=HOME)
    client.force_login(alice)  # a sign-in without a client address

    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/", REMOTE_ADDR=ELSEWHERE).status_code == 302


# --- force logout -------------------------------------------------------------------------


def test_force_logout_ends_an_existing_session(alice: User) -> None:
    client = signed_in(alice)

    sessions.end_sessions(alice)
    ended = client.get("/admin/")

    assert ended.status_code == 302
    assert [str(m) for m in get_messages(ended.wsgi_request)] == [sessions.REVOKED]


@pytest.mark.parametrize(
    ("page", "status"), [("/admin/", 302), ("/api/keys", 401), ("/mcp/connections/", 302)]
)
def test_no_page_accepts_a_session_from_before_a_force_logout(
    alice: User, page: str, status: int
) -> None:
    client = signed_in(alice)

    sessions.end_sessions(alice)

    assert client.get(page).status_code == status


def test_force_logout_ends_only_that_accounts_sessions(alice: User, bob: User) -> None:
    staying = signed_in(bob, page="/accounts/login/")

    sessions.end_sessions(alice)

    assert staying.get("/mcp/connections/").status_code == 200


def test_the_user_can_sign_in_again_after_a_force_logout(alice: User) -> None:
    client = signed_in(alice)
    sessions.end_sessions(alice)
    client.get("/admin/")

    again = signed_in(alice)

    assert again.get("/admin/").status_code == 200


def test_force_logout_records_the_instant_creating_the_row(alice: User) -> None:
    when = sessions.end_sessions(alice)

    assert UserSecurity.objects.get(user=alice).sessions_revoked_at == when


def test_force_logout_moves_an_existing_rows_instant(alice: User) -> None:
    first = sessions.end_sessions(alice)

    second = sessions.end_sessions(alice)

    assert UserSecurity.objects.get(user=alice).sessions_revoked_at == second > first


def test_it_reads_the_revocation_instant_from_the_cache_when_warm(
    alice: User, django_assert_num_queries: Any
) -> None:
    sessions.revoked_at(alice.pk)

    with django_assert_num_queries(0):
        sessions.revoked_at(alice.pk)


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_another_process_sees_a_force_logout_within_seconds(alice: User) -> None:
    with time_machine.travel("2030-01-01 12:00:00+00:00", tick=False):
        client = signed_in(alice)
        assert client.get("/admin/").status_code == 200  # this process caches "never"
    with time_machine.travel("2030-01-01 12:00:01+00:00", tick=False):
        # Another process ends the sessions: the database changes, this cache does not.
        UserSecurity.objects.create(user=alice, sessions_revoked_at=timezone.now())
    with time_machine.travel("2030-01-01 12:00:03+00:00", tick=False):
        assert client.get("/admin/").status_code == 302


def test_deactivating_an_account_ends_its_sessions(alice: User) -> None:
    client = signed_in(alice)

    alice.is_active = False
    alice.save()
    alice.is_active = True
    alice.save()

    assert client.get("/admin/").status_code == 302


def test_saving_an_active_account_leaves_its_sessions(alice: User) -> None:
    client = signed_in(alice)

    alice.first_name = "Alice"
    alice.save()

    assert client.get("/admin/").status_code == 200
    assert not UserSecurity.objects.filter(user=alice).exists()


@override_settings(TRUSTED_PROXIES=frozenset({PROXY, "10.9.9.8"}))
@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        (HOME, "", HOME),
        (HOME, "203.0.113.5", HOME),  # an untrusted peer's header is not believed
        (PROXY, "", PROXY),
        (PROXY, "203.0.113.5", "203.0.113.5"),
        (PROXY, "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # the nearest hop wins
        (PROXY, "203.0.113.5, 10.9.9.8", "203.0.113.5"),  # through two trusted proxies
        (PROXY, "10.9.9.8", PROXY),
    ],
)
def test_the_console_and_the_gateway_agree_on_the_client_address(
    peer: str, forwarded_for: str, client: str
) -> None:
    scope = {"client": (peer, 50000)}
    meta = {"HTTP_X_FORWARDED_FOR": forwarded_for}
    assert client_ip(peer, forwarded_for) == gateway_ip(scope, meta) == client
