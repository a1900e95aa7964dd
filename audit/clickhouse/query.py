"""Django `Q` conditions as ClickHouse WHERE clauses with bound parameters.

The explorer's filters and the access scope (`accounts.access.log_filter`) are written once,
as Q objects over the log models; here they become SQL for ClickHouse. Column names come
only from the family's own columns (anything else is refused), values only through
`%(pN)s` parameters that the driver escapes; a datetime is compared as the exact
microseconds of its `_us` column. Only the lookups those conditions use are known;
anything else raises rather than being guessed at.
"""

from datetime import datetime
from typing import Any, cast

from django.db.models import Q

from audit.clickhouse import schema

_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class Where:
    """Terms joined with AND, and the parameters they refer to."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: dict[str, Any] = {}

    def value(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    def add(self, term: str) -> None:
        self.terms.append(term)

    def sql(self) -> str:
        return " AND ".join(f"({term})" for term in self.terms) or "1"


class Translator:
    def __init__(self, family: str, where: Where) -> None:
        self.where = where
        self.kinds = {f.name: f.kind for f in schema.fields(family)}

    def condition(self, q: Q) -> str:
        if q.negated:
            # Django negates NULL-aware (NULLs pass ~Q(x=1)); plain SQL NOT would drop them.
            raise ValueError("no ClickHouse form for a negated condition")
        parts = []
        for child in q.children:
            if isinstance(child, Q):
                parts.append(self.condition(child))
            else:
                lookup, value = cast(tuple[str, Any], child)
                parts.append(self._lookup(lookup, value))
        if len(parts) == 1:
            return parts[0]
        if q.connector == Q.AND:
            return " AND ".join(f"({p})" for p in parts) or "1"
        return " OR ".join(f"({p})" for p in parts) or "0"

    def _lookup(self, lookup: str, value: Any) -> str:
        name, _, operator = lookup.partition("__")
        column, kind = self._column(name)
        if operator == "isnull":
            return f"isNull({column})" if value else f"isNotNull({column})"
        if operator == "in":
            values = tuple(sorted(self._value(kind, v) for v in value))
            return f"{column} IN {self.where.value(values)}" if values else "0"
        if operator in ("", "exact"):
            if value is None:
                return f"isNull({column})"
            return f"{column} = {self.where.value(self._value(kind, value))}"
        if operator in _COMPARE:
            return f"{column} {_COMPARE[operator]} {self.where.value(self._value(kind, value))}"
        if operator == "startswith":
            return f"startsWith({column}, {self.where.value(str(value))})"
        if operator == "icontains":
            return f"positionCaseInsensitiveUTF8({column}, {self.where.value(str(value))}) > 0"
        raise ValueError(f"no ClickHouse form for the lookup {lookup!r}")

    def _column(self, name: str) -> tuple[str, str]:
        if name in ("pk", "id", "seq"):
            return "seq", "plain"
        kind = self.kinds.get(name)
        if kind is None:
            raise ValueError(f"{name!r} is not a column of this log")
        return (f"{name}_us", kind) if kind == "datetime" else (name, kind)

    @staticmethod
    def _value(kind: str, value: Any) -> Any:
        if kind == "datetime" and isinstance(value, datetime | str):
            return schema.micros(value)
        if kind == "bool":
            return int(bool(value))
        return value


def where(family: str, *conditions: Q) -> Where:
    """A WHERE clause for records of `family` that meet every condition."""
    found = Where()
    translator = Translator(family, found)
    for condition in conditions:
        found.add(translator.condition(condition))
    return found
