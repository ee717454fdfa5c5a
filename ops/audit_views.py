"""The audit log page (/audit/) and its CSV / JSON exports; admins only."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from guardsite.roles import ADMIN, role_required
from ops import audit

PAGE_SIZE = 50
CSV_COLUMNS = ("at", "actor", "action", "object_type", "object_id", "url", "details")


@role_required(ADMIN)
def audit_page(request: HttpRequest) -> HttpResponse:
    params = {k: v for k, v in request.GET.items() if v}
    error, status = "", 200
    try:
        filters = audit.parse_filters(params)
        rows = audit.events(filters)
    except audit.AuditFilterError as problem:
        error, status, filters, rows = str(problem), 400, audit.Filters(raw=params), None
    page = Paginator(rows if rows is not None else [], PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context: dict[str, Any] = {
        "page": page,
        "events": audit.materialise(page.object_list),
        "params": params,
        "query": query.urlencode(),
        "error": error,
        "actors": [audit.SYSTEM, *get_user_model().objects.order_by("username").values_list("username", flat=True)],
        "actions": audit.known_actions(),
        "object_types": audit.known_object_types(),
    }
    return render(request, "ops/audit.html", context, status=status)


def _csv_lines(events: Iterator[audit.Event]) -> Iterator[str]:
    class Line:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Line())
    yield writer.writerow(CSV_COLUMNS)
    for event in events:
        yield writer.writerow([event.at.isoformat(), event.actor, event.action, event.object_type, event.object_id, event.url, event.details_text()])


def _json_chunks(events: Iterator[audit.Event], filters: audit.Filters) -> Iterator[str]:
    yield '{"filters": ' + json.dumps(filters.raw) + ', "exported_at": ' + json.dumps(timezone.now().isoformat()) + ', "events": ['
    for n, event in enumerate(events):
        yield ("," if n else "") + "\n" + json.dumps(event.as_json(), default=str)
    yield "\n]}\n"


@role_required(ADMIN)
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The events the page shows with the same filters, every page of them."""
    params = {k: v for k, v in request.GET.items() if v and k != "page"}
    try:
        filters = audit.parse_filters(params)
    except audit.AuditFilterError as problem:
        return HttpResponse(f"{problem}\n", status=400, content_type="text/plain; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    events = audit.iter_events(filters)
    if fmt == "csv":
        response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_json_chunks(events, filters), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="guardsite-audit-{stamp}.{fmt}"'
    return response
