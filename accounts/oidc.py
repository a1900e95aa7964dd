"""Console sign-in through an OpenID Provider: mozilla-django-oidc's backend, configured
from the `OidcConfig` row instead of Django settings, with what the library leaves out.

- Discovery: `<issuer>/.well-known/openid-configuration`, whose `issuer` must equal the
  configured one exactly (OpenID Connect Discovery 1.0 §4.3).
- The ID token: RS256 only, verified with the provider's JWKS, and its `iss`, `aud`, `exp`,
  `iat` and `nonce` checked (the library checks the signature and the nonce only).
- A flow's state, nonce and PKCE verifier live in the browser's session (the library's
  `oidc_states`); the callback removes them and marks the state spent in the cache, so a
  callback works once, and only in the browser that started it.
- Accounts are matched by the username claim, created if the configuration allows it,
  refused when disabled; at every sign-in the roles the group mapping names are given and
  taken away to follow the groups claim, and roles it does not name are left alone.

Outbound calls use httpx without following redirects. A token, a code or the client secret
never appears in an exception, a log line or a page.
"""

import base64
import hashlib
import logging
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
import jwt
import orjson
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import (
    add_state_and_verifier_and_nonce_to_session,
    generate_code_challenge,
    import_from_settings,
)

from accounts.models import OidcConfig, Role, RoleAssignment, Team
from accounts.runtime import setting
from thinkwatch.lib.http import USER_AGENT

logger = logging.getLogger(__name__)

LOGIN, TEST = "login", "test"
ALGORITHM = "RS256"
STATE_TTL = 600  # seconds a sign-in may take between leaving for the provider and returning
HTTP_TIMEOUT = 15.0
MAX_BODY_BYTES = 512 * 1024
CLOCK_LEEWAY = 60
DISCOVERY_PATH = "/.well-known/openid-configuration"
BASIC, POST = "client_secret_basic", "client_secret_post"
# Claims about the token rather than the person, left out of a test's report.
_TOKEN_CLAIMS = frozenset({"nonce", "at_hash", "c_hash"})
_LOOPBACK_NAMES = frozenset({"localhost"})


class SignInError(Exception):
    """Why a single sign-on (or its test) failed, in words for the person signing in; never a
    token, a code or the client secret."""


# --- discovery ------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    token_auth_method: str
    pkce: bool


