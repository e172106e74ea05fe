"""Server-rendered SVG line charts: no library, no script, no network at run time."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = (
    "#2f5bd3",
    "#c23b32",
    "#1f8a4c",
    "#b7791f",
    "#7b3fbf",
    "#138a8a",
    "#d0588f",
    "#5d6678",
)
WIDTH = 560
HEIGHT = 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 34, 40
LEGEND_ROW = 18
MAX_X_LABELS = 6
#: The width of a character of an x label (font size 11) and the least space between labels.
X_LABEL_CHAR, X_LABEL_GAP = 6.5, 12


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (about ``count`` steps)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    steps = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def compact_number(value: float) -> str:
    """1234 -> "1.2k", 2500000 -> "2.5M", 12 -> "12", 0.5 -> "0.5"."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


Point = tuple[float, float, float, str]  # x, y, value, escaped x label


def _segments(
    values: Sequence[float | None],
    xs: Sequence[float],
    labels: Sequence[str],
    y: Callable[[float], float],
) -> list[list[Point]]:
    # Consecutive known values form one segment; a missing value breaks the line.
    segments: list[list[Point]] = [[]]
    for x, label, value in zip(xs, labels, values, strict=True):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((x, y(value), value, label))
    return [segment for segment in segments if segment]


def line_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """An inline <svg>: one line per series over the x ``labels``; None leaves a gap."""
    count = len(labels)
    for name, values in series.items():
        if len(values) != count:
            raise ValueError(f"series {name!r} has {len(values)} values for {count} labels")
    known = [v for values in series.values() for v in values if v is not None]
    ticks = nice_ticks(max(known, default=0.0))
    legend_rows = _legend_rows(list(series), width)
    plot_top = MARGIN_TOP + LEGEND_ROW * len(legend_rows)
    plot_bottom = height - MARGIN_BOTTOM
    plot_left, plot_right = MARGIN_LEFT, width - MARGIN_RIGHT

    def y(value: float) -> float:
        return plot_bottom - (plot_bottom - plot_top) * value / ticks[-1]

    if count == 1:
        xs = [(plot_left + plot_right) / 2]
    else:
        xs = [plot_left + (plot_right - plot_left) * i / max(count - 1, 1) for i in range(count)]

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="line-chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{plot_left}" y="18" font-size="13" font-weight="600" fill="#1d2330">'
        f"{escape(title)}</text>",
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{plot_left}" y1="{ty:.1f}" x2="{plot_right}" y2="{ty:.1f}" '
            f'stroke="#dde1e8" stroke-width="1"/>'
            f'<text x="{plot_left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#5d6678">'
            f"{escape(compact_number(tick))}</text>"
        )
    escaped = [escape(label) for label in labels]  # once: every point's tooltip reuses them
    every = _label_step(labels, plot_right - plot_left)
    for i, (x, label) in enumerate(zip(xs, escaped, strict=True)):
        if i % every == 0:
            # The first and last labels end at the plot's edges instead of overflowing them.
            anchor = "start" if i == 0 and count > 1 else "end" if i == count - 1 else "middle"
            parts.append(
                f'<text x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="{anchor}" '
                f'fill="#5d6678">{label}</text>'
            )
    for row_index, row in enumerate(legend_rows):
        legend_y = MARGIN_TOP + LEGEND_ROW * row_index
        for name, legend_x, color in row:
            parts.append(
                f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" '
                f'fill="{color}"/><text x="{legend_x + 14}" y="{legend_y}" fill="#1d2330">'
                f"{escape(name)}</text>"
            )
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        escaped_name = escape(name)
        parts.append(f'<g class="series" data-series="{escaped_name}">')
        for segment in _segments(values, xs, escaped, y):
            points = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in segment)
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
            for px, py, value, label in segment:
                parts.append(
                    f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">'
                    f"<title>{escaped_name}, {label}: {value:,.10g}</title>"
                    "</circle>"
                )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _label_step(labels: Sequence[str], plot_width: float) -> int:
    """Label every n-th point: at most MAX_X_LABELS, and no two labels overlapping."""
    longest = max((len(label) for label in labels), default=0)
    fit = max(1, int(plot_width // (longest * X_LABEL_CHAR + X_LABEL_GAP)))
    return max(1, math.ceil(len(labels) / min(MAX_X_LABELS, fit)))


def _legend_rows(names: list[str], width: int) -> list[list[tuple[str, float, str]]]:
    rows: list[list[tuple[str, float, str]]] = [[]]
    x = float(MARGIN_LEFT)
    for index, name in enumerate(names):
        item_width = 14 + 7 * len(name) + 16
        if rows[-1] and x + item_width > width - MARGIN_RIGHT:
            rows.append([])
            x = float(MARGIN_LEFT)
        rows[-1].append((name, x, PALETTE[index % len(PALETTE)]))
        x += item_width
    return rows if rows[-1] else []
