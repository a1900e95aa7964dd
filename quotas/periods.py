"""Calendar periods of budgets, in UTC: day, ISO week, month."""

from datetime import UTC, datetime, timedelta


def start_of(period: str, moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def end_of(period: str, moment: datetime) -> datetime:
    start = start_of(period, moment)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def key_of(period: str, moment: datetime) -> str:
    start = start_of(period, moment)
    if period == "day":
        return start.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")
