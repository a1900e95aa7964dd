from datetime import timedelta

import openai
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiKey, KeyLifecycleError, KeyState
from accounts.tasks import purge_deleted_keys
from tests.conftest import LiveServer, logged
from tests.factories import make_key

MESSAGES = [{"role": "user", "content": "hi"}]


def test_it_records_when_a_key_was_last_used(
    gateway: LiveServer, openai_provider: object, bob: User
) -> None:
    api_key, key = make_key(bob)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (first,) = logged()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _, second = logged()

    api_key.refresh_from_db()
    assert first.created_at < second.created_at
    assert api_key.last_used_at == first.created_at  # not rewritten within the same minute


@pytest.mark.django_db
def test_it_purges_keys_revoked_more_than_30_days_ago(bob: User, alice: User) -> None:
    old, _ = make_key(bob, name="old")
    recent, _ = make_key(bob, name="recent")
    make_key(bob, name="live")
    old.revoke("rotated out", by=alice)
    recent.revoke("rotated out", by=alice)
    ApiKey.objects.filter(pk=old.pk).update(revoked_at=timezone.now() - timedelta(days=31))

    purged = purge_deleted_keys.apply().get()

    assert purged == 1
    assert sorted(ApiKey.objects.values_list("name", flat=True)) == ["live", "recent"]


@pytest.mark.django_db
def test_it_purges_keys_whose_rotation_grace_ended_long_ago(bob: User) -> None:
    key, _ = make_key(bob)
    successor, _ = key.rotate(timedelta(0))
    ApiKey.objects.filter(pk=key.pk).update(grace_ends_at=timezone.now() - timedelta(days=31))

    purge_deleted_keys.apply()

    assert list(ApiKey.objects.all()) == [successor]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, KeyState.ACTIVE),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, KeyState.EXPIRED),
        ({"grace_ends_at": timezone.now() + timedelta(hours=1)}, KeyState.ROTATING),
        ({"grace_ends_at": timezone.now() - timedelta(seconds=1)}, KeyState.ROTATED),
        ({"revoked_at": timezone.now()}, KeyState.REVOKED),
        (
            {"inactivity_timeout_days": 1, "last_used_at": timezone.now() - timedelta(days=2)},
            KeyState.INACTIVE,
        ),
    ],
)
def test_it_derives_a_keys_state(bob: User, fields: dict, state: KeyState) -> None:  # type: ignore[type-arg]
    key, _ = make_key(bob)
    ApiKey.objects.filter(pk=key.pk).update(**fields)
    key.refresh_from_db()

    assert key.state() == state


@pytest.mark.django_db
def test_it_refuses_to_revoke_without_a_reason(bob: User) -> None:
    key, _ = make_key(bob)

    with pytest.raises(KeyLifecycleError):
        key.revoke("   ")


@pytest.mark.django_db
def test_it_copies_a_keys_settings_to_its_successor(bob: User) -> None:
    key, _ = make_key(bob, allowed_models=["claude-*"], surfaces=["ai_gateway", "mcp_gateway"])

    successor, plaintext = key.rotate(timedelta(hours=1))

    assert (successor.allowed_models, successor.surfaces, successor.owner) == (
        ["claude-*"],
        ["ai_gateway", "mcp_gateway"],
        bob,
    )
    assert successor.lineage == key.lineage
    assert plaintext.startswith("tw-") and successor.prefix == plaintext[:11]
