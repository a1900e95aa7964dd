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


_current: dict[str, tuple[float, float, str]] = {}  # period -> (start, end, key) as timestamps


def current(period: str, now: float) -> tuple[str, float]:
    """The key and end (timestamp) of the period `now` falls in; cached until it changes,
    since the hot path asks for it on every request."""
    found = _current.get(period)
    if found is None or not found[0] <= now < found[1]:
        moment = datetime.fromtimestamp(now, UTC)
        found = (
            start_of(period, moment).timestamp(),
            end_of(period, moment).timestamp(),
            key_of(period, moment),
        )
        _current[period] = found
    return found[2], found[1]