def check_issuer(issuer: str) -> None:
    """An issuer is an https URL without query or fragment; http only on loopback, for
    trying things out on one machine."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SignInError("The issuer must be an https:// URL, e.g. https://login.example.com.")
    if parts.query or parts.fragment:
        raise SignInError("The issuer URL cannot have a query or a fragment.")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise SignInError("The issuer must use https (http is accepted on loopback only).")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def discover(issuer: str) -> Discovery:
    check_issuer(issuer)
    url = issuer.rstrip("/") + DISCOVERY_PATH
    status, document = _call("GET", url)
    if status != 200 or document is None:
        raise SignInError(f"{url} answered HTTP {status} without a discovery document.")
    named = document.get("issuer")
    if named != issuer:
        raise SignInError(
            f"The discovery document at {url} names the issuer {printable(named)!r}, not "
            f"{issuer!r}. The issuer must match it exactly (a trailing slash included)."
        )
    algorithms = document.get("id_token_signing_alg_values_supported")
    if isinstance(algorithms, list) and ALGORITHM not in algorithms:
        raise SignInError(f"{issuer} does not sign ID tokens with {ALGORITHM}.")
    methods = document.get("token_endpoint_auth_methods_supported") or [BASIC]
    if not isinstance(methods, list) or not {BASIC, POST} & set(methods):
        raise SignInError(f"{issuer} accepts neither {BASIC} nor {POST} for the client secret.")
    userinfo = document.get("userinfo_endpoint")
    return Discovery(
        authorization_endpoint=_endpoint(document, "authorization_endpoint"),
        token_endpoint=_endpoint(document, "token_endpoint"),
        userinfo_endpoint=_endpoint(document, "userinfo_endpoint") if userinfo else "",
        jwks_uri=_endpoint(document, "jwks_uri"),
        token_auth_method=BASIC if BASIC in methods else POST,
        pkce="S256" in (document.get("code_challenge_methods_supported") or []),
    )


def _endpoint(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise SignInError(f"The discovery document has no usable {name}.")
    return value


def apply_discovery(config: OidcConfig, issuer: str) -> None:
    """Set `config`'s endpoints from `issuer`'s discovery document (cleared without one)."""
    found = discover(issuer) if issuer else None
    config.authorization_endpoint = found.authorization_endpoint if found else ""
    config.token_endpoint = found.token_endpoint if found else ""
    config.userinfo_endpoint = found.userinfo_endpoint if found else ""
    config.jwks_uri = found.jwks_uri if found else ""
    config.token_auth_method = found.token_auth_method if found else ""
    config.pkce = found.pkce if found else False
    config.discovered_at = timezone.now() if found else None


def rediscover(config: OidcConfig) -> None:
    """Fetch the endpoints again (a test sign-in starts with this)."""
    apply_discovery(config, config.issuer)
    config.save(
        update_fields=[
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "jwks_uri",
            "token_auth_method",
            "pkce",
            "discovered_at",
        ]
    )


def configure(config: OidcConfig, changes: dict[str, Any], secret: str | None) -> OidcConfig:
    """Apply an edit (the API's PUT): discovery when the issuer changes, then the model's
    rules (an untested configuration cannot be enabled)."""
    issuer_changed = changes.get("issuer", config.issuer) != config.issuer
    for name, value in changes.items():
        setattr(config, name, value)
    if secret is not None:
        config.set_client_secret(secret)
    if issuer_changed or (config.issuer and not config.jwks_uri):
        try:
            apply_discovery(config, config.issuer)
        except SignInError as exc:
            raise ValidationError({"issuer": str(exc)}) from None
    config.full_clean()
    config.save()
    logger.info("sso.configured", extra={"enabled": config.enabled, "issuer": config.issuer})
    return config


def callback_url(request: HttpRequest) -> str:
    """The redirect URI to register with the provider."""
    path = reverse("oidc_authentication_callback")
    public = setting("console.public_url")
    if public:
        return f"{public.rstrip('/')}{path}"
    return request.build_absolute_uri(path)


# --- the flow's state -------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    state: str
    nonce: str = field(repr=False)
    code_verifier: str | None = field(repr=False)
    mode: str
    next_url: str | None
    fingerprint: str  # of the configuration a test began with
    user_id: int | None  # who runs a test


def begin(request: HttpRequest, config: OidcConfig, mode: str, next_url: str | None = None) -> str:
    """The provider's authorization URL the browser goes to next; the flow's secrets stay in
    the browser's session."""
    if not config.complete:
        raise SignInError(
            "Single sign-on is not configured yet: set the issuer, client id and client "
            "secret, and save."
        )
    state = get_random_string(32)
    params = {
        "response_type": "code",
        "scope": config.scopes,
        "client_id": config.client_id,
        "redirect_uri": callback_url(request),
        "state": state,
        "nonce": get_random_string(32),
    }
    verifier = get_random_string(64) if config.pkce else None
    if verifier:
        params["code_challenge"] = generate_code_challenge(verifier, "S256")
        params["code_challenge_method"] = "S256"
    add_state_and_verifier_and_nonce_to_session(request, state, params, verifier)
    request.session["oidc_states"][state].update(
        mode=mode,
        next=next_url,
        fingerprint=config.fingerprint() if mode == TEST else "",
        user_id=request.user.pk if mode == TEST else None,
    )
    request.session.modified = True
    separator = "&" if urlsplit(config.authorization_endpoint).query else "?"
    return f"{config.authorization_endpoint}{separator}{urlencode(params)}"


def take(request: HttpRequest, state: str) -> Flow:
    """The flow a callback ends, removed from the session before anything else is done."""
    flows = request.session.get("oidc_states")
    entry = flows.pop(state, None) if isinstance(flows, dict) and state else None
    if entry is None:
        raise SignInError(
            "This sign-in response is unknown or was already used. Start again from the "
            "sign-in page."
        )
    request.session.modified = True
    request.session.save()
    # Two callbacks racing with one state could both read the session before either saves.
    spent = "oidc-state-spent:" + hashlib.sha256(state.encode()).hexdigest()
    if not cache.add(spent, True, timeout=STATE_TTL):
        raise SignInError("This sign-in response was already used. Start again.")
    if time.time() - float(entry.get("added_on", 0)) > STATE_TTL:
        raise SignInError("This sign-in took longer than ten minutes. Start again.")
    return Flow(
        state=state,
        nonce=entry["nonce"],
        code_verifier=entry.get("code_verifier"),
        mode=entry.get("mode", LOGIN),
        next_url=entry.get("next"),
        fingerprint=entry.get("fingerprint", ""),
        user_id=entry.get("user_id"),
    )


# --- what the claims mean here ------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    role: Role
    team: Team | None

    @property
    def key(self) -> tuple[int, int | None]:
        return self.role.pk, self.team.pk if self.team else None

    def __str__(self) -> str:
        return f"{self.role.name} in team {self.team.name}" if self.team else self.role.name


Grants = dict[tuple[int, int | None], Grant]


@dataclass
class Mapping:
    """Who a set of claims signs in, with which roles, or why they would not get in."""

    claims: dict[str, Any]
    username: str
    email: str
    first_name: str
    last_name: str
    groups: list[str]
    user: User | None
    username_error: str  # the claims cannot name an account: the configuration is wrong
    refusal: str  # why this person would not be signed in ("" if they would)
    wanted: Grants  # mapped roles their groups give
    managed: Grants  # every role the mapping names
    held: set[tuple[int, int | None]]  # roles the account holds now
    notes: list[str]

    @property
    def given(self) -> list[Grant]:
        return [grant for key, grant in self.wanted.items() if key not in self.held]

    @property
    def kept(self) -> list[Grant]:
        return [grant for key, grant in self.wanted.items() if key in self.held]

    @property
    def taken(self) -> list[Grant]:
        gone = (self.managed.keys() - self.wanted.keys()) & self.held
        return [self.managed[key] for key in gone]

    @property
    def shown_claims(self) -> dict[str, str]:
        """The claims as JSON, for a test's report."""
        shown = sorted(k for k in self.claims if k not in _TOKEN_CLAIMS)
        return {k: orjson.dumps(self.claims[k]).decode() for k in shown}


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into objects (realm_access.roles) unless a
    claim has that exact name (https://example.com/groups)."""
    if not name:
        return None
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text_claim(claims: dict[str, Any], name: str, limit: int = 254) -> str:
    value = claim(claims, name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _groups(claims: dict[str, Any], name: str) -> list[str]:
    value = claim(claims, name)
    if isinstance(value, str):
        return [value]
    return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []


def authenticate(request: HttpRequest, flow: Flow, code: str) -> User:
    """Sign in through Django's authenticate(), so the session records the backend."""
    user = auth.authenticate(request, flow=flow, code=code)
    if user is None:
        raise SignInError("Single sign-on is not set up on this server (no OIDC backend).")
    return user


# --- the backend ------------------------------------------------------------------------


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend reading the `OidcConfig` row. It acts only on a callback
    the SSO views hand it (`flow=`): password sign-ins pass through it untouched."""

    def __init__(self, config: OidcConfig | None = None) -> None:
        # Django builds a backend for every request of a user it signed in (get_user), so
        # the row is read, and the library's own __init__ run, only when signing in.
        self.UserModel = get_user_model()
        self._config = config

    @property
    def config(self) -> OidcConfig:
        if self._config is None:
            self._config = OidcConfig.current()
        return self._config

    def get_settings(self, attr: str, *args: Any) -> Any:
        config = self.config
        if attr == "OIDC_RP_CLIENT_SECRET":
            return config.reveal_client_secret()
        values = {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": config.authorization_endpoint,
            "OIDC_OP_TOKEN_ENDPOINT": config.token_endpoint,
            "OIDC_OP_USER_ENDPOINT": config.userinfo_endpoint,
            "OIDC_OP_JWKS_ENDPOINT": config.jwks_uri,
            "OIDC_RP_CLIENT_ID": config.client_id,
            "OIDC_RP_SIGN_ALGO": ALGORITHM,
            "OIDC_RP_IDP_SIGN_KEY": None,
            "OIDC_RP_SCOPES": config.scopes,
            "OIDC_USE_NONCE": True,
            "OIDC_USE_PKCE": config.pkce,
            "OIDC_CREATE_USER": config.create_users,
            "OIDC_ALLOW_UNSECURED_JWT": False,
            "OIDC_TOKEN_USE_BASIC_AUTH": config.token_auth_method == BASIC,
            "OIDC_STORE_ACCESS_TOKEN": False,
            "OIDC_STORE_ID_TOKEN": False,
            "OIDC_TIMEOUT": HTTP_TIMEOUT,
        }
        return values[attr] if attr in values else import_from_settings(attr, *args)

    def get_user(self, user_id: Any) -> User | None:
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    # -- signing in

    def authenticate(
        self, request: HttpRequest | None, flow: Flow | None = None, code: str = "", **kwargs: Any
    ) -> User | None:
        if request is None or flow is None:
            return None
        self.request = request
        access_token, id_token, payload = self.redeem(request, flow, code)
        return self.get_or_create_user(access_token, id_token, payload)

    def preview(self, request: HttpRequest, flow: Flow, code: str) -> Mapping:
        """What signing in with this callback would do, doing none of it (a test sign-in)."""
        self.request = request
        access_token, id_token, payload = self.redeem(request, flow, code)
        return self.map_claims(self.get_userinfo(access_token, id_token, payload))

    def redeem(
        self, request: HttpRequest, flow: Flow, code: str
    ) -> tuple[str, str, dict[str, Any]]:
        """The code for tokens; the ID token verified. (access token, ID token, its claims)"""
        if not self.config.complete:
            raise SignInError("Single sign-on is not configured completely.")
        OIDCAuthenticationBackend.__init__(self)
        form = {
            "client_id": self.OIDC_RP_CLIENT_ID,
            "client_secret": self.OIDC_RP_CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": callback_url(request),
        }
        if flow.code_verifier:
            form["code_verifier"] = flow.code_verifier
        tokens = self.get_token(form)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("The provider sent no ID token; check that the scopes hold openid.")
        try:
            payload = self.verify_token(id_token, nonce=flow.nonce)
        except SuspiciousOperation as exc:
            raise SignInError(f"The ID token was refused: {exc}") from None
        access_token = tokens.get("access_token")
        return access_token if isinstance(access_token, str) else "", id_token, payload

    def get_token(self, payload: dict[str, str]) -> dict[str, Any]:
        form = dict(payload)
        headers = {}
        if self.get_settings("OIDC_TOKEN_USE_BASIC_AUTH"):
            pair = f"{quote_plus(form.pop('client_id'))}:{quote_plus(form.pop('client_secret'))}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        status, document = _call("POST", self.OIDC_OP_TOKEN_ENDPOINT, data=form, headers=headers)
        if document is not None and isinstance(document.get("error"), str):
            error = printable(document["error"], 100)
            description = printable(document.get("error_description"), 300)
            reason = f"{error}: {description}" if description else error
            raise SignInError(f"The provider refused to complete the sign-in ({reason}).")
        if status != 200 or document is None:
            raise SignInError(f"The provider's token endpoint answered HTTP {status}.")
        return document

    def retrieve_matching_jwk(self, token: str) -> jwt.PyJWK:
        status, jwks = _call("GET", self.OIDC_OP_JWKS_ENDPOINT)
        keys = jwks.get("keys") if jwks else None
        if status != 200 or not isinstance(keys, list):
            raise SignInError(f"The provider's signing keys could not be read (HTTP {status}).")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise SignInError("The provider's ID token is not a JWT.") from None
        candidates = [
            key
            for key in keys
            if isinstance(key, dict)
            and key.get("kty") == "RSA"
            and key.get("use", "sig") == "sig"
            and key.get("alg", ALGORITHM) == ALGORITHM
            and (kid is None or key.get("kid") == kid)
        ]
        if len(candidates) != 1:
            raise SignInError("No signing key of the provider matches the ID token's.")
        return jwt.PyJWK(candidates[0], algorithm=ALGORITHM)

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        issuer = self.config.issuer
        if jwt.get_unverified_header(payload).get("alg") != ALGORITHM:
            raise SignInError(f"The ID token is not signed with {ALGORITHM}; refused.")
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[ALGORITHM],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=issuer,
                leeway=CLOCK_LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.InvalidIssuerError:
            named = jwt.decode(payload, options={"verify_signature": False}).get("iss")
            raise SignInError(
                f"The ID token was issued by {printable(named)!r}, not by the configured issuer "
                f"{issuer!r}; refused."
            ) from None
        except jwt.InvalidSignatureError:
            raise SignInError("The ID token's signature does not verify; refused.") from None
        except jwt.InvalidAudienceError:
            raise SignInError("The ID token is meant for another client; refused.") from None
        except jwt.ExpiredSignatureError:
            raise SignInError(
                "The ID token has expired; check this server's clock and try again."
            ) from None
        except jwt.PyJWTError as exc:
            raise SignInError(f"The ID token is not valid ({type(exc).__name__}).") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SignInError("The ID token was issued to another client; refused.")
        return claims

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The ID token's claims, and the userinfo endpoint's over them."""
        if not self.OIDC_OP_USER_ENDPOINT or not access_token:
            return dict(payload)
        headers = {"Authorization": f"Bearer {access_token}"}
        status, info = _call("GET", self.OIDC_OP_USER_ENDPOINT, headers=headers)
        if status != 200 or info is None:
            raise SignInError(f"The provider's userinfo endpoint answered HTTP {status}.")
        if info.get("sub") != payload.get("sub"):
            raise SignInError("The userinfo endpoint describes another account; refused.")
        return {**payload, **info}

    # -- accounts and roles

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[User]:
        username = _text_claim(claims, self.config.username_claim, 150)
        if not username:
            return self.UserModel.objects.none()
        return self.UserModel.objects.filter(username__iexact=username)

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return not self.map_claims(claims).refusal

    def map_claims(self, claims: dict[str, Any]) -> Mapping:
        config = self.config
        username = _text_claim(claims, config.username_claim, 1000)
        username_error = self._username_error(claims, username)
        user, refusal = None, username_error
        if not username_error:
            users = list(self.filter_users_by_claims(claims)[:2])
            user = users[0] if len(users) == 1 else None
            refusal = self._refusal(username, users)
        notes: list[str] = []
        wanted, managed = self._grants(_groups(claims, config.groups_claim), notes)
        default_role = setting("accounts.default_role")
        if user is None and not refusal and default_role:
            notes.append(
                f"A new account also gets the default role {default_role!r} (Settings), "
                "unless the group mapping names that role and the groups do not give it."
            )
        if config.groups_claim and claim(claims, config.groups_claim) is None:
            notes.append(
                f"No {config.groups_claim!r} claim arrived: every role the group mapping "
                "names would be taken away. Check the scopes and the provider's claim setup."
            )
        held: set[tuple[int, int | None]] = set(
            RoleAssignment.objects.filter(user=user).values_list("role_id", "team_id")
            if user
            else ()
        )
        return Mapping(
            claims=claims,
            username=username,
            email=_text_claim(claims, config.email_claim),
            first_name=_text_claim(claims, config.first_name_claim, 150),
            last_name=_text_claim(claims, config.last_name_claim, 150),
            groups=_groups(claims, config.groups_claim),
            user=user,
            username_error=username_error,
            refusal=refusal,
            wanted=wanted,
            managed=managed,
            held=held,
            notes=notes,
        )

    def _username_error(self, claims: dict[str, Any], username: str) -> str:
        name = self.config.username_claim
        if not username:
            return (
                f"The provider sent no {name!r} claim, which ThinkWatch uses as the username. "
                "Check the claim mapping and the scopes."
            )
        try:
            self.UserModel._meta.get_field("username").run_validators(username)
        except ValidationError as exc:
            return f"The {name!r} claim is not a usable username: {' '.join(exc.messages)}"
        if name == "email" and claims.get("email_verified") is False:
            return "The provider says this email address is not verified; it cannot be a username."
        return ""

    def _refusal(self, username: str, users: list[User]) -> str:
        if len(users) > 1:
            return f"More than one account has the username {username!r}; ask an administrator."
        if users and not users[0].is_active:
            return f"The account {username!r} is disabled; ask an administrator."
        if not users and not self.config.create_users:
            return (
                f"There is no ThinkWatch account {username!r}, and single sign-on does not "
                "create accounts; ask an administrator."
            )
        return ""

    def _grants(self, groups: list[str], notes: list[str]) -> tuple[Grants, Grants]:
        entries = self.config.group_roles
        roles = {r.slug: r for r in Role.objects.filter(slug__in=[e["role"] for e in entries])}
        names = [e["team"] for e in entries if e.get("team")]
        teams = {t.name: t for t in Team.objects.filter(name__in=names)}
        wanted: Grants = {}
        managed: Grants = {}
        for entry in entries:
            role, team = roles.get(entry["role"]), teams.get(entry.get("team") or "")
            if role is None or (entry.get("team") and team is None):
                notes.append(
                    f"The mapping of group {entry['group']!r} names a role or team that no "
                    "longer exists; it is skipped."
                )
                continue
            grant = Grant(role, team)
            managed[grant.key] = grant
            if entry["group"] in groups:
                wanted[grant.key] = grant
        return wanted, managed

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User:
        mapping = self.map_claims(self.get_userinfo(access_token, id_token, payload))
        if mapping.refusal:
            raise SignInError(mapping.refusal)
        with transaction.atomic():
            user = mapping.user or self.create_user(mapping.claims)
            self.update_user(user, mapping.claims)
            self.sync_roles(user, mapping)
        logger.info(
            "sso.signed_in",
            extra={
                "user_id": user.pk,
                "new_account": mapping.user is None,
                "issuer": self.config.issuer,
            },
        )
        return user

    def create_user(self, claims: dict[str, Any]) -> User:
        username = _text_claim(claims, self.config.username_claim, 150)
        return self.UserModel.objects.create_user(username)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        config = self.config
        fresh = {
            "email": _text_claim(claims, config.email_claim),
            "first_name": _text_claim(claims, config.first_name_claim, 150),
            "last_name": _text_claim(claims, config.last_name_claim, 150),
        }
        changed = [k for k, v in fresh.items() if v and getattr(user, k) != v]
        for name in changed:
            setattr(user, name, fresh[name])
        if changed:
            user.save(update_fields=changed)
        return user

    def sync_roles(self, user: User, mapping: Mapping) -> None:
        """Give the mapped roles the groups give, take away the mapped roles they no longer
        give; roles the mapping does not name stay as they are."""
        held = {(a.role_id, a.team_id): a for a in RoleAssignment.objects.filter(user=user)}
        for key, grant in mapping.wanted.items():
            if key not in held:
                RoleAssignment.objects.create(user=user, role=grant.role, team=grant.team)
        for key in (mapping.managed.keys() - mapping.wanted.keys()) & held.keys():
            held[key].delete()


# --- outbound HTTP ------------------------------------------------------------------------


def _call(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """(HTTP status, the JSON object answered or None)."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    try:
        with (
            httpx.Client(
                timeout=HTTP_TIMEOUT,
                follow_redirects=False,
                trust_env=settings.UPSTREAM_PROXY_FROM_ENV,
            ) as client,
            client.stream(method, url, headers=headers, **kwargs) as response,
        ):
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise SignInError(f"{_origin(url)} answered with more than 512 KiB.")
    except httpx.HTTPError as exc:
        raise SignInError(f"Could not reach {_origin(url)} ({type(exc).__name__}).") from None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return response.status_code, None
    return response.status_code, document if isinstance(document, dict) else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def printable(value: object, limit: int = 200) -> str:
    """Text from a provider, fit to show: printable characters only, cut at `limit`."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:limit]
