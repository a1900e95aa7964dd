import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.factories import make_key


@pytest.fixture
def api(alice: User) -> Client:
    """The management API as Alice, with a console key."""
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")
