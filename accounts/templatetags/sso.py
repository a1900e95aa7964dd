"""`{% sso_sign_in_url next as url %}`: where “Sign in with SSO” leads, or "" while single
sign-on is off (the sign-in pages then show no such button)."""

from urllib.parse import urlencode

from django import template
from django.urls import reverse

from accounts.models import OidcConfig

register = template.Library()


@register.simple_tag
def sso_sign_in_url(next_url: str = "") -> str:
    if not OidcConfig.objects.filter(pk=1, enabled=True).exists():
        return ""
    url = reverse("oidc_authentication_init")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url
