"""Warnings before a key expires: once per threshold, the nearest one only, by mail and in
the admin audit log."""

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from accounts.lifecycle import due_threshold
from accounts.models import ApiKey
from accounts.tasks import warn_expiring_keys
from audit.models import AuditEvent
from tests.conftest import free_port
from tests.factories import UserFactory, make_key

pytestmark = pytest.mark.django_db


def expiring_key(owner: User | None, in_days: float, **fields: object) -> ApiKey:
    expires_at = timezone.now() + timedelta(days=in_days)
    return make_key(owner, expires_at=expires_at, **fields)[0]


def warned_days(key: ApiKey) -> list[int]:
    events = AuditEvent.objects.filter(action="key.expiry_warning", object_id=str(key.pk))
    return sorted(event.detail["days"] for event in events)


@pytest.mark.parametrize(
    ("left", "due"),
    [
        (timedelta(days=8), None),
        (timedelta(days=7), 7),
        (timedelta(days=6, hours=23), 7),
        (timedelta(days=3), 3),
        (timedelta(days=2), 3),
        (timedelta(hours=25), 3),
        (timedelta(hours=23), 1),
        (timedelta(minutes=1), 1),
    ],
)
def test_the_due_warning_is_the_nearest_threshold_reached(left: timedelta, due: int | None) -> None:
    assert due_threshold(left) == due


def test_it_warns_the_owner_by_mail_seven_days_before(bob: User) -> None:
    key = expiring_key(bob, 6.5, name="ci runner")

    warn_expiring_keys()

    [message] = mail.outbox
    assert message.to == ["bob@example.com"]
    assert "ci runner" in message.subject
    assert key.prefix in message.body
    assert f"/admin/accounts/apikey/{key.pk}/change/" in message.body
    assert warned_days(key) == [7]


def test_it_warns_once_per_threshold_however_often_it_runs(bob: User) -> None:
    key = expiring_key(bob, 6.5)

    warn_expiring_keys()
    warn_expiring_keys()

    assert len(mail.outbox) == 1
    assert warned_days(key) == [7]


def test_it_warns_again_at_three_days_and_at_one_day(bob: User) -> None:
    key = expiring_key(bob, 6.5)
    warn_expiring_keys()

    with time_machine.travel(timezone.now() + timedelta(days=4)):
        warn_expiring_keys()
        warn_expiring_keys()
    with time_machine.travel(timezone.now() + timedelta(days=6)):
        warn_expiring_keys()

    assert warned_days(key) == [1, 3, 7]
    assert [m.subject.split("less than ")[1] for m in mail.outbox] == ["7 days", "3 days", "a day"]


def test_a_key_expiring_in_two_days_gets_only_the_three_day_warning(bob: User) -> None:
    key = expiring_key(bob, 2)

    warn_expiring_keys()
    warn_expiring_keys()

    assert warned_days(key) == [3]
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("in_days", [10, -1])
def test_it_leaves_keys_far_from_expiry_or_already_expired_alone(bob: User, in_days: int) -> None:
    expiring_key(bob, in_days)

    warn_expiring_keys()

    assert (mail.outbox, AuditEvent.objects.filter(action="key.expiry_warning").count()) == ([], 0)


def test_it_does_not_warn_about_a_revoked_key(bob: User) -> None:
    key = expiring_key(bob, 2)
    key.revoke("left the team")

    warn_expiring_keys()

    assert (mail.outbox, warned_days(key)) == ([], [])


def test_it_warns_about_the_successor_of_a_rotated_key_only(bob: User) -> None:
    key = expiring_key(bob, 2)
    successor, _ = key.rotate(timedelta(hours=24))

    warn_expiring_keys()

    assert (warned_days(key), warned_days(successor)) == ([], [3])
    assert len(mail.outbox) == 1


def test_it_warns_anew_when_the_expiry_is_moved(bob: User) -> None:
    key = expiring_key(bob, 2)
    warn_expiring_keys()

    key.expires_at = timezone.now() + timedelta(days=5)
    key.save()
    warn_expiring_keys()

    assert warned_days(key) == [3, 7]
    assert len(mail.outbox) == 2


def test_it_mails_a_service_key_warning_to_whoever_created_the_key(alice: User) -> None:
    key = expiring_key(None, 2, created_by=alice)

    warn_expiring_keys()

    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "service key" in message.subject
    assert warned_days(key) == [3]


def test_it_records_the_warning_of_an_owner_without_an_address(db: None) -> None:
    carol = UserFactory(username="carol", email="")
    key = expiring_key(carol, 2)

    warn_expiring_keys()

    assert (mail.outbox, warned_days(key)) == ([], [3])


def test_it_retries_a_mail_the_server_refused_on_the_next_run(bob: User) -> None:
    key = expiring_key(bob, 2)
    nobody_listens = free_port()
    smtp = "django.core.mail.backends.smtp.EmailBackend"
    with override_settings(EMAIL_BACKEND=smtp, EMAIL_HOST="127.0.0.1", EMAIL_PORT=nobody_listens):
        warn_expiring_keys()
    unsent = list(mail.outbox)

    warn_expiring_keys()

    assert unsent == []
    assert len(mail.outbox) == 1
    assert warned_days(key) == [3]
