from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts import runtime
from tests.factories import make_key


@pytest.fixture(autouse=True)
def _fresh_runtime_settings() -> Iterator[None]:
    runtime.store.clear()
    yield
    runtime.store.clear()


@pytest.fixture
def api(alice: User) -> Client:
    """The management API as Alice, with a console key."""
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")
