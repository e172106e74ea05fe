"""The running totals behind ``/metrics``: runs by final status, skips by reason, fire
lateness and run duration histograms, last fire and last success, per job and schedule.

Each is written in the transaction that started or ended the run (``batch.runs``), so a
run counts once whatever Celery redelivers, and the totals are counters in Prometheus's
sense: they never go down, not even when ``cleanups.purge_runs`` deletes old runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal_column, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from batch.models import RunStat

RUNS, SKIPS = "runs", "skips"
LATENESS, DURATION = "lateness", "duration"
LAST_FIRE, LAST_SUCCESS = "last_fire", "last_success"
#: Upper bounds (seconds) of the fire lateness histogram's buckets: from the fire time to
#: the run's start on a worker.
LATENESS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Upper bounds (seconds) of the run duration histogram's buckets: start to end.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
BUCKETS = {LATENESS: LATENESS_BUCKETS, DURATION: DURATION_BUCKETS}
INF = "+Inf"
_MAXIMA = (LAST_FIRE, LAST_SUCCESS)


@dataclass(frozen=True, order=True)
class Key:
    """Whose total: a job, and its schedule ("" for a run of no schedule)."""

    job: str
    schedule: str = ""


def count(session: Session, key: Key, series: str, label: str, runs: int = 1) -> None:
    """``runs`` more runs (``RUNS`` by status) or skips (``SKIPS`` by reason)."""
    _add(session, [(key, series, label, float(runs))])


def observe(session: Session, key: Key, series: str, seconds: float) -> None:
    """One observation of the ``LATENESS`` or ``DURATION`` histogram."""
    _add(session, _observation(key, series, seconds))


def moment(session: Session, key: Key, series: str, at: datetime) -> None:
    """``LAST_FIRE`` or ``LAST_SUCCESS`` is ``at``, unless it already is later."""
    _add(session, [(key, series, "", at.timestamp())])


def ended(
    session: Session,
    key: Key,
    status: str,
    *,
    reason: str | None = None,
    duration: float | None = None,
    succeeded_at: datetime | None = None,
) -> None:
    """A run ended with ``status``: counted, with its skip ``reason``, its ``duration``
    observed, and ``succeeded_at`` as the last success; in one statement."""
    rows = [(key, RUNS, status, 1.0)]
    if reason is not None:
        rows.append((key, SKIPS, reason, 1.0))
    if duration is not None:
        rows += _observation(key, DURATION, duration)
    if succeeded_at is not None:
        rows.append((key, LAST_SUCCESS, "", succeeded_at.timestamp()))
    _add(session, rows)


def _observation(key: Key, series: str, seconds: float) -> list[tuple[Key, str, str, float]]:
    seconds = max(seconds, 0.0)
    bucket = next((str(b) for b in BUCKETS[series] if seconds <= b), INF)
    return [(key, series, bucket, 1.0), (key, f"{series}_sum", "", seconds)]


def _add(session: Session, rows: list[tuple[Key, str, str, float]]) -> None:
    # Rows in key order: two transactions lock the rows in the same order.
    params = [
        {"job": k.job, "schedule_name": k.schedule, "series": s, "label": lb, "value": v}
        for k, s, lb, v in sorted(rows)
    ]
    connection = session.connection()
    connection.execute(_upsert(connection.dialect.name), params)


@functools.cache
def _upsert(dialect: str) -> Any:
    """The statement that adds to a total (raises a moment), built once per dialect: compiled
    once, it costs a run microseconds, not the milliseconds of building it each time."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(RunStat)
    new, old = statement.excluded.value, RunStat.value
    later = case((new > old, new), else_=old)
    # Literals, not an IN list: a list's bound parameters would bar executemany.
    is_moment = or_(*(RunStat.series == literal_column(f"'{series}'") for series in _MAXIMA))
    return statement.on_conflict_do_update(
        index_elements=["job", "schedule_name", "series", "label"],
        set_={"value": case((is_moment, later), else_=old + new)},
    )


@dataclass
class Totals:
    """Every total of one job and schedule, as read back."""

    counts: dict[tuple[str, str], float] = field(default_factory=dict)
    #: series -> bucket label -> observations in that bucket alone (not cumulative).
    buckets: dict[str, dict[str, float]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    moments: dict[str, float] = field(default_factory=dict)

    def cumulative(self, series: str) -> list[tuple[str, float]]:
        """The histogram's buckets as Prometheus wants them: (le, observations <= le)."""
        own = self.buckets.get(series, {})
        total, out = 0.0, []
        for bound in [*map(str, BUCKETS[series]), INF]:
            total += own.get(bound, 0.0)
            out.append((bound, total))
        return out


def read(session: Session) -> dict[Key, Totals]:
    """All totals, by job and schedule."""
    totals: dict[Key, Totals] = {}
    columns = (RunStat.job, RunStat.schedule_name, RunStat.series, RunStat.label, RunStat.value)
    for job, schedule, series, label, value in session.execute(select(*columns)):
        _put(totals.setdefault(Key(job, schedule), Totals()), series, label, value)
    return totals


def histograms_by_job(session: Session) -> dict[str, Totals]:
    """The histograms summed over each job's schedules, deleted ones too (a total by job
    must not go down when a schedule goes), in SQL."""
    histogram_series = [*BUCKETS, *(f"{series}_sum" for series in BUCKETS)]
    rows = session.execute(
        select(RunStat.job, RunStat.series, RunStat.label, func.sum(RunStat.value))
        .where(RunStat.series.in_(histogram_series))
        .group_by(RunStat.job, RunStat.series, RunStat.label)
    )
    totals: dict[str, Totals] = {}
    for job, series, label, value in rows:
        _put(totals.setdefault(job, Totals()), series, label, value)
    return totals


def _put(of: Totals, series: str, label: str, value: float) -> None:
    if series in (RUNS, SKIPS):
        of.counts[(series, label)] = value
    elif series in BUCKETS:
        of.buckets.setdefault(series, {})[label] = value
    elif series in _MAXIMA:
        of.moments[series] = value
    else:
        of.sums[series.removesuffix("_sum")] = value
