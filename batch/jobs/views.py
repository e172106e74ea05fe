"""How a job's results are shown: which key of the result holds rows, which values are
measures, and their units. A job sets ``result_view``; the admin draws every table and chart
of its results from it, and a job that declares none gets the numbers at the top of its
results (no template knows any job).

Example (``reports.sales_summary``): ``{"regions": {"north": {"orders": 12, ...}, ...}}`` is
``ResultView(rows="regions", row_label="Region", measures=(Measure("orders", "Orders",
"count"), ...))``: one row per region, one column per measure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: How a measure's values read: a plain number, a count (whole, with thousands separators),
#: cents (shown as currency units, 1,234.56), or seconds (shown as a duration).
Unit = Literal["", "count", "cents", "seconds"]
UNITS: tuple[Unit, ...] = ("", "count", "cents", "seconds")


@dataclass(frozen=True)
class Measure:
    """One number of a result (or of each of its rows)."""

    key: str
    label: str
    unit: Unit = ""
    #: Shown over runs (the results table and a chart per measure); every measure shows on
    #: a run's own page.
    headline: bool = True
    #: Whether a total over the rows means something (a sum of counts does, an average not).
    total: bool = True

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"measure {self.key!r}: unit {self.unit!r} is not one of {UNITS}")


@dataclass(frozen=True)
class ResultView:
    """The measures of a job's result, at its top level or per row of ``rows``."""

    measures: tuple[Measure, ...]
    #: The key of the result that maps each row's name to its measures; None: one row.
    rows: str | None = None
    row_label: str = "Row"

    @property
    def headlines(self) -> tuple[Measure, ...]:
        """The measures shown over runs."""
        return tuple(measure for measure in self.measures if measure.headline)

    def rows_of(self, result: Mapping[str, Any] | None) -> dict[str, dict[str, float | None]]:
        """Each row's measures in ``result`` by row name (sorted); one row named "" when the
        view has no rows. A value that is not a number is None; a malformed result has no
        rows."""
        if not isinstance(result, Mapping):
            return {}
        if self.rows is None:
            return {"": self._numbers(result)}
        rows = result.get(self.rows)
        if not isinstance(rows, Mapping):
            return {}
        return {
            str(name): self._numbers(values)
            for name, values in sorted(rows.items(), key=lambda item: str(item[0]))
            if isinstance(values, Mapping)
        }

    def totals(self, rows: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
        """The sum over ``rows`` of each measure that has a total (None for the others)."""
        return {
            measure.key: sum(row.get(measure.key) or 0 for row in rows.values())
            if measure.total
            else None
            for measure in self.measures
        }

    def _numbers(self, values: Mapping[str, Any]) -> dict[str, float | None]:
        return {measure.key: number(values.get(measure.key)) for measure in self.measures}


def number(value: Any) -> float | None:
    """``value`` if it is a number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def inferred_view(results: Iterable[Mapping[str, Any] | None]) -> ResultView:
    """For a job that declares no view: its results' top-level numbers, by key."""
    keys = sorted(
        {
            key
            for result in results
            if isinstance(result, Mapping)
            for key, value in result.items()
            if number(value) is not None
        }
    )
    return ResultView(measures=tuple(Measure(key, key) for key in keys))


def view_or_inferred(declared: ResultView | None, results: Iterable[Any]) -> ResultView:
    """A job's declared view, else the one inferred from these results."""
    return declared or inferred_view(results)
