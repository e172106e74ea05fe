"""When a schedule fires: cron lines in a timezone, and fixed intervals.

Both are Celery schedules (``is_due``/``remaining_estimate``) with two exact helpers the
beat relies on: ``next_after(t)``, the first fire time after ``t``, and ``latest_due(last,
now)``, the newest fire time that is due (missed fires coalesce into one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import BaseSchedule, schedstate
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from batch.db import utcnow
from batch.exceptions import InvalidSchedule

MIN_INTERVAL_SECONDS = 1


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or InvalidSchedule."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule({"timezone": f"unknown timezone {name!r}"}) from None


class FireTimes(BaseSchedule):
    """Shared ``is_due`` and ``remaining_estimate`` for schedules with exact fire times."""

    def next_after(self, moment: datetime) -> datetime:
        raise NotImplementedError

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        raise NotImplementedError

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.next_after(last_run_at) - utcnow()

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = utcnow()
        due = self.next_after(last_run_at)
        if due <= now:
            return schedstate(True, (self.next_after(now) - now).total_seconds())
        return schedstate(False, (due - now).total_seconds())


class CronSchedule(FireTimes):
    """A five-field cron line evaluated in an IANA timezone.

    Across clock changes it behaves like cron: a time skipped in spring fires at the first
    valid minute after it, and a fixed-hour time in the repeated autumn hour fires once
    (lines whose hour field is a wildcard, like ``*/30 * * * *``, fire in both passes).
    """

    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        super().__init__()
        self.cron = " ".join(cron.split())
        self.timezone = timezone
        self.zone = parse_timezone(timezone)
        if len(self.cron.split()) != 5:
            raise InvalidSchedule({"cron": f"expected 5 fields, got {cron!r}"})
        self._fixed_hours = not self.cron.split()[1].startswith("*")
        try:
            croniter(self.cron, datetime.now(self.zone)).get_next(datetime)
        except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
            raise InvalidSchedule({"cron": f"bad cron line {cron!r}: {exc}"}) from None

    def next_after(self, moment: datetime) -> datetime:
        times = croniter(self.cron, moment.astimezone(self.zone))
        while True:
            local = times.get_next(datetime)
            if not (local.fold and self._fixed_hours):
                return local.astimezone(UTC)

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        previous = croniter(self.cron, now.astimezone(self.zone)).get_prev(datetime)
        fire = previous.astimezone(UTC)
        if last is not None:
            fire = max(fire, self.next_after(last))
        while (following := self.next_after(fire)) <= now:
            fire = following
        return fire

    def __repr__(self) -> str:
        return f"<cron {self.cron} ({self.timezone})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and (other.cron, other.timezone) == (
            self.cron,
            self.timezone,
        )

    __hash__ = None  # type: ignore[assignment]


class IntervalSchedule(FireTimes):
    """Every N seconds, counted from the previous fire time."""

    def __init__(self, seconds: int) -> None:
        super().__init__()
        if seconds < MIN_INTERVAL_SECONDS:
            raise InvalidSchedule({"interval_seconds": "must be at least 1 second"})
        self.seconds = seconds
        self.every = timedelta(seconds=seconds)

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.every

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        if last is None:
            return now
        missed = max(1, int((now - last) / self.every))
        return last + missed * self.every

    def __repr__(self) -> str:
        return f"<every {self.seconds}s>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSchedule) and other.seconds == self.seconds

    __hash__ = None  # type: ignore[assignment]


def make_schedule(
    *, cron: str | None, timezone: str, interval_seconds: int | None
) -> CronSchedule | IntervalSchedule:
    """The schedule for exactly one of a cron line or an interval."""
    if bool(cron) == (interval_seconds is not None):
        raise InvalidSchedule({"cron": "give exactly one of a cron line or an interval"})
    if cron:
        return CronSchedule(cron, timezone)
    assert interval_seconds is not None
    return IntervalSchedule(interval_seconds)
