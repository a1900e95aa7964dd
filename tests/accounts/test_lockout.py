"""Progressive lockout of console sign-in, on the admin's login and on the sign-in page
for everyone."""

from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from accounts import lockout
from tests.factories import UserFactory

PASSWORD = "Correct-horse-battery-9"
LOGIN_PAGES = ["/admin/login/", "/accounts/login/"]


@pytest.fixture(autouse=True)
def _no_failures() -> Iterator[None]:
    # Only these accounts' counts: the cache may be the Redis other state lives in.
    for name in ("carol@example.com", "dave@example.com"):
        lockout.succeeded(name)
    yield
    for name in ("carol@example.com", "dave@example.com"):
        lockout.succeeded(name)


@pytest.fixture
def carol(db: None) -> User:
    user = UserFactory(username="carol@example.com", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def sign_in(page: str, password: str, client: Client | None = None) -> Any:
    client = client or Client()
    return client.post(page, {"username": "carol@example.com", "password": password})


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_it_locks_an_account_after_five_failures_even_for_the_right_password(
    carol: User, page: str
) -> None:
    with time_machine.travel("2026-11-23 12:00:00+00:00", tick=False):
        for _ in range(5):
            refused = sign_in(page, "wrong")
            assert refused.status_code == 200 and b"Too many" not in refused.content
        locked = sign_in(page, PASSWORD)
        assert locked.status_code == 200
        assert b"Too many failed sign-ins for this account. Try again in 60 s." in locked.content
    with time_machine.travel("2026-11-23 12:01:01+00:00", tick=False):
        assert sign_in(page, PASSWORD).status_code == 302  # the lock has passed


def test_each_further_failure_doubles_the_lock(carol: User) -> None:
    with time_machine.travel("2026-11-23 12:00:00+00:00", tick=False):
        for _ in range(5):
            sign_in("/accounts/login/", "wrong")
    with time_machine.travel("2026-11-23 12:01:01+00:00", tick=False):
        sign_in("/accounts/login/", "wrong")  # the sixth failure
        assert b"Try again in 120 s." in sign_in("/accounts/login/", PASSWORD).content


def test_a_successful_sign_in_clears_the_count(carol: User) -> None:
    for _ in range(4):
        sign_in("/accounts/login/", "wrong")
    assert sign_in("/accounts/login/", PASSWORD).status_code == 302
    for _ in range(4):
        sign_in("/accounts/login/", "wrong")
    assert sign_in("/accounts/login/", PASSWORD).status_code == 302


def test_the_lock_is_per_account(carol: User) -> None:
    other = UserFactory(username="dave@example.com", is_staff=True)
    other.set_password(PASSWORD)
    other.save()
    for _ in range(5):
        sign_in("/admin/login/", "wrong")
    dave = Client().post("/admin/login/", {"username": "dave@example.com", "password": PASSWORD})
    assert dave.status_code == 302
