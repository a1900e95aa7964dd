"""A deleted account is gone at once for everyone, can be restored, and its row goes 30
days later."""

from datetime import timedelta

import openai
import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, Membership, UserSecurity
from accounts.tasks import purge_deleted_users
from audit.models import AuditEvent
from tests.conftest import LiveServer, logged
from tests.factories import TeamFactory, UserFactory, make_key

MESSAGES = [{"role": "user", "content": "hi"}]


def later(days: int) -> time_machine.travel:
    return time_machine.travel(timezone.now() + timedelta(days=days))


def names(response: object) -> list[str]:
    return [user["username"] for user in response.json()]  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_deleting_an_account_through_the_api_hides_it_and_keeps_the_row(api: Client) -> None:
    carol = UserFactory(username="carol", email="carol@example.com")

    response = api.delete(f"/api/users/{carol.pk}")

    assert response.status_code == 204
    assert api.get(f"/api/users/{carol.pk}").status_code == 404
    assert "carol" not in names(api.get("/api/users"))
    assert names(api.get("/api/users?deleted=true")) == ["carol"]
    row = User.objects.get(pk=carol.pk)
    assert (row.is_active, row.email, row.has_usable_password()) == (False, "", False)
    assert row.security.deleted_username == "carol"


@pytest.mark.django_db
def test_a_deleted_account_leaves_its_teams_lists(api: Client) -> None:
    carol, dan = UserFactory(username="carol"), UserFactory(username="dan")
    team = TeamFactory()
    Membership.objects.create(team=team, user=carol)
    Membership.objects.create(team=team, user=dan)

    api.delete(f"/api/users/{carol.pk}")

    assert api.get(f"/api/teams/{team.pk}").json()["member_ids"] == [dan.pk]
    assert names(api.get(f"/api/teams/{team.pk}/members")) == ["dan"]
    added = api.post(
        f"/api/teams/{team.pk}/members", {"user_id": carol.pk}, content_type="application/json"
    )
    assert added.status_code == 422


@pytest.mark.django_db
def test_the_username_of_a_deleted_account_can_be_given_again_at_once(api: Client) -> None:
    api.delete(f"/api/users/{UserFactory(username='carol').pk}")

    response = api.post("/api/users", {"username": "carol"}, content_type="application/json")

    assert response.status_code == 201


@pytest.mark.django_db
def test_deleting_an_account_revokes_its_keys_and_is_audited_as_a_deletion(
    api: Client,
) -> None:
    carol = UserFactory(username="carol")
    key, _ = make_key(carol)

    api.delete(f"/api/users/{carol.pk}")

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert key.revoked_reason == "Its owner's account was deleted."
    [event] = AuditEvent.objects.filter(object_type="auth.user", action="delete")
    assert event.object_id == str(carol.pk)
    assert event.before["username"] == "carol"


def test_the_keys_of_a_deleted_account_stop_working_at_once(
    client: openai.OpenAI, bob: User, gateway: LiveServer
) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    from accounts import deletion

    deletion.delete_softly(bob)

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


@pytest.mark.django_db
def test_a_deleted_account_cannot_sign_in_to_the_console(alice: User) -> None:
    carol = UserFactory(username="carol", is_staff=True)
    carol.set_password("a-long-passphrase-1")
    carol.save()
    console = Client()
    console.force_login(alice)
    console.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"})

    signed_in = Client().login(username="carol", password="a-long-passphrase-1")

    assert signed_in is False


@pytest.mark.django_db
def test_a_restored_account_gets_its_name_teams_and_email_back_disabled(api: Client) -> None:
    carol = UserFactory(username="carol", email="carol@example.com")
    team = TeamFactory()
    Membership.objects.create(team=team, user=carol)
    api.delete(f"/api/users/{carol.pk}")

    response = api.post(f"/api/users/{carol.pk}/restore")

    assert response.status_code == 200
    body = response.json()
    assert (body["username"], body["email"], body["is_active"]) == (
        "carol",
        "carol@example.com",
        False,
    )
    assert body["team_ids"] == [team.pk]
    assert names(api.get("/api/users?deleted=true")) == []


@pytest.mark.django_db
def test_restoring_is_refused_while_someone_else_holds_the_username(api: Client) -> None:
    carol = UserFactory(username="carol")
    api.delete(f"/api/users/{carol.pk}")
    UserFactory(username="carol")

    response = api.post(f"/api/users/{carol.pk}/restore")

    assert response.status_code == 409
    assert "carol" in response.json()["detail"]


@pytest.mark.django_db
def test_only_deleted_accounts_can_be_restored(api: Client) -> None:
    carol = UserFactory(username="carol")

    assert api.post(f"/api/users/{carol.pk}/restore").status_code == 404


@pytest.mark.django_db
def test_the_console_deletes_softly_and_lists_deleted_accounts_on_request(alice: User) -> None:
    carol = UserFactory(username="carol")
    console = Client()
    console.force_login(alice)

    response = console.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert UserSecurity.objects.get(user=carol).deleted_at is not None
    change_link = f"/admin/auth/user/{carol.pk}/change/"
    assert change_link not in console.get("/admin/auth/user/").content.decode()
    deleted = console.get("/admin/auth/user/?deleted=yes").content.decode()
    assert change_link in deleted
    assert "carol (deleted" in deleted
    assert console.get(f"/admin/auth/user/{carol.pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_the_console_restores_a_deleted_account(alice: User) -> None:
    carol = UserFactory(username="carol")
    console = Client()
    console.force_login(alice)
    console.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"})

    console.post(
        "/admin/auth/user/?deleted=yes",
        {"action": "restore", "_selected_action": [carol.pk]},
    )

    carol.refresh_from_db()
    assert carol.username == "carol"
    assert UserSecurity.objects.get(user=carol).deleted_at is None


@pytest.mark.django_db
def test_it_purges_accounts_deleted_more_than_30_days_ago(api: Client) -> None:
    from accounts import deletion

    gone, stays, live = UserFactory(), UserFactory(), UserFactory()
    make_key(gone)
    deletion.delete_softly(gone)
    with later(2):
        deletion.delete_softly(stays)

    with later(31):
        purged = purge_deleted_users()

    assert purged == [gone.pk]
    assert User.objects.filter(pk__in=[gone.pk, stays.pk, live.pk]).count() == 2
    assert not ApiKey.objects.filter(owner_id=gone.pk).exists()


@pytest.mark.django_db
def test_it_records_the_user_purge_once_however_often_it_runs(alice: User) -> None:
    from accounts import deletion

    carol = UserFactory(username="carol")
    deletion.delete_softly(carol)

    with later(31):
        first, second = purge_deleted_users(), purge_deleted_users()

    [event] = AuditEvent.objects.filter(action="user.purge")
    assert (first, second) == ([carol.pk], [])
    assert event.detail["users"] == [{"id": carol.pk, "username": "carol"}]


def test_the_log_records_of_a_purged_account_stay(
    client: openai.OpenAI, bob: User, gateway: LiveServer
) -> None:
    from accounts import deletion

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [record] = logged()
    deletion.delete_softly(bob)

    with later(31):
        purge_deleted_users()

    assert not User.objects.filter(pk=bob.pk).exists()
    [kept] = logged()
    assert (kept.pk, kept.user_id) == (record.pk, bob.pk)
