"""How the admin shows a moment: one policy for every page (docs/architecture.md, "Times").

Every time is in UTC and says so: ``2026-12-01 06:00:00 UTC``. A schedule's fire times are
shown in the schedule's own zone, with the weekday, and in UTC after them when the zone is
another: ``Mon 2026-12-07 06:05:00 CET (05:05:00 UTC)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
FIRE_FORMAT = "%a %Y-%m-%d %H:%M:%S %Z"


def show_utc(moment: datetime | None) -> str:
    """A moment in UTC, to the second, naming UTC; "-" for None."""
    if moment is None:
        return "-"
    return _aware(moment).astimezone(UTC).strftime(UTC_FORMAT)


def show_fire(moment: datetime, zone: tzinfo | str) -> str:
    """A fire time in its schedule's zone with the weekday, and in UTC when that differs."""
    local = _aware(moment).astimezone(_zone(zone))
    shown = local.strftime(FIRE_FORMAT)
    if local.utcoffset() == timedelta(0):
        return shown
    return f"{shown} ({local.astimezone(UTC):%H:%M:%S} UTC)"


def _aware(moment: datetime) -> datetime:
    """A naive moment is one read from SQL or Redis, which store UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _zone(zone: tzinfo | str) -> tzinfo:
    if not isinstance(zone, str):
        return zone
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
