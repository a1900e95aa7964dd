"""The console pages of forwarding: who may see and change them, the write-only secret,
validation, and the outbox's actions."""

import json
import logging

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit import store
from audit.forwarding.jobs import forward
from audit.models import AuditEvent, Forwarder, ForwardOutbox
from audit.redaction import REDACTED
from tests.forwarding.conftest import (
    FAST,
    WEBHOOK_SECRET,
    ForwarderFactory,
    append,
    person,
)
from tests.forwarding.receivers import Answer, WebhookReceiver

pytestmark = pytest.mark.django_db

LIST = "/admin/audit/forwarder/"
ADD = "/admin/audit/forwarder/add/"
OUTBOX = "/admin/audit/forwardoutbox/"


@pytest.fixture
def sam(db: None) -> User:
    """Sam manages the installation's settings."""
    return person("sam@example.com", "settings:read", "settings:update")


@pytest.fixture
def vic(db: None) -> User:
    """Vic may look at settings, not change them."""
    return person("vic@example.com", "settings:read")


@pytest.fixture
def dev(db: None) -> User:
    """Dev uses the console for providers only."""
    return person("dev@example.com", "providers:read")


def console(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def webhook_form(url: str, **fields: object) -> dict[str, object]:
    return {
        "name": "splunk",
        "type": "webhook",
        "enabled": "on",
        "families": ["gateway", "admin"],
        "destination": url,
        "topic": "",
        "facility": "16",
        "new_secret": WEBHOOK_SECRET,
        **fields,
    }


def everything_recorded() -> str:
    return json.dumps(list(AuditEvent.objects.values()), default=str)


def test_it_adds_a_webhook_forwarder_starting_at_each_familys_head(
    sam: User, siem: WebhookReceiver
) -> None:
    old = append("gateway", 2)

    response = console(sam).post(ADD, webhook_form(siem.url))

    assert response.status_code == 302, response.content
    fwd = Forwarder.objects.get(name="splunk")
    assert fwd.reveal_secret() == WEBHOOK_SECRET
    assert WEBHOOK_SECRET not in fwd.secret
    admin_head = store.head("admin").seq  # the sign-in and this change are events too
    assert dict(fwd.cursors.values_list("family", "seq")) == {
        "gateway": old[-1],
        "admin": admin_head,
    }


def test_it_can_start_a_new_forwarder_from_the_beginning(sam: User, siem: WebhookReceiver) -> None:
    append("gateway", 2)

    console(sam).post(ADD, webhook_form(siem.url, families=["gateway"], from_beginning="on"))

    assert list(Forwarder.objects.get().cursors.values_list("seq", flat=True)) == [0]


def test_it_never_shows_the_secret_back(sam: User, siem: WebhookReceiver) -> None:
    client = console(sam)
    client.post(ADD, webhook_form(siem.url))
    fwd = Forwarder.objects.get()

    page = client.get(f"{LIST}{fwd.pk}/change/").content.decode()
    listing = client.get(LIST).content.decode()

    assert WEBHOOK_SECRET not in page + listing
    assert fwd.secret not in page + listing
    assert "Secret stored" in page


def test_it_never_records_the_secret_in_the_admin_audit_log(
    sam: User, siem: WebhookReceiver
) -> None:
    client = console(sam)
    client.post(ADD, webhook_form(siem.url))
    fwd = Forwarder.objects.get()
    client.post(f"{LIST}{fwd.pk}/change/", webhook_form(siem.url, new_secret="whsec-the-next-one"))

    create, update = AuditEvent.objects.filter(object_type="audit.forwarder").order_by("id")
    assert (create.action, create.after["secret"], create.after["name"]) == (
        "create",
        REDACTED,
        "splunk",
    )
    assert (update.action, update.before, update.after) == (
        "update",
        {"secret": REDACTED},
        {"secret": REDACTED},
    )
    recorded = everything_recorded()
    assert WEBHOOK_SECRET not in recorded
    assert "whsec-the-next-one" not in recorded
    assert Forwarder.objects.get().secret not in recorded


def test_it_never_logs_the_secret(
    sam: User, siem: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    console(sam).post(ADD, webhook_form(siem.url, families=["gateway"]))
    fwd = Forwarder.objects.get()
    siem.fail(*[Answer(401, body=b"bad signature")] * FAST.attempts)
    append("gateway", 1)

    forward(fwd.pk, FAST)

    assert "forward.set_aside" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text
    assert fwd.secret not in caplog.text


def test_it_keeps_the_secret_when_the_field_is_left_empty(sam: User, siem: WebhookReceiver) -> None:
    fwd = ForwarderFactory(type="webhook", destination=siem.url, secret=WEBHOOK_SECRET)

    response = console(sam).post(
        f"{LIST}{fwd.pk}/change/", webhook_form(siem.url, name=fwd.name, new_secret="")
    )

    assert response.status_code == 302, response.content
    assert Forwarder.objects.get().reveal_secret() == WEBHOOK_SECRET


def test_a_console_save_leaves_the_jobs_state_alone(sam: User, siem: WebhookReceiver) -> None:
    fwd = ForwarderFactory(type="webhook", destination=siem.url, secret=WEBHOOK_SECRET)
    client = console(sam)
    client.get(f"{LIST}{fwd.pk}/change/")
    Forwarder.objects.filter(pk=fwd.pk).update(failures_total=7, forwarded_total=40)
    fwd.cursors.update(seq=40)

    client.post(
        f"{LIST}{fwd.pk}/change/",
        webhook_form(siem.url, name=fwd.name, families=["gateway"], enabled=""),
    )

    fwd.refresh_from_db()
    assert (fwd.enabled, fwd.failures_total, fwd.forwarded_total) == (False, 7, 40)
    assert fwd.cursors.get().seq == 40


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"type": "syslog_udp", "destination": "siem.example.com"}, "destination", "has no port"),
        ({"type": "syslog_tcp", "destination": "siem:99999"}, "destination", "is not a port"),
        ({"type": "syslog_tcp", "destination": "::1:514"}, "destination", "in brackets"),
        ({"destination": "ftp://siem.example.com/in"}, "destination", "https://"),
        ({"destination": "https://bob:pw@siem.example.com/"}, "destination", "no credentials"),
        ({"new_secret": ""}, "new_secret", "needs a secret"),
        ({"type": "kafka", "destination": "k1:9092", "topic": ""}, "topic", "Kafka topic"),
        ({"type": "kafka", "destination": "k1", "topic": "audit"}, "destination", "host:port"),
        ({"families": []}, "families", "required"),
    ],
)
def test_it_refuses_a_destination_that_cannot_work(
    sam: User, fields: dict[str, object], field: str, message: str
) -> None:
    response = console(sam).post(ADD, webhook_form("https://siem.example.com/in", **fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not Forwarder.objects.exists()


def test_a_settings_reader_sees_forwarders_and_their_status_but_cannot_change_them(
    vic: User,
) -> None:
    fwd = ForwarderFactory(name="graylog")
    client = console(vic)

    listing = client.get(LIST)

    assert listing.status_code == 200
    assert b"graylog" in listing.content
    assert b"Nothing sent yet" in listing.content
    assert client.get(ADD).status_code == 403
    page = client.post(f"{LIST}{fwd.pk}/change/", {"name": "renamed"})
    assert page.status_code == 403
    assert Forwarder.objects.get().name == "graylog"


@pytest.mark.parametrize("page", [LIST, ADD, OUTBOX])
def test_it_refuses_the_forwarding_pages_without_a_settings_right(dev: User, page: str) -> None:
    assert console(dev).get(page).status_code == 403


@pytest.mark.parametrize("page", [LIST, ADD, OUTBOX])
def test_it_opens_the_forwarding_pages_for_a_settings_manager(sam: User, page: str) -> None:
    assert console(sam).get(page).status_code == 200


@pytest.fixture
def dead_letter(siem: WebhookReceiver) -> ForwardOutbox:
    fwd = ForwarderFactory(type="webhook", destination=siem.url, secret=WEBHOOK_SECRET)
    siem.fail(*[Answer(503)] * FAST.attempts)
    append("gateway", 2, request_id="req-private")
    forward(fwd.pk, FAST)
    return ForwardOutbox.objects.get()


def test_the_outbox_page_never_shows_the_records(vic: User, dead_letter: ForwardOutbox) -> None:
    client = console(vic)

    listing = client.get(OUTBOX).content.decode()
    page = client.get(f"{OUTBOX}{dead_letter.pk}/change/").content.decode()

    assert "HTTP 503" in listing
    assert "req-private" not in listing + page


def test_retry_now_delivers_an_outbox_entry(
    sam: User, dead_letter: ForwardOutbox, siem: WebhookReceiver
) -> None:
    sent = len(siem.received)

    response = console(sam).post(
        OUTBOX, {"action": "retry_now", "_selected_action": [dead_letter.pk]}
    )

    assert response.status_code == 302
    assert len(siem.received) == sent + 1
    assert siem.received[-1].headers["idempotency-key"] == dead_letter.batch_id
    assert not ForwardOutbox.objects.exists()


def test_discard_removes_an_outbox_entry_and_says_who_did(
    sam: User, dead_letter: ForwardOutbox
) -> None:
    response = console(sam).post(
        OUTBOX, {"action": "discard", "_selected_action": [dead_letter.pk]}
    )

    assert response.status_code == 302
    assert not ForwardOutbox.objects.exists()
    event = AuditEvent.objects.get(action="forward.discard")
    assert (event.actor, event.via) == ("sam@example.com", "console")
    assert event.detail["first_seq"] == dead_letter.first_seq
    assert event.detail["records"] == 2


def test_a_settings_reader_cannot_discard_an_outbox_entry(
    vic: User, dead_letter: ForwardOutbox
) -> None:
    console(vic).post(OUTBOX, {"action": "discard", "_selected_action": [dead_letter.pk]})

    assert ForwardOutbox.objects.filter(pk=dead_letter.pk).exists()
    assert not AuditEvent.objects.filter(action="forward.discard").exists()


def test_saving_a_forwarder_ends_its_pause(sam: User, siem: WebhookReceiver) -> None:
    fwd = ForwarderFactory(type="webhook", destination=siem.url, secret=WEBHOOK_SECRET)
    siem.fail(*[Answer(503)] * FAST.attempts)
    append("gateway", 1)
    forward(fwd.pk, FAST)
    append("gateway", 1, start=1)
    assert forward(fwd.pk, FAST) == 0

    console(sam).post(
        f"{LIST}{fwd.pk}/change/", webhook_form(siem.url, name=fwd.name, families=["gateway"])
    )

    assert forward(fwd.pk, FAST) == 1
