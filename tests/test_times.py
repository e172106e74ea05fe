"""One way to show a moment, everywhere (batch.times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from batch.times import show_fire, show_utc

# Monday 7 December 2026, 05:05 UTC: 06:05 in Berlin (CET, UTC+1).
MOMENT = datetime(2026, 12, 7, 5, 5, tzinfo=UTC)


def test_a_moment_is_shown_in_utc_naming_utc_whatever_zone_it_comes_in() -> None:
    assert show_utc(MOMENT) == "2026-12-07 05:05:00 UTC"
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert show_utc(plus_two) == "2026-12-07 05:05:00 UTC"
    # A naive moment was read from SQL or Redis, which store UTC.
    assert show_utc(MOMENT.replace(tzinfo=None)) == "2026-12-07 05:05:00 UTC"
    assert show_utc(None) == "-"


def test_a_fire_time_is_shown_in_its_zone_with_the_weekday_and_in_utc_when_that_differs() -> None:
    assert show_fire(MOMENT, "Europe/Berlin") == "Mon 2026-12-07 06:05:00 CET (05:05:00 UTC)"
    assert show_fire(MOMENT, "UTC") == "Mon 2026-12-07 05:05:00 UTC"
    assert show_fire(MOMENT, UTC) == "Mon 2026-12-07 05:05:00 UTC"
    # London is UTC+0 in winter: the UTC part would repeat the same clock time.
    assert show_fire(MOMENT, "Europe/London") == "Mon 2026-12-07 05:05:00 GMT"
    # Crossing midnight changes the weekday shown in the zone, not the UTC part.
    late = datetime(2026, 12, 7, 23, 30, tzinfo=UTC)
    assert show_fire(late, "Asia/Tokyo") == "Tue 2026-12-08 08:30:00 JST (23:30:00 UTC)"


def test_a_zone_that_no_longer_exists_falls_back_to_utc() -> None:
    assert show_fire(MOMENT, "Nowhere/Atlantis") == "Mon 2026-12-07 05:05:00 UTC"
