"""Every job beat starts exists and cannot pile up behind a stopped worker."""

from datetime import timedelta
from typing import Any

import pytest
from celery.schedules import crontab

from thinkwatch.celery import app

ENTRIES = sorted(app.conf.beat_schedule.items())


@pytest.fixture(scope="module")
def registered() -> set[str]:
    app.loader.import_default_modules()
    return set(app.tasks)


@pytest.mark.parametrize(("name", "entry"), ENTRIES, ids=[name for name, _ in ENTRIES])
def test_each_beat_entry_names_a_registered_task(
    registered: set[str], name: str, entry: dict[str, Any]
) -> None:
    assert entry["task"] in registered


@pytest.mark.parametrize(("name", "entry"), ENTRIES, ids=[name for name, _ in ENTRIES])
def test_each_beat_entry_expires(name: str, entry: dict[str, Any]) -> None:
    assert entry["options"]["expires"] > 0


def interval(schedule: crontab) -> timedelta:
    """The time between two consecutive runs, from the next one."""
    now = schedule.now()
    first = (now + schedule.remaining_estimate(now) + timedelta(seconds=1)).replace(
        second=0, microsecond=0
    )
    last, delta, _ = schedule.remaining_delta(first)
    return last + delta - first


@pytest.mark.parametrize(
    "name",
    [
        "purge-expired-logs",
        "purge-deleted-keys",
        "purge-deleted-providers",
        "warn-expiring-keys",
        "disable-inactive-keys",
    ],
)
def test_each_policy_job_expires_before_its_next_run(name: str) -> None:
    entry = app.conf.beat_schedule[name]

    assert isinstance(entry["schedule"], crontab)
    assert timedelta(seconds=entry["options"]["expires"]) < interval(entry["schedule"])
