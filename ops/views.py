"""The overview page ("/"): traffic, review, workers and models at a glance.

The page polls itself with htmx every 10 s and then gets only the panels
(the ``panels`` partial), so it updates without a reload; the running-jobs
panel polls every 2 s on its own (``?part=jobs``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from moderation import review_budget
from ops import charts, guidance, metrics


def overview_context(window_key: str) -> dict[str, Any]:
    window = metrics.WINDOWS.get(window_key) or metrics.WINDOWS[metrics.DEFAULT_WINDOW]
    now = timezone.now()
    buckets = metrics.Buckets(window, now)
    labels = buckets.labels()
    per_hour = metrics.items_per_hour(buckets)
    category_lines = metrics.flag_rate_per_category(buckets)
    decisions = metrics.decisions_per_hour(buckets)
    backlog = metrics.review_backlog()
    pipeline = metrics.pipeline()
    worker_rows = metrics.workers()
    queues = metrics.queue_lengths()
    per_bucket_hours = buckets.bucket_hours
    return {
        "window": window,
        "windows": list(metrics.WINDOWS.values()),
        "now": now,
        "items_total": round(sum(per_hour) * per_bucket_hours),
        "items_chart": charts.line_chart(
            f"Items per hour, {window.label}", labels, [charts.Series("items / h", per_hour)], label_every=window.label_every
        ),
        "flag_chart": charts.line_chart(
            f"Flag rate per category, {window.label}",
            labels,
            [charts.Series("any category (unsafe)", metrics.unsafe_rate(buckets))]
            + [charts.Series(line.name, line.rates) for line in category_lines],
            unit="%",
            label_every=window.label_every,
            width=1140,
        ),
        "category_lines": category_lines,
        "review_chart": charts.line_chart(
            f"Review decisions per hour, {window.label}", labels, [charts.Series("decisions / h", decisions)], label_every=window.label_every
        ),
        "decisions_total": round(sum(decisions) * per_bucket_hours),
        "backlog": backlog,
        "budgets": review_budget.budget_rows(now),
        "reviewers": metrics.reviewer_throughput(buckets.start),
        "overturn_models": metrics.overturns_per_model(buckets.start),
        "overturn_categories": metrics.overturns_per_category(buckets.start),
        "pipeline": pipeline,
        "workers": worker_rows,
        "workers_online": sum(1 for w in worker_rows if w.state == "online"),
        "queues": queues,
        "jobs": metrics.running_jobs(),
        "production": metrics.production_models(),
    }


def overview(request: HttpRequest) -> HttpResponse:
    if request.htmx and request.GET.get("part") == "jobs":
        return render(request, "ops/overview.html#running-jobs", {"jobs": metrics.running_jobs()})
    context = overview_context(request.GET.get("window", metrics.DEFAULT_WINDOW))
    context["next_steps"] = guidance.next_steps(request, context["workers_online"], context["pipeline"].pending)
    template = "ops/overview.html#panels" if request.htmx else "ops/overview.html"
    return render(request, template, context)
