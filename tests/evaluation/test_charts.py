"""The inline SVG bar charts (server-rendered, no JavaScript)."""

from __future__ import annotations

from evaluation.charts import BAR_AREA, bar_chart


def test_one_bar_per_label_and_series_scaled_to_the_maximum():
    svg = str(bar_chart("F1", ["prompt", "response"], [("A", [50.0, 100.0]), ("B", [0.0, 25.0])]))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="bar"') == 4
    assert f'width="{BAR_AREA / 2:.1f}"' in svg and f'width="{BAR_AREA:.1f}"' in svg


def test_a_missing_value_draws_no_bar_but_says_n_a():
    svg = str(bar_chart("F1", ["refusal"], [("A", [None]), ("B", [10.0])]))
    assert svg.count('class="bar"') == 1 and "n/a" in svg


def test_labels_are_escaped():
    svg = str(bar_chart("<b>", ["<script>alert(1)</script>"], [("A&B", [1.0])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "A&amp;B" in svg
