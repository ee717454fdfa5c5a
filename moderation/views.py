"""Pages: item browser, item detail, review queue, agreement, API keys."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, time, timedelta
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from guard import contract
from guardsite.roles import ADMIN, REVIEWER, role_required
from moderation import keys, review
from moderation.models import ApiKey, AuditLog, Decision, Item, ReviewTask, Verdict

# ----------------------------------------------------------------- items


def _parse_date(value: str) -> datetime | None:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None
    return timezone.make_aware(datetime.combine(day, time.min))


def filtered_items(params: dict[str, str]) -> QuerySet[Item]:
    items = Item.objects.select_related("policy_version__policy", "verdict", "client")
    if params.get("policy"):
        items = items.filter(policy_version__policy__slug=params["policy"])
    label = params.get("label")
    if label == "unsafe":
        items = items.filter(Q(verdict__prompt_label="unsafe") | Q(verdict__response_label="unsafe"))
    elif label == "safe":
        items = items.filter(verdict__isnull=False).exclude(Q(verdict__prompt_label="unsafe") | Q(verdict__response_label="unsafe"))
    if params.get("category"):
        code = params["category"].strip()
        if connection.vendor == "postgresql":
            items = items.filter(verdict__categories__contains=[code])
        else:  # SQLite has no JSON containment: match the quoted code in the JSON text
            items = items.filter(verdict__categories__icontains=f'"{code}"')
    if params.get("status") in Item.Status.values:
        items = items.filter(status=params["status"])
    if params.get("action") in Verdict.Action.values:
        items = items.filter(verdict__action=params["action"])
    review_state = params.get("review")
    if review_state == "pending":
        items = items.filter(review_tasks__state__in=[ReviewTask.State.OPEN, ReviewTask.State.CLAIMED]).distinct()
    elif review_state == "reviewed":
        items = items.filter(decisions__isnull=False).distinct()
    start = _parse_date(params.get("date_from", ""))
    if start:
        items = items.filter(created_at__gte=start)
    end = _parse_date(params.get("date_to", ""))
    if end:
        items = items.filter(created_at__lt=end + timedelta(days=1))
    if params.get("q"):
        items = items.filter(Q(prompt__icontains=params["q"]) | Q(response__icontains=params["q"]) | Q(external_id=params["q"]))
    return items.order_by("-id")


def items_list(request: HttpRequest) -> HttpResponse:
    from policies.models import Policy

    params = {k: v for k, v in request.GET.items() if v}
    page = Paginator(filtered_items(params), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "params": params,
        "query": query.urlencode(),
        "policies": Policy.objects.order_by("slug").values_list("slug", flat=True),
        "statuses": Item.Status.values,
        "actions": Verdict.Action.values,
    }
    template = "moderation/items.html#results" if request.htmx and not request.htmx.boosted else "moderation/items.html"
    return render(request, template, context)


def highlighted(text: str, codes: list[str], names: list[str]) -> list[tuple[str, bool]]:
    """Split ``text`` into (segment, is_violated_rule) for highlighting codes and names."""
    words = [re.escape(w) for w in sorted({*codes, *names}, key=len, reverse=True) if w]
    if not words or not text:
        return [(text, False)]
    pattern = re.compile(r"(?<![\w])(" + "|".join(words) + r")(?![\w])", re.IGNORECASE)
    parts: list[tuple[str, bool]] = []
    last = 0
    for match in pattern.finditer(text):
        if match.start() > last:
            parts.append((text[last : match.start()], False))
        parts.append((match.group(0), True))
        last = match.end()
    if last < len(text):
        parts.append((text[last:], False))
    return parts


def evidence_parts(text: str, evidence: str) -> list[tuple[str, bool]]:
    """Split ``text`` into (segment, is_evidence): the stretch of a long prompt or response that decided its verdict
    is marked."""
    at = text.find(evidence) if evidence else -1
    if at < 0:
        return [(text, False)]
    parts = [(text[:at], False), (evidence, True), (text[at + len(evidence) :], False)]
    return [(segment, hit) for segment, hit in parts if segment]


def item_context(item: Item) -> dict[str, Any]:
    verdict = Verdict.objects.filter(item=item).first()
    categories = list(item.policy_version.categories.order_by("position", "id"))
    violated = set(verdict.categories) if verdict else set()
    return {
        "item": item,
        "verdict": verdict,
        "categories": categories,
        "violated": violated,
        "explanation_parts": highlighted(
            verdict.explanation if verdict else "",
            [c.code for c in categories if c.code in violated],
            [c.name for c in categories if c.code in violated],
        ),
        "label_decisions": label_decisions(verdict),
        "prompt_parts": evidence_parts(item.prompt, verdict.evidence if verdict else ""),
        "response_parts": evidence_parts(item.response or "", verdict.response_evidence if verdict else ""),
    }


def label_decisions(verdict: Verdict | None) -> list[Any]:
    """Each label with the probability and calibrated threshold that decided it."""
    from guard.calibration import field_decisions

    if verdict is None:
        return []
    labels = {"prompt": verdict.prompt_label, "response": verdict.response_label, "refusal": verdict.refusal_label}
    return field_decisions(verdict.probabilities, verdict.thresholds, labels)


def item_detail(request: HttpRequest, item_id: int) -> HttpResponse:
    item = get_object_or_404(Item.objects.select_related("policy_version__policy", "client"), pk=item_id)
    context = item_context(item)
    context.update(
        tasks=item.review_tasks.select_related("claimed_by").order_by("id"),
        decisions=item.decisions.select_related("reviewer").order_by("created_at"),
        audit=AuditLog.objects.filter(object_type="item", object_id=str(item.pk)).order_by("at"),
    )
    return render(request, "moderation/item_detail.html", context)


def item_explanation(request: HttpRequest, item_id: int) -> HttpResponse:
    """The explanation fragment; the page polls it while the explanation is being written."""
    item = get_object_or_404(Item.objects.select_related("policy_version__policy"), pk=item_id)
    return render(request, "moderation/_explanation.html", item_context(item))


# ----------------------------------------------------------------- review


def _queue_stats() -> dict[str, Any]:
    """Items (not review tasks: a double-reviewed item has two) waiting, by reason."""
    open_tasks = ReviewTask.objects.filter(state=ReviewTask.State.OPEN)
    by_reason = dict(open_tasks.values_list("reason").annotate(n=Count("item_id", distinct=True)))
    return {
        "open_total": open_tasks.values("item_id").distinct().count(),
        "open_by_reason": [(ReviewTask.Reason(r).label, by_reason.get(r, 0)) for r in ReviewTask.Reason.values],
        "claimed_total": ReviewTask.objects.filter(state=ReviewTask.State.CLAIMED, claim_expires_at__gt=timezone.now()).count(),
        "done_today": Decision.objects.filter(created_at__gte=timezone.now() - timedelta(days=1)).count(),
    }


def panel_context(task: ReviewTask | None, error: str = "") -> dict[str, Any]:
    if task is None:
        return {"task": None, "error": error, **_queue_stats()}
    item = Item.objects.select_related("policy_version__policy").get(pk=task.item_id)
    context = item_context(item)
    verdict = context["verdict"]
    guard = review.guard_labels(item)
    context.update(
        task=task,
        error=error,
        category_rows=[
            {
                "key": str(n + 1) if n < 9 else "",
                "category": c,
                "prompt": c.code in guard.prompt_categories,
                "response": c.code in guard.response_categories,
            }
            for n, c in enumerate(context["categories"])
        ],
        prompt_choices=contract.LABEL_CHOICES[contract.FIELD_PROMPT],
        response_choices=(contract.SAFE, contract.UNSAFE),
        refusal_choices=(contract.REFUSAL, contract.COMPLIANCE),
        guard_response_label=verdict.response_label or contract.SAFE,
        guard_refusal_label=verdict.refusal_label or contract.COMPLIANCE,
        category_field=category_field(item, verdict),
        review_score=task_score(task, verdict),
    )
    return context


def task_score(task: ReviewTask, verdict: Verdict | None) -> dict[str, Any] | None:
    """The text a task is about, its P(unsafe) and that text's threshold (for the queue and the panel)."""
    if task.score is None or not task.field:
        return None
    threshold = (verdict.thresholds or {}).get(task.field) if verdict else None
    return {"field": task.field, "p": task.score, "threshold": threshold}


