"""Single sign-on pages: /oidc/authenticate/ sends the browser to the provider, and
/oidc/callback/ is where the provider sends it back, to be signed in or, for an
administrator's test sign-in, to see what would happen (accounts/oidc.py does the work)."""

import logging
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.generic import View
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    get_next_url,
)

from accounts import oidc
from accounts.access import Rights
from accounts.models import OidcConfig

logger = logging.getLogger(__name__)


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), **context}
    response = render(request, template, context, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _refused(request: HttpRequest, error: oidc.SignInError, testing: bool) -> HttpResponse:
    logger.warning("sso.refused", extra={"reason": str(error), "test": testing})
    return _page(request, "accounts/sso_error.html", status=400, error=str(error), testing=testing)


@method_decorator(never_cache, name="dispatch")
class SignInView(OIDCAuthenticationRequestView):
    """To the provider's sign-in page, when single sign-on is enabled."""

    def __init__(self, **kwargs: Any) -> None:
        # The library reads the endpoints from settings here; ours are read per request.
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        config = OidcConfig.current()
        if not config.enabled:
            error = oidc.SignInError("Single sign-on is not enabled. Sign in with a password.")
            return _refused(request, error, testing=False)
        try:
            url = oidc.begin(request, config, oidc.LOGIN, get_next_url(request, "next"))
        except oidc.SignInError as exc:
            return _refused(request, exc, testing=False)
        return HttpResponseRedirect(url)


@method_decorator(never_cache, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """The provider's answer: signs the person in, or shows a test sign-in's result."""

    flow: oidc.Flow

    def get(self, request: HttpRequest) -> HttpResponse:
        testing = False
        try:
            self.flow = oidc.take(request, request.GET.get("state", ""))
            testing = self.flow.mode == oidc.TEST
            config = OidcConfig.current()
            code = self._code(request, config)
            if testing:
                return self._test(request, config, code)
            if not config.enabled:
                raise oidc.SignInError("Single sign-on was switched off. Sign in with a password.")
            self.user = oidc.authenticate(request, self.flow, code)
        except oidc.SignInError as exc:
            return _refused(request, exc, testing)
        return self.login_success()

    @property
    def success_url(self) -> str:
        if self.flow.next_url:
            return self.flow.next_url
        return (
            reverse("admin:index") if Rights.of(self.user).console else reverse("mcp-connections")
        )

    def _code(self, request: HttpRequest, config: OidcConfig) -> str:
        error = request.GET.get("error")
        if error:
            description = oidc.printable(request.GET.get("error_description"), 300)
            reason = oidc.printable(error, 100) + (f": {description}" if description else "")
            raise oidc.SignInError(f"The identity provider did not sign you in ({reason}).")
        # RFC 9207: a provider that names itself in its answer must be the configured one.
        issuer = request.GET.get("iss")
        if issuer is not None and issuer != config.issuer:
            raise oidc.SignInError(
                f"The answer came from {oidc.printable(issuer)!r}, not from the configured "
                f"issuer {config.issuer!r}; refused."
            )
        code = request.GET.get("code", "")
        if not code:
            raise oidc.SignInError("The identity provider sent no authorization code.")
        return code

    def _test(self, request: HttpRequest, config: OidcConfig, code: str) -> HttpResponse:
        user = request.user
        if user.pk != self.flow.user_id or not Rights.of(user).has("settings:update"):
            raise oidc.SignInError(
                "Only the administrator who started this test sign-in can see its result."
            )
        mapping = oidc.OidcBackend(config).preview(request, self.flow, code)
        passed = not mapping.username_error
        recorded = passed and config.mark_tested(self.flow.fingerprint)
        logger.info("sso.tested", extra={"passed": passed, "recorded": recorded})
        return _page(
            request,
            "admin/accounts/oidcconfig/test_result.html",
            title="Test sign-in",
            mapping=mapping,
            passed=passed,
            recorded=recorded,
            config=config,
        )
