from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and keys"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from accounts.models import Role, RoleAssignment

        post_save.connect(_assignment_changed, sender=RoleAssignment, dispatch_uid="access-ra")
        post_delete.connect(_assignment_changed, sender=RoleAssignment, dispatch_uid="access-rd")
        post_save.connect(_role_changed, sender=Role, dispatch_uid="access-role")
        post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="access-user")

        from corsheaders.signals import check_request_enabled

        from accounts import sessions
        from thinkwatch.headers import cors_allowed

        sessions.connect_signals()
        check_request_enabled.connect(cors_allowed, dispatch_uid="cors-runtime-origins")


def _assignment_changed(sender: type, instance: Any, **kwargs: Any) -> None:
    from django.contrib.auth.models import User

    from accounts import access

    user = User.objects.filter(pk=instance.user_id).first()
    if user is not None:  # gone when the assignment goes with its user
        access.sync(user)


def _role_changed(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    from accounts import access

    if not created:
        access.sync_holders(instance)


def _user_saved(
    sender: type, instance: Any, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    from accounts import access

    if raw:
        return
    if created:
        access.give_default_role(instance)
    update_fields = kwargs.get("update_fields")
    if update_fields is None or "is_superuser" in update_fields:
        staff = instance.is_superuser or access.derive(instance).console
        if instance.is_active and staff != instance.is_staff:
            type(instance).objects.filter(pk=instance.pk).update(is_staff=staff)
            instance.is_staff = staff
