"""Keys nobody uses are revoked, with the reason, through the usual revocation path."""

from datetime import timedelta

import openai
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts import runtime
from accounts.models import ApiKey, KeyState
from accounts.tasks import disable_inactive_keys
from audit.models import AuditEvent
from providers.models import Provider
from tests.conftest import LiveServer, logged
from tests.factories import make_key

MESSAGES = [{"role": "user", "content": "hi"}]


def last_used(key: ApiKey, days_ago: float) -> None:
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(days=days_ago))


@pytest.mark.django_db
def test_it_revokes_a_key_unused_past_its_own_timeout(bob: User) -> None:
    key, _ = make_key(bob, inactivity_timeout_days=5)
    last_used(key, 6)

    revoked = disable_inactive_keys()

    key.refresh_from_db()
    assert revoked == [key.pk]
    assert key.state() == KeyState.REVOKED
    assert key.revoked_reason == "inactive for 5 days"


@pytest.mark.django_db
def test_it_records_the_revocation_in_the_admin_audit_log(bob: User) -> None:
    key, _ = make_key(bob, inactivity_timeout_days=5)
    last_used(key, 6)

    disable_inactive_keys()

    [event] = AuditEvent.objects.filter(action="key.revoke")
    assert (event.object_type, event.object_id) == ("accounts.apikey", str(key.pk))
    assert event.after["revoked_reason"] == "inactive for 5 days"
    assert event.detail["inactive_days"] == 5


@pytest.mark.django_db
def test_it_revokes_once_however_often_it_runs(bob: User) -> None:
    key, _ = make_key(bob, inactivity_timeout_days=5)
    last_used(key, 6)

    first, second = disable_inactive_keys(), disable_inactive_keys()

    assert (first, second) == ([key.pk], [])
    assert AuditEvent.objects.filter(action="key.revoke").count() == 1


@pytest.mark.django_db
def test_it_counts_a_key_never_used_from_its_creation(bob: User) -> None:
    key, _ = make_key(bob, inactivity_timeout_days=5)
    ApiKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - timedelta(days=6))

    assert disable_inactive_keys() == [key.pk]


@pytest.mark.django_db
def test_it_leaves_a_key_used_within_its_timeout(bob: User) -> None:
    key, _ = make_key(bob, inactivity_timeout_days=5)
    last_used(key, 4)

    assert disable_inactive_keys() == []


@pytest.mark.django_db
def test_it_leaves_keys_without_a_timeout_alone_by_default(bob: User) -> None:
    key, _ = make_key(bob)
    last_used(key, 3650)

    assert disable_inactive_keys() == []


@pytest.mark.django_db
def test_the_global_setting_applies_to_keys_without_a_timeout_of_their_own(bob: User) -> None:
    runtime.update({"keys.inactivity_disable_days": 30})
    idle, _ = make_key(bob, name="idle")
    busy, _ = make_key(bob, name="busy")
    patient, _ = make_key(bob, name="patient", inactivity_timeout_days=60)
    for key in (idle, patient):
        last_used(key, 31)
    last_used(busy, 29)

    revoked = disable_inactive_keys()

    idle.refresh_from_db()
    assert revoked == [idle.pk]
    assert idle.revoked_reason == "inactive for 30 days"


def test_the_gateway_refuses_a_key_once_it_is_revoked_for_inactivity(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    runtime.update({"keys.inactivity_disable_days": 30})
    key, plaintext = make_key(bob)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=plaintext, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    logged()  # the use is recorded; now pretend it was long ago
    last_used(key, 31)

    disable_inactive_keys()

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
