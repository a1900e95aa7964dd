"""The console's admin site and the permission checks every admin page goes through.

The site admits anyone who holds a console right somewhere (accounts/access.py), not
Django's `is_staff` alone; each model admin asks `Governed` which of its objects the
user may see and change, with the same permission strings the management API checks.
"""

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from accounts.access import Rights, team_filter


class ConsoleSite(admin.AdminSite):
    site_header = "ThinkWatch"
    site_title = "ThinkWatch"
    index_title = "Console"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_authenticated and Rights.of(user).console)


class Governed:
    """Mixin for ModelAdmin: permissions `<area>:read|create|update|delete`.

    With `team_field` set, objects belong to a team and team-scoped rights apply: a Team
    Manager of team A sees and changes A's objects only. Objects without a team need the
    right globally.
    """

    area: str = ""
    team_field: str | None = None
    actions_map = {"view": "read", "add": "create", "change": "update", "delete": "delete"}

    def _perm(self, action: str) -> str:
        return f"{self.area}:{self.actions_map.get(action, action)}"

    def team_of(self, obj: Model) -> int | None:
        if self.team_field is None:
            return None
        return getattr(obj, f"{self.team_field}_id", None)

    def may(self, request: HttpRequest, action: str, obj: Model | None = None) -> bool:
        rights = Rights.of(request.user)
        perm = self._perm(action)
        if obj is None:
            return rights.anywhere(perm) if self.team_field else rights.has(perm)
        return rights.has(perm, self.team_of(obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.may(request, "view")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.may(request, "view", obj) or self.may(request, "change", obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.may(request, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.may(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.may(request, "delete", obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        if self.team_field is None:
            return queryset
        return queryset.filter(team_filter(request.user, self._perm("view"), self.team_field))


class GovernedReadOnly(Governed):
    """Records that are evidence (alerts, resets): read in the console, never changed."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]  # type: ignore[attr-defined]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class GovernedInline(Governed):
    """Mixin for inlines: rights on the inline's own area, scoped to the parent's team."""

    def _parent_team(self, obj: Model | None) -> int | None:
        return self.team_of(obj) if obj is not None else None

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._inline_may(request, "view", obj) or self._inline_may(request, "change", obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._inline_may(request, "add", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._inline_may(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._inline_may(request, "delete", obj)

    def _inline_may(self, request: HttpRequest, action: str, parent: Any) -> bool:
        rights = Rights.of(request.user)
        perm = self._perm(action)
        if parent is None:
            return rights.anywhere(perm) if self.team_field else rights.has(perm)
        return rights.has(perm, self._parent_team(parent))
