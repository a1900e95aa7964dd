"""Permission checks for management API operations (see accounts/access.py).

A refusal raises `accounts.access.Denied`, which the API answers with 403 and the name of
the missing permission."""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest

from accounts import access


def require(request: HttpRequest, perm: str, team_id: int | None = None) -> None:
    """Refuse with 403 unless the caller holds `perm` (within `team_id`, if given)."""
    access.require(request.user, perm, team_id)


F = TypeVar("F", bound=Callable[..., Any])


def needs(perm: str) -> Callable[[F], F]:
    """An operation that needs `perm` globally (the OpenAPI description says so)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            access.require(request.user, perm)
            return view(request, *args, **kwargs)

        doc = (view.__doc__ or "").strip()
        checked.__doc__ = f"{doc}\n\nNeeds `{perm}`.".strip()
        return checked  # type: ignore[return-value]

    return decorate
