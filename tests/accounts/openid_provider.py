"""What the single sign-on tests share besides fixtures (those are in oidc_fixture.py): the
provider's client registration and signing keys, and what a person's browser does at the
provider."""

import json
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "thinkwatch-console"
CLIENT_SECRET = "tw-oidc-client-secret-never-shown"
CONSOLE = "http://testserver"  # the Django test client's host
REDIRECT_URI = f"{CONSOLE}/oidc/callback/"


def signing_jwk(kid: str = "test-key") -> dict[str, Any]:
    """A fresh private RS256 key as a JWK."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "kid", "alg", "use")}


@dataclass(frozen=True)
class OpenIdProvider:
    issuer: str

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5)
        response.raise_for_status()
        return dict(response.json())


def through_the_provider(authorize_url: str, sub: str, claims: dict[str, Any]) -> str:
    """What the browser does once sent to the provider: sign in there as `sub` with `claims`
    (the provider's login form), then follow its redirects until it sends the browser back
    to the console. Returns that callback URL."""
    with httpx.Client(timeout=10) as browser:
        response = browser.get(authorize_url)
        while True:
            assert response.status_code in (302, 303), response.text
            location = str(response.url.join(response.headers["location"]))
            if location.startswith(CONSOLE):
                return location
            if httpx.URL(location).path.startswith("/interaction/"):
                form = {"sub": sub, "claims": json.dumps(claims)}
                response = browser.post(f"{location}/login", data=form)
            else:
                response = browser.get(location)
