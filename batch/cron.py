"""When a schedule fires: cron lines in a timezone, and fixed intervals.

Both are Celery schedules (``is_due``/``remaining_estimate``) with two exact helpers the
beat relies on: ``next_after(t)``, the first fire time after ``t``, and ``latest_due(last,
now)``, the newest fire time that is due (missed fires coalesce into one). For people there
are ``describe()``, the schedule in words, and ``upcoming(count, after)``, the next fire times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import BaseSchedule, schedstate
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from batch.db import utcnow
from batch.exceptions import InvalidSchedule

MIN_INTERVAL_SECONDS = 1
#: The largest value the INTEGER column holds (about 68 years); far larger ones overflow dates.
MAX_INTERVAL_SECONDS = 2**31 - 1
#: The ``schedules.timezone`` column's size; the longest IANA name has about 30 characters.
MAX_TIMEZONE_LENGTH = 64
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or InvalidSchedule."""
    if len(name) > MAX_TIMEZONE_LENGTH:
        message = f"unknown timezone {name[:32]!r}...: a name has at most {MAX_TIMEZONE_LENGTH}"
        raise InvalidSchedule({"timezone": f"{message} characters"})
    try:
        return ZoneInfo(name)
    # ZoneInfo reads the name as a path under the tzdata folders: a folder ("Europe") is
    # an IsADirectoryError, a name too long for the file system another OSError.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule({"timezone": f"unknown timezone {name!r}"}) from None


class FireTimes(BaseSchedule):
    """Shared ``is_due`` and ``remaining_estimate`` for schedules with exact fire times."""

    def next_after(self, moment: datetime) -> datetime:
        raise NotImplementedError

    def previous_before(self, moment: datetime) -> datetime:
        """The fire time before ``moment`` (an interval's: one interval before it)."""
        raise NotImplementedError

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        raise NotImplementedError

    def describe(self) -> str:
        """The schedule in words, for people."""
        raise NotImplementedError

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """The next ``count`` fire times after ``after`` (aware), in UTC."""
        times, moment = [], after
        for _ in range(count):
            moment = self.next_after(moment)
            times.append(moment.astimezone(UTC))
        return times

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
        if any(part[:1] in "Rr" for field in self.cron.split() for part in field.split(",")):
            # croniter draws an R field at random each time it reads the line: the beat
            # would see new fire times on every tick.
            message = "R (a random value) is not supported: give the value itself"
            raise InvalidSchedule({"cron": f"bad cron line {cron!r}: {message}"})
        self._fixed_hours = not self.cron.split()[1].startswith("*")
        if error := _cron_error(self.cron, timezone):
            raise InvalidSchedule({"cron": f"bad cron line {cron!r}: {error}"})

    def next_after(self, moment: datetime) -> datetime:
        return _cron_next(self.cron, self.timezone, self._fixed_hours, moment)

    def previous_before(self, moment: datetime) -> datetime:
        return _cron_previous(self.cron, self.timezone, moment)

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        fire = _cron_previous(self.cron, self.timezone, now)
        if last is not None:
            fire = max(fire, self.next_after(last))
        while (following := self.next_after(fire)) <= now:
            fire = following
        return fire

    def describe(self) -> str:
        """In words, e.g. ``every hour at :05 (Europe/Berlin)``; else ``cron <line> (<zone>)``."""
        phrase = _cron_phrase(*self.cron.split())
        return f"{phrase or 'cron ' + self.cron} ({self.timezone})"

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
        if seconds > MAX_INTERVAL_SECONDS:
            message = f"must be at most {MAX_INTERVAL_SECONDS} seconds (about 68 years)"
            raise InvalidSchedule({"interval_seconds": message})
        self.seconds = seconds
        self.every = timedelta(seconds=seconds)

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.every

    def previous_before(self, moment: datetime) -> datetime:
        return moment - self.every

    def latest_due(self, last: datetime | None, now: datetime) -> datetime:
        if last is None:
            return now
        missed = max(1, int((now - last) / self.every))
        return last + missed * self.every

    def describe(self) -> str:
        """In words, e.g. ``every 15 minutes`` or ``every 2 hours``."""
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if self.seconds % size == 0:
                return _every(self.seconds // size, unit)
        raise AssertionError("unreachable: every whole number of seconds has a unit")

    def __repr__(self) -> str:
        return f"<every {self.seconds}s>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSchedule) and other.seconds == self.seconds

    __hash__ = None  # type: ignore[assignment]


@lru_cache(maxsize=4096)
def _cron_error(cron: str, timezone: str) -> str | None:
    """Why croniter refuses the line, or None; beat decodes many schedules sharing a line."""
    try:
        croniter(cron, datetime.now(ZoneInfo(timezone))).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        return str(exc)
    return None


# Beat asks the same questions of many schedules at once (everyone writes ``0 * * * *``, and a
# burst of them shares its last and next fire times): croniter answers each once.
@lru_cache(maxsize=4096)
def _cron_next(cron: str, timezone: str, fixed_hours: bool, moment: datetime) -> datetime:
    times = croniter(cron, moment.astimezone(ZoneInfo(timezone)))
    while True:
        local = times.get_next(datetime)
        if not (local.fold and fixed_hours):
            return local.astimezone(UTC)


@lru_cache(maxsize=4096)
def _cron_previous(cron: str, timezone: str, now: datetime) -> datetime:
    return croniter(cron, now.astimezone(ZoneInfo(timezone))).get_prev(datetime).astimezone(UTC)


def _every(count: int, unit: str) -> str:
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def _step(field: str, period: int) -> int | None:
    """N for a ``*/N`` field whose fires are evenly spaced over ``period``, else None."""
    if not field.startswith("*/") or not field[2:].isdigit():
        return None
    step = int(field[2:])
    return step if step and period % step == 0 else None


def _cron_phrase(minute: str, hour: str, day: str, month: str, weekday: str) -> str | None:
    """A cron line's usual shapes in words; None when no simple phrase fits."""
    at = f"{int(hour):02d}:{int(minute):02d}" if minute.isdigit() and hour.isdigit() else None
    if month != "*":
        return None
    if day != "*":
        monthly = at and day.isdigit() and weekday == "*"
        return f"every month on day {int(day)} at {at}" if monthly else None
    if weekday != "*":
        named = weekday.isdigit() and int(weekday) <= 7
        return f"every {WEEKDAYS[int(weekday) % 7]} at {at}" if at and named else None
    if at:
        return f"every day at {at}"
    if hour == "*" and minute == "*":
        return "every minute"
    if hour == "*" and minute.isdigit():
        return f"every hour at :{int(minute):02d}"
    if hour == "*" and (minutes := _step(minute, 60)):
        return _every(minutes, "minute")
    if minute.isdigit() and (hours := _step(hour, 24)):
        return f"{_every(hours, 'hour')} at :{int(minute):02d}"
    return None


def make_schedule(
    *, cron: str | None, timezone: str, interval_seconds: int | None
) -> CronSchedule | IntervalSchedule:
    """The schedule for exactly one of a cron line or an interval."""
    if bool(cron) == (interval_seconds is not None):
        raise InvalidSchedule({"cron": "give exactly one of a cron line or an interval"})
    if cron:
        return CronSchedule(cron, timezone)
    assert interval_seconds is not None
    parse_timezone(timezone)  # shown in that zone, so it must exist
    return IntervalSchedule(interval_seconds)
