"""The review queue as a list: filter, sort and pick the item to review (/review/queue/)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from guardsite.roles import REVIEWER, role_required
from moderation import review
from moderation.models import Decision, ReviewTask

PAGE_SIZE = 25
SORTS = {
    "queue": (("priority", "id"), "queue order (flagged first)"),
    "oldest": (("created_at", "id"), "oldest first"),
    "newest": (("-created_at", "-id"), "newest first"),
    "confidence": (("score", "id"), "P(unsafe), lowest first"),
    "-confidence": (("-score", "id"), "P(unsafe), highest first"),
}
STATES = {
    "waiting": "waiting (open to claim)",
    "claimed": "claimed by a reviewer",
    "pending": "waiting or claimed",
}


# The filter's names as the page shows them: the score is the P(unsafe) of the text the review is about.
LABELS = {"confidence_min": "P(unsafe) from", "confidence_max": "P(unsafe) to"}


class FilterError(ValueError):
    """A filter value that cannot apply; the message names it."""


def _confidence(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"{LABELS[name]} must be a number between 0 and 1, not {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FilterError(f"{LABELS[name]} must be between 0 and 1, not {raw}")
    return value


def queued_tasks(params: dict[str, str]) -> QuerySet[ReviewTask]:
    """Review tasks not yet decided, filtered and sorted by ``params`` (the page's query string)."""
    now = timezone.now()
    tasks = ReviewTask.objects.select_related("item__policy_version__policy", "item__verdict", "claimed_by")
    waiting = Q(state=ReviewTask.State.OPEN) | Q(state=ReviewTask.State.CLAIMED, claim_expires_at__lte=now)
    claimed = Q(state=ReviewTask.State.CLAIMED, claim_expires_at__gt=now)
    state = params.get("state") or "waiting"
    if state not in STATES:
        raise FilterError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    tasks = tasks.filter(waiting if state == "waiting" else claimed if state == "claimed" else waiting | claimed)
    if params.get("policy"):
        tasks = tasks.filter(item__policy_version__policy__slug=params["policy"])
    if params.get("reason"):
        if params["reason"] not in ReviewTask.Reason.values:
            raise FilterError(f"reason must be one of {', '.join(ReviewTask.Reason.values)}, not {params['reason']!r}")
        tasks = tasks.filter(reason=params["reason"])
    if params.get("category"):
        code = params["category"].strip()
        if connection.vendor == "postgresql":
            tasks = tasks.filter(item__verdict__categories__contains=[code])
        else:  # SQLite has no JSON containment: match the quoted code in the JSON text
            tasks = tasks.filter(item__verdict__categories__icontains=f'"{code}"')
    low, high = _confidence(params, "confidence_min"), _confidence(params, "confidence_max")
    if low is not None and high is not None and low > high:
        raise FilterError(f"P(unsafe) from ({low}) is above P(unsafe) to ({high})")
    if low is not None:
        tasks = tasks.filter(score__gte=low)
    if high is not None:
        tasks = tasks.filter(score__lte=high)
    sort = params.get("sort") or "queue"
    if sort not in SORTS:
        raise FilterError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    return tasks.order_by(*SORTS[sort][0])


def _page(request: HttpRequest, query: QueryDict, error: str = "", status: int = 200) -> HttpResponse:
    from policies.models import Policy

    params = {k: v for k, v in query.items() if v}
    try:
        tasks = queued_tasks(params)
    except FilterError as problem:
        error, status, tasks = str(problem), 400, ReviewTask.objects.none()
    page = Paginator(tasks, PAGE_SIZE).get_page(query.get("page"))
    for task in page.object_list:  # the threshold of the text each score is about
        verdict = getattr(task.item, "verdict", None)
        task.threshold = (verdict.thresholds or {}).get(task.field) if verdict is not None and task.field else None
    rest = query.copy()
    rest.pop("page", None)
    context: dict[str, Any] = {
        "page": page,
        "params": params,
        "query": rest.urlencode(),
        "error": error,
        "policies": Policy.objects.order_by("slug").values_list("slug", flat=True),
        "reasons": ReviewTask.Reason.choices,
        "sorts": [(key, label) for key, (_, label) in SORTS.items()],
        "states": list(STATES.items()),
        "now": timezone.now(),
        "held": review.current_claim(request.user),
        "decided_items": set(
            Decision.objects.filter(reviewer=request.user, item_id__in=[t.item_id for t in page.object_list]).values_list("item_id", flat=True)
        ),
    }
    return render(request, "moderation/review_queue.html", context, status=status)


@role_required(REVIEWER)
def queue_list(request: HttpRequest) -> HttpResponse:
    return _page(request, request.GET)


@role_required(REVIEWER)
@require_POST
def queue_pick(request: HttpRequest, task_id: int) -> HttpResponse:
    """Claim the picked task and open it for review; a task that cannot be taken says why (409)."""
    get_object_or_404(ReviewTask, pk=task_id)
    try:
        task, released = review.claim_task(task_id, request.user)
    except review.ReviewError as problem:
        return _page(request, QueryDict(request.POST.get("query", "")), error=str(problem), status=409)
    if released is not None:
        messages.info(request, f"Item {released.item_id}, which you held, went back to the queue.")
    return redirect("moderation:review-task", task_id=task.pk)
