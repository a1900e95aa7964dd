"""`{% setup_pending as pending %}`: true while no admin exists (the sign-in pages then
point to /setup)."""

from django import template

from accounts.logic import admin_exists

register = template.Library()


@register.simple_tag
def setup_pending() -> bool:
    return not admin_exists()
