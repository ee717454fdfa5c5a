"""Server-rendered SVG bar charts (no JavaScript, nothing fetched from the internet).

One function: ``bar_chart`` draws horizontal grouped bars, one group per
label and one bar per series (e.g. model A and model B), values in percent.
Horizontal bars keep long labels (file names, category names) readable.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Colour-blind-safe pair (Okabe-Ito blue and orange), then more.
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9")
LABEL_WIDTH = 230
BAR_AREA = 420
BAR_HEIGHT = 12
BAR_GAP = 2
GROUP_GAP = 10
TOP = 44


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    max_value: float = 100.0,
    unit: str = "",
) -> SafeString:
    """An inline ``<svg>``: ``series`` is [(name, values per label)]; None = no value (no bar, "n/a")."""
    groups = len(labels)
    per_group = len(series) * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP
    height = TOP + groups * per_group + 24
    width = LABEL_WIDTH + BAR_AREA + 70
    parts = [
        f'<svg class="bar-chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    # Legend, on its own line under the title.
    x = 0
    for index, (name, _) in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="31" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    # Grid lines at 0, 25, 50, 75, 100 % of max_value.
    bottom = TOP + groups * per_group
    for step in range(5):
        gx = LABEL_WIDTH + BAR_AREA * step / 4
        parts.append(f'<line x1="{gx:.1f}" y1="{TOP - 4}" x2="{gx:.1f}" y2="{bottom}" stroke="#dde3ea"/>')
        parts.append(
            f'<text x="{gx:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle" fill="#5f6b7a">'
            f"{max_value * step / 4:g}{escape(unit)}</text>"
        )
    for group_index, label in enumerate(labels):
        y0 = TOP + group_index * per_group
        short = label if len(label) <= 34 else label[:33] + "…"
        label_y = y0 + len(series) * (BAR_HEIGHT + BAR_GAP) / 2 + 4
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{label_y:.1f}" font-size="11" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
        )
        for series_index, (name, values) in enumerate(series):
            value = values[group_index] if group_index < len(values) else None
            y = y0 + series_index * (BAR_HEIGHT + BAR_GAP)
            colour = SERIES_COLOURS[series_index % len(SERIES_COLOURS)]
            if value is None:
                parts.append(f'<text x="{LABEL_WIDTH + 3}" y="{y + BAR_HEIGHT - 2}" font-size="10" fill="#5f6b7a">n/a</text>')
                continue
            bar = BAR_AREA * max(0.0, min(float(value), max_value)) / max_value if max_value else 0.0
            parts.append(
                f'<rect class="bar" x="{LABEL_WIDTH}" y="{y}" width="{bar:.1f}" height="{BAR_HEIGHT}" fill="{colour}">'
                f"<title>{escape(name)} · {escape(label)}: {float(value):g}{escape(unit)}</title></rect>"
            )
            parts.append(f'<text x="{LABEL_WIDTH + bar + 4:.1f}" y="{y + BAR_HEIGHT - 2}" font-size="10">{float(value):g}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above