def category_field(item: Item, verdict: Verdict) -> str:
    """The text the reviewer's category choices start out applying to: the one the guard
    found unsafe (the response first), else the response when there is one."""
    if item.has_response and verdict.response_label == contract.UNSAFE:
        return "response"
    if verdict.prompt_label == contract.UNSAFE or not item.has_response:
        return "prompt"
    return "response"


@role_required(REVIEWER)
def review_home(request: HttpRequest) -> HttpResponse:
    return render(request, "moderation/review.html", panel_context(review.current_claim(request.user)))


def _panel(request: HttpRequest, task: ReviewTask | None, error: str = "") -> HttpResponse:
    """The panel for ``task`` (htmx), whose URL the browser then shows: a reload opens the item
    the reviewer holds, never the one they just decided."""
    url = reverse("moderation:review-task", kwargs={"task_id": task.pk}) if task else reverse("moderation:review")
    if request.htmx:
        response = render(request, "moderation/review.html#panel", panel_context(task, error))
        response["HX-Push-Url"] = url
        return response
    if error:
        messages.error(request, error)
    return redirect(url)


@role_required(REVIEWER)
@require_POST
def review_next(request: HttpRequest) -> HttpResponse:
    return _panel(request, review.claim_next(request.user))


@role_required(REVIEWER)
def review_task(request: HttpRequest, task_id: int) -> HttpResponse:
    task = get_object_or_404(ReviewTask, pk=task_id)
    mine = task.claimed_by_id == request.user.pk and task.state == ReviewTask.State.CLAIMED
    if mine and task.claim_expires_at and task.claim_expires_at > timezone.now():
        return render(request, "moderation/review.html", panel_context(task))
    held = review.current_claim(request.user)
    if task.state == ReviewTask.State.DONE:
        messages.info(request, f"Item {task.item_id} was already decided.")
    else:
        messages.error(request, f"Item {task.item_id} is not claimed by you; claim the next item instead.")
    if held is not None:
        return redirect("moderation:review-task", task_id=held.pk)
    return redirect("moderation:review")


