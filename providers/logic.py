"""Provider operations shared by the console, the API and the setup wizard."""

from typing import Any

from providers.models import Provider


def create_provider(
    *,
    type: str,
    name: str,
    base_url: str = "",
    api_key: str = "",
    aws_session_token: str = "",
    **options: Any,
) -> Provider:
    provider = Provider(name=name, type=type, base_url=base_url, **options)
    provider.set_secret(api_key)
    provider.set_session_token(aws_session_token)
    provider.full_clean()
    provider.save()
    return provider
