"""Inline SVG line charts for training curves (no JavaScript, nothing fetched)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 34, 26

Series = tuple[str, Sequence[tuple[float, float]]]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def axis_ranges(xs: Sequence[float], ys: Sequence[float], x_range: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the plot. Steps start at 1 (or the first step shown) and reach the last step
    (or ``x_range``); one step is drawn in the middle of a one-step axis. Values that are never negative
    get an axis that never goes below 0; a flat series gets room above (and at 0) instead of a made-up
    negative range."""
    x0, x1 = min(xs), max(xs)
    if x_range is not None:
        x0, x1 = min(x0, x_range[0]), max(x1, x_range[1])
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        if y0 > 0:
            y0, y1 = 0.0, 2 * y1
        elif y0 == 0:
            y1 = 1.0
        else:
            y0, y1 = 2 * y0, 0.0
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = (max(0.0, y0 - pad) if y0 >= 0 else y0 - pad), y1 + pad
    return x0, x1, y0, y1


def line_chart(title: str, series: Sequence[Series], css_class: str = "train-chart",
               x_range: tuple[float, float] | None = None) -> SafeString:
    """An ``<svg>`` with one polyline per series of (step, value) points; empty series are left out.
    ``x_range`` = (first, last) step of the axis (e.g. 1 and the job's total steps)."""
    drawn = [(name, [(float(x), float(y)) for x, y in points]) for name, points in series if points]
    parts = [
        f'<svg class="{escape(css_class)}" xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT // 2}" font-size="12" fill="#5f6b7a">no data yet</text></svg>')
        return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped
    xs = [x for _, points in drawn for x, _ in points]
    ys = [y for _, points in drawn for _, y in points]
    x0, x1, y0, y1 = axis_ranges(xs, ys, x_range)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    for fraction in (0.0, 0.5, 1.0):
        value = y0 + fraction * (y1 - y0)
        y = py(value)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#dde3ea"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#5f6b7a">{_fmt(value)}</text>')
    first, last = min(xs), max(xs) if x_range is None else max(max(xs), x_range[1])
    if x_range is not None:
        first = min(first, x_range[0])
    if first == last:
        parts.append(f'<text x="{px(first):.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="middle" fill="#5f6b7a" data-axis="x">step {first:g}</text>')
    else:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="10" fill="#5f6b7a" data-axis="x">step {first:g}</text>')
        parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="10" text-anchor="end" fill="#5f6b7a" data-axis="x">step {last:g}</text>')
    legend_x = LEFT
    for index, (name, points) in enumerate(drawn):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline data-series="{escape(name)}" fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>')
        if len(points) == 1:
            x, y = points[0]
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>')
        parts.append(f'<rect x="{legend_x}" y="20" width="10" height="3" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 13}" y="25" font-size="10">{escape(name)}</text>')
        legend_x += 22 + 6 * len(name)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def training_charts(metrics: Sequence[dict[str, Any]], total_steps: int = 0) -> list[SafeString]:
    """The loss curve and, for GRPO, the total reward and each reward component; the step axis runs
    from 1 to ``total_steps`` when given (a running job shows how far it has come)."""
    charts = []
    x_range = (1.0, float(total_steps)) if total_steps else None
    loss = [(m["step"], m["loss"]) for m in metrics if isinstance(m.get("loss"), int | float)]
    if loss:
        charts.append(line_chart("Loss", [("loss", loss)], x_range=x_range))
    reward = [(m["step"], m["reward"]) for m in metrics if isinstance(m.get("reward"), int | float)]
    components: dict[str, list[tuple[float, float]]] = {}
    for m in metrics:
        for name, value in (m.get("rewards") or {}).items():
            if isinstance(value, int | float):
                components.setdefault(name.removesuffix("_reward"), []).append((m["step"], value))
    if reward or components:
        charts.append(line_chart("Reward", [("total", reward), *sorted(components.items())], x_range=x_range))
    if not charts:
        charts.append(line_chart("Loss", []))
    return charts
