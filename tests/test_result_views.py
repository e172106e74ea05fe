"""Result views: what a job declares about its results, read from exact results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batch.jobs.views import Measure, ResultView, inferred_view
from batch.queries import ResultItem
from batch.web.results import format_measure, measure_charts, runs_table, summary

SHOPS = ResultView(
    rows="shops",
    row_label="Shop",
    measures=(
        Measure("visits", "Visits", "count"),
        Measure("takings", "Takings", "cents"),
        Measure("rate", "Rate", total=False, headline=False),
    ),
)


def item(run_id: str, hour: int, result: object) -> ResultItem:
    at = datetime(2026, 11, 30, hour, tzinfo=UTC)
    return ResultItem(id=run_id, created_at=at, finished_at=at, params={}, result=result)


def test_rows_and_totals_follow_the_declaration() -> None:
    result = {
        "shops": {"b": {"visits": 3, "takings": 250, "rate": 0.5}, "a": {"visits": 2}},
        "other": 1,
    }
    rows = SHOPS.rows_of(result)
    assert rows == {
        "a": {"visits": 2, "takings": None, "rate": None},
        "b": {"visits": 3, "takings": 250, "rate": 0.5},
    }
    assert SHOPS.totals(rows) == {"visits": 5, "takings": 250, "rate": None}
    assert SHOPS.rows_of({"shops": "not rows"}) == {} == SHOPS.rows_of(None)
    assert SHOPS.rows_of({"shops": {"a": 3, "b": {"visits": True}}}) == {
        "b": {"visits": None, "takings": None, "rate": None}
    }
    assert summary(SHOPS, result) == "5 visits, 2.50 takings in 2 shops"


def test_a_view_is_inferred_from_top_level_numbers() -> None:
    view = inferred_view([{"sum": 3, "note": "x", "ok": True}, {"count": 1.5}, None])
    assert [(m.key, m.unit) for m in view.measures] == [("count", ""), ("sum", "")]
    assert view.rows_of({"sum": 3}) == {"": {"count": None, "sum": 3}}
    assert summary(view, {"sum": 3, "count": 1.5}) == "count 1.5, sum 3"


def test_a_unit_must_be_known() -> None:
    with pytest.raises(ValueError, match="unit 'euros' is not one of"):
        Measure("x", "X", "euros")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (None, "count", "-"),
        (1234567, "count", "1,234,567"),
        (123456, "cents", "1,234.56"),
        (-5, "cents", "-0.05"),
        (4.25, "seconds", "4.2 s"),
        (2.5, "", "2.5"),
        (1234, "", "1,234"),
    ],
)
def test_values_read_as_their_unit(value: float | None, unit: str, shown: str) -> None:
    assert format_measure(value, unit) == shown


def test_the_table_and_charts_come_from_the_view_alone() -> None:
    items = [
        item("r2", 2, {"shops": {"a": {"visits": 4, "takings": 100}}}),
        item("r1", 1, {"shops": {"a": {"visits": 1}, "b": {"visits": 2, "takings": 300}}}),
    ]
    table = runs_table(SHOPS, items)
    assert table.row_names == ["a", "b"]
    assert [m.key for m in table.measures] == ["visits", "takings"]  # the headlines
    newest = table.runs[0]
    assert newest.run_id == "r2"
    assert [(name, m.key, text) for name, m, text in newest.cells] == [
        ("a", "visits", "4"),
        ("a", "takings", "1.00"),
        ("b", "visits", "-"),
        ("b", "takings", "-"),
    ]
    assert [(m.key, text) for m, text in table.runs[1].totals] == [
        ("visits", "3"),
        ("takings", "3.00"),
    ]
    visits, takings = measure_charts(SHOPS, items)
    assert "<title>Visits per shop</title>" in visits
    assert "a, 2026-11-30 01:00: 1</title>" in visits and "a, 2026-11-30 02:00: 4</title>" in visits
    assert "<title>Takings per shop (currency units)</title>" in takings
    assert "b, 2026-11-30 01:00: 3</title>" in takings  # 300 cents
