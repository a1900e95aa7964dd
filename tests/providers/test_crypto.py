import pytest
from django.test import override_settings

from thinkwatch.lib import crypto

OLD = bytes(range(32))
NEW = bytes(range(1, 33))


def test_it_round_trips_a_secret() -> None:
    envelope = crypto.encrypt("sk-live-123", "purpose")

    assert crypto.decrypt(envelope, "purpose") == "sk-live-123"
    assert "sk-live-123" not in envelope


def test_it_uses_a_fresh_nonce_each_time() -> None:
    assert crypto.encrypt("same", "p") != crypto.encrypt("same", "p")


def test_it_refuses_a_tampered_envelope() -> None:
    version, kid, body = crypto.encrypt("sk-live-123", "purpose").split(".")
    tampered = f"{version}.{kid}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}"

    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(tampered, "purpose")


def test_it_binds_a_secret_to_its_purpose() -> None:
    envelope = crypto.encrypt("sk-live-123", "providers.Provider.secret")

    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(envelope, "mcp.token")


def test_it_reads_secrets_sealed_by_a_previous_master_key() -> None:
    with override_settings(MASTER_KEY=OLD, PREVIOUS_MASTER_KEYS=[]):
        envelope = crypto.encrypt("sk-live-123", "p")

    with override_settings(MASTER_KEY=NEW, PREVIOUS_MASTER_KEYS=[OLD]):
        assert crypto.decrypt(envelope, "p") == "sk-live-123"
        assert not crypto.sealed_by_current_key(envelope)


def test_it_refuses_a_secret_sealed_by_an_unknown_key() -> None:
    with override_settings(MASTER_KEY=OLD, PREVIOUS_MASTER_KEYS=[]):
        envelope = crypto.encrypt("sk-live-123", "p")

    with (
        override_settings(MASTER_KEY=NEW, PREVIOUS_MASTER_KEYS=[]),
        pytest.raises(crypto.DecryptionError),
    ):
        crypto.decrypt(envelope, "p")


@pytest.mark.django_db
def test_it_reencrypts_provider_secrets_under_the_current_key() -> None:
    from django.core.management import call_command

    from tests.factories import ProviderFactory

    with override_settings(MASTER_KEY=OLD, PREVIOUS_MASTER_KEYS=[]):
        provider = ProviderFactory(api_key="sk-live-123")

    with override_settings(MASTER_KEY=NEW, PREVIOUS_MASTER_KEYS=[OLD]):
        call_command("reencrypt_secrets", stdout=open("/dev/null", "w"))  # noqa: SIM115
        provider.refresh_from_db()
        assert crypto.sealed_by_current_key(provider.secret)

    with override_settings(MASTER_KEY=NEW, PREVIOUS_MASTER_KEYS=[]):
        assert provider.reveal_secret() == "sk-live-123"
