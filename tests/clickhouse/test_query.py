"""Django conditions as ClickHouse SQL: values only ever as parameters, columns only the
log's own, and anything without a faithful translation refused."""

from datetime import UTC, datetime

import pytest
from django.db.models import Q

from audit.clickhouse import query, schema

HOSTILE = "x') OR 1=1; DROP TABLE gateway_log; --"


def test_it_puts_values_in_parameters_never_in_the_sql() -> None:
    where = query.where("gateway", Q(model=HOSTILE) | Q(request_id__in=[HOSTILE, "b"]))

    assert HOSTILE not in where.sql()
    assert where.sql() == "((model = %(p0)s) OR (request_id IN %(p1)s))"
    assert where.params == {"p0": HOSTILE, "p1": ("b", HOSTILE)}


def test_it_compares_a_datetime_to_the_microsecond() -> None:
    moment = datetime(2026, 11, 1, 12, 0, 0, 654321, tzinfo=UTC)

    where = query.where("mcp", Q(created_at__lt=moment))

    assert where.sql() == "(created_at_us < %(p0)s)"
    assert where.params == {"p0": schema.micros(moment)}


def test_it_reads_an_empty_list_as_nothing_and_no_condition_as_everything() -> None:
    assert query.where("gateway", Q(pk__in=[])).sql() == "(0)"
    assert query.where("gateway", Q()).sql() == "(1)"


@pytest.mark.parametrize(
    "condition",
    [
        Q(**{"model; DROP TABLE gateway_log": 1}),
        Q(password="x"),
        Q(model__regex=".*"),
        ~Q(user_id=1),
    ],
)
def test_it_refuses_what_it_cannot_translate_faithfully(condition: Q) -> None:
    with pytest.raises(ValueError, match=r"no ClickHouse form|not a column"):
        query.where("gateway", condition)
