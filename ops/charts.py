"""Server-rendered inline SVG line charts for the overview page (no JavaScript).

Every text that reaches the SVG (titles, series names such as category codes,
axis labels) is escaped: category codes and policy slugs are user input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
WIDTH = 560
HEIGHT = 220
LEFT = 44
RIGHT = 10
TOP = 30  # room for the title
BOTTOM = 26
LEGEND_COLUMN = 270


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None = no data (a gap)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (a readable axis maximum)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _format(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:g}%"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    y_max: float | None = None,
    label_every: int = 1,
    width: int = WIDTH,
) -> SafeString:
    """An ``<svg>`` line chart with a title, a y grid, sparse x labels and a legend below it."""
    points = len(x_labels)
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top_value = y_max if y_max is not None else nice_ceiling(peak)
    plot_w = width - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    columns = max(1, plot_w // LEGEND_COLUMN)

    def x_at(index: int) -> float:
        return LEFT + (plot_w * index / (points - 1) if points > 1 else plot_w / 2)

    def y_at(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top_value) / top_value)

    legend_rows = (len(series) + columns - 1) // columns
    total_h = HEIGHT + 6 + 16 * legend_rows
    parts = [
        f'<svg class="ops-chart" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {total_h}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="15" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    for step in range(5):
        value = top_value * step / 4
        y = y_at(value)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="#dde3ea"/>')
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" fill="#5f6b7a">'
            f"{escape(_format(value, unit))}</text>"
        )
    for index, label in enumerate(x_labels):
        if index % max(1, label_every) == 0:
            parts.append(
                f'<text x="{x_at(index):.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="middle" '
                f'fill="#5f6b7a">{escape(label)}</text>'
            )
    for number, line in enumerate(series):
        colour = COLOURS[number % len(COLOURS)]
        # Gaps (None) split the line into segments.
        segment: list[str] = []
        segments: list[list[str]] = []
        for index, value in enumerate(line.values):
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x_at(index):.1f},{y_at(value):.1f}")
        if segment:
            segments.append(segment)
        for points_text in segments:
            if len(points_text) == 1:
                x, y = points_text[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
            else:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(points_text)}"/>'
                )
        last = next((v for v in reversed(line.values) if v is not None), None)
        lx = LEFT + (number % columns) * LEGEND_COLUMN
        ly = HEIGHT + 10 + 16 * (number // columns)
        caption = line.name if last is None else f"{line.name} ({_format(round(last, 1), unit)} now)"
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14:.1f}" y="{ly + 1}" font-size="11">{escape(caption)}</text>')
    if not series or peak == 0:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
            f'fill="#5f6b7a">no data in this window</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text above is escaped
