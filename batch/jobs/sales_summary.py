"""``reports.sales_summary``: orders, units and revenue per region over a time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import AwareDatetime, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batch.constants import QUEUE_REPORTS
from batch.jobs import Job, Params, Partial, Spec, split_range
from batch.jobs.views import Measure, ResultView
from batch.models import Order

#: A window's default length: the hour before ``until``, or after ``since``.
DEFAULT_WINDOW = timedelta(hours=1)
#: The range a window must lie in. Python's datetimes end at the years 1 and 9999: a time a
#: day from either end converts to UTC (or any offset) and stores without overflowing.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def _within(value: datetime | None, low: datetime, high: datetime) -> datetime | None:
    # Comparing aware datetimes never overflows, whatever their offsets.
    if value is not None and not low <= value <= high:
        raise PydanticCustomError(
            "datetime_range",
            "must be between {low} and {high}",
            {"low": low.isoformat(), "high": high.isoformat()},
        )
    return value


class SalesSummaryParams(Params):
    """The window ``[since, until)``; both default to the last full hour before now."""

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    # Room for the default hour on the other side, so the resolved window is in range too
    # (the worker validates it again).
    @field_validator("since")
    @classmethod
    def _since_in_range(cls, since: datetime | None) -> datetime | None:
        return _within(since, EARLIEST, LATEST - DEFAULT_WINDOW)

    @field_validator("until")
    @classmethod
    def _until_in_range(cls, until: datetime | None) -> datetime | None:
        return _within(until, EARLIEST + DEFAULT_WINDOW, LATEST)

    @model_validator(mode="after")
    def _resolve_window(self, info: ValidationInfo) -> Self:
        now: datetime = (info.context or {})["now"]
        hour = now.replace(minute=0, second=0, microsecond=0)
        since = self.since or (self.until or hour) - DEFAULT_WINDOW
        until = self.until or since + DEFAULT_WINDOW
        if since >= until:
            raise ValueError("since must be before until")
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        return self


def average(total: int, count: int) -> int:
    """``total / count`` rounded half up, in integers (exact at any size)."""
    return (2 * total + count) // (2 * count) if count else 0


class SalesSummary(Job):
    name = "reports.sales_summary"
    description = "Orders, units, revenue and average order value per region."
    queue = QUEUE_REPORTS
    params_model = SalesSummaryParams
    result_view = ResultView(
        rows="regions",
        row_label="Region",
        measures=(
            Measure("orders", "Orders", "count"),
            Measure("revenue_cents", "Revenue", "cents"),
            Measure("units", "Units", "count", headline=False),
            Measure("avg_order_value_cents", "Avg order", "cents", headline=False, total=False),
        ),
    )
    min_chunk_items = 5_000

    def _window(self, params: SalesSummaryParams) -> list[Any]:
        return [Order.created_at >= params.since, Order.created_at < params.until]

    def plan(self, params: SalesSummaryParams, *, chunks: int, db: Session) -> list[Spec]:
        first, last = db.execute(
            select(func.min(Order.id), func.max(Order.id)).where(*self._window(params))
        ).one()
        if first is None:
            return []
        ranges = split_range(first, last, chunks, min_size=self.min_chunk_items)
        return [{"first_id": lo, "last_id": hi} for lo, hi in ranges]

    def process(self, spec: Spec, params: SalesSummaryParams, *, db: Session) -> Partial:
        rows = db.execute(
            select(
                Order.region,
                func.count(),
                func.sum(Order.quantity),
                func.sum(Order.amount_cents),
            )
            .where(Order.id.between(spec["first_id"], spec["last_id"]), *self._window(params))
            .group_by(Order.region)
        )
        return {
            region: [orders, int(units), int(revenue)] for region, orders, units, revenue in rows
        }

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        totals: dict[str, list[int]] = {}
        for partial in partials:
            for region, counts in partial.items():
                into = totals.setdefault(region, [0, 0, 0])
                for position, value in enumerate(counts):
                    into[position] += value
        regions = {
            region: {
                "orders": orders,
                "units": units,
                "revenue_cents": revenue,
                "avg_order_value_cents": average(revenue, orders),
            }
            for region, (orders, units, revenue) in sorted(totals.items())
        }
        return {"regions": regions, "orders": sum(r["orders"] for r in regions.values())}
