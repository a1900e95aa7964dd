"""Applying a partial update (an API PATCH) to a model instance."""

from typing import Any, TypeVar

from django.db import models

M = TypeVar("M", bound=models.Model)


def apply_edits(instance: M, changes: dict[str, Any]) -> M:
    """Set the given fields, validate the whole object (uniqueness included), save it."""
    for field, value in changes.items():
        setattr(instance, field, value)
    instance.full_clean()
    instance.save()
    return instance
