"""A deleted provider is gone at once for everyone, and its row goes 30 days later."""

from datetime import timedelta

import openai
import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent, GatewayLog
from providers.models import Provider
from providers.tasks import purge_deleted
from tests.conftest import LiveServer, logged
from tests.factories import ProviderFactory, RouteFactory

MESSAGES = [{"role": "user", "content": "hi"}]


def later(days: int) -> time_machine.travel:
    return time_machine.travel(timezone.now() + timedelta(days=days))


@pytest.mark.django_db
def test_deleting_a_provider_through_the_api_hides_it_and_keeps_the_row(api: Client) -> None:
    provider = ProviderFactory(name="old-openai")

    response = api.delete(f"/api/providers/{provider.pk}")

    row = Provider.all_objects.get(pk=provider.pk)
    assert response.status_code == 204
    assert api.get(f"/api/providers/{provider.pk}").status_code == 404
    assert [p["name"] for p in api.get("/api/providers").json()] == []
    assert row.deleted_at is not None


@pytest.mark.django_db
def test_deleting_a_provider_wipes_its_credentials(api: Client) -> None:
    provider = ProviderFactory(api_key="sk-upstream-secret")

    api.delete(f"/api/providers/{provider.pk}")

    row = Provider.all_objects.get(pk=provider.pk)
    assert (row.secret, row.session_token, row.enabled) == ("", "", False)


@pytest.mark.django_db
def test_a_deleted_provider_name_can_be_used_again_at_once(api: Client) -> None:
    api.delete(f"/api/providers/{ProviderFactory(name='openai').pk}")

    response = api.post(
        "/api/providers",
        {"name": "openai", "type": "openai", "api_key": "sk-new"},
        content_type="application/json",
    )

    assert response.status_code == 201


@pytest.mark.django_db
def test_two_live_providers_still_cannot_share_a_name(api: Client) -> None:
    ProviderFactory(name="openai")

    response = api.post(
        "/api/providers",
        {"name": "openai", "type": "openai", "api_key": "sk-new"},
        content_type="application/json",
    )

    assert response.status_code == 422
    assert "A provider with this name already exists." in response.content.decode()


def test_a_deleted_provider_leaves_routing_at_once(
    client: openai.OpenAI, openai_provider: Provider, gateway: LiveServer
) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    openai_provider.delete_softly()

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


@pytest.mark.django_db
def test_it_purges_providers_deleted_more_than_30_days_ago(alice: User) -> None:
    gone, stays, live = ProviderFactory(), ProviderFactory(), ProviderFactory()
    gone.delete_softly()
    with later(2):
        stays.delete_softly()

    with later(31):
        purged = purge_deleted()

    assert purged == [gone.pk]
    assert sorted(Provider.all_objects.values_list("pk", flat=True)) == [stays.pk, live.pk]


@pytest.mark.django_db
def test_it_records_the_purge_once_however_often_it_runs(alice: User) -> None:
    provider = ProviderFactory(name="retired")
    provider.delete_softly()

    with later(31):
        first, second = purge_deleted(), purge_deleted()

    [event] = AuditEvent.objects.filter(action="provider.purge")
    assert (first, second) == ([provider.pk], [])
    assert event.detail["providers"] == [{"id": provider.pk, "name": "retired"}]


def test_the_log_records_of_a_purged_provider_stay(
    client: openai.OpenAI, openai_provider: Provider, gateway: LiveServer
) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [record] = logged()
    openai_provider.delete_softly()

    with later(31):
        purge_deleted()

    assert not Provider.all_objects.filter(pk=openai_provider.pk).exists()
    assert GatewayLog.objects.filter(pk=record.pk, provider_id=openai_provider.pk).exists()


@pytest.mark.django_db
def test_deleting_a_provider_in_the_console_keeps_the_row_until_the_purge(alice: User) -> None:
    provider = ProviderFactory()
    console = Client()
    console.force_login(alice)

    response = console.post(f"/admin/providers/provider/{provider.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert Provider.all_objects.filter(pk=provider.pk, deleted_at__isnull=False).exists()


@pytest.mark.django_db
def test_the_console_still_refuses_to_delete_a_provider_routes_use(alice: User) -> None:
    route = RouteFactory()
    console = Client()
    console.force_login(alice)

    console.post(f"/admin/providers/provider/{route.provider_id}/delete/", {"post": "yes"})

    assert Provider.objects.filter(pk=route.provider_id).exists()