def labels_from_form(data: dict, item: Item) -> review.Labels:
    """The override's labels: each text's category boxes, plus codes typed with ``c`` (for the
    text named by ``category_field``, the one the keys were on; a form that names no text
    sends ``categories``, which apply to the item as before)."""
    known = {code.casefold(): code for code in item.policy_version.categories.values_list("code", flat=True)}
    typed = [known.get(c.strip().casefold(), c.strip()) for c in re.split(r"[,\s]+", data.get("category_codes", "")) if c.strip()]
    per_text = {
        "prompt": [c for c in data.getlist("prompt_categories") if c],  # type: ignore[attr-defined]
        "response": [c for c in data.getlist("response_categories") if c],  # type: ignore[attr-defined]
    }
    shared = [c for c in data.getlist("categories") if c]  # type: ignore[attr-defined]
    target = data.get("category_field", "")
    if target in per_text:
        per_text[target] += typed
    else:
        shared += typed
    return review.Labels(
        prompt_label=data.get("prompt_label", ""),
        response_label=data.get("response_label") or None,
        refusal_label=data.get("refusal_label") or None,
        categories=list(dict.fromkeys(shared)),
        prompt_categories=list(dict.fromkeys(per_text["prompt"])),
        response_categories=list(dict.fromkeys(per_text["response"])),
    )


@role_required(REVIEWER)
@require_POST
def review_decide(request: HttpRequest, task_id: int) -> HttpResponse:
    task = get_object_or_404(ReviewTask.objects.select_related("item__policy_version"), pk=task_id)
    outcome = request.POST.get("outcome", "")
    labels = labels_from_form(request.POST, task.item) if outcome == Decision.Outcome.OVERRIDE else None
    try:
        review.decide(task.pk, request.user, outcome, labels, request.POST.get("note", ""))
    except review.ReviewError as problem:
        still_mine = review.current_claim(request.user)
        return _panel(request, still_mine if still_mine and still_mine.pk == task.pk else review.claim_next(request.user), str(problem))
    # Submit and next.
    return _panel(request, review.claim_next(request.user))


@role_required(REVIEWER)
@require_POST
def review_release(request: HttpRequest, task_id: int) -> HttpResponse:
    task = get_object_or_404(ReviewTask, pk=task_id)
    review.release(task, request.user)
    return _panel(request, None)


@role_required(REVIEWER)
def review_agreement(request: HttpRequest) -> HttpResponse:
    from policies.models import Policy

    slug = request.GET.get("policy") or None
    return render(
        request,
        "moderation/agreement.html",
        {"report": review.agreement(slug), "policy": slug, "policies": Policy.objects.order_by("slug").values_list("slug", flat=True)},
    )


# ----------------------------------------------------------------- API keys


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    created: dict[str, str] | None = None
    errors: list[str] = []
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        webhook_url = request.POST.get("webhook_url", "").strip()
        try:
            rate = int(request.POST.get("rate_limit_per_minute") or 0) or None
        except ValueError:
            rate = None
            errors.append("Rate limit must be a whole number of requests per minute.")
        if not name:
            errors.append("A name is required.")
        if webhook_url and not webhook_url.startswith(("http://", "https://")):
            errors.append("The webhook URL must start with http:// or https://.")
        if not errors:
            fields: dict[str, Any] = {"webhook_url": webhook_url}
            if rate:
                fields["rate_limit_per_minute"] = rate
            if webhook_url:
                fields["webhook_secret"] = request.POST.get("webhook_secret", "").strip() or secrets.token_urlsafe(24)
            key, secret = keys.create_key(name, request.user, **fields)
            AuditLog.record(request.user, "api_key.create", key, after={"name": key.name, "prefix": key.prefix, "webhook_url": webhook_url})
            # Shown once; only its hash is stored.
            created = {"name": key.name, "secret": secret, "webhook_secret": fields.get("webhook_secret", "")}
    return render(
        request,
        "moderation/api_keys.html",
        {"keys": ApiKey.objects.select_related("created_by"), "created": created, "errors": errors, "default_rate": keys.settings.MODERATION_RATE_LIMIT_PER_MINUTE},
        status=422 if errors else 200,
    )


@role_required(ADMIN)
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=key_id)
    if key.revoked_at is not None:
        messages.info(request, f"Key {key.name} ({key.prefix}) was already revoked.")
        return redirect("moderation:api-keys")
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    AuditLog.record(request.user, "api_key.revoke", key, before={"revoked_at": None}, after={"revoked_at": timezone.now().isoformat()})
    messages.success(request, f"Key {key.name} ({key.prefix}) revoked; requests with it now get 401.")
    return redirect("moderation:api-keys")
