"""Try a draft on recent traffic: start a replay from the editor, watch it, read what would change."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from guardsite.roles import ADMIN, POLICY_EDITOR, can_edit_policies, role_required
from moderation import replay
from moderation.models import DraftReplay
from policies.models import Policy


@require_POST
@role_required(ADMIN, POLICY_EDITOR)
def replay_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Queue a replay of the policy's draft; a refusal (no published version, no traffic, one still
    running, a size not offered) comes back as the form with its reason (400)."""
    policy = get_object_or_404(Policy, slug=slug)
    try:
        sample = int(request.POST.get("sample", replay.DEFAULT_SIZE))
        started = replay.start(policy, sample, request.user)
    except ValueError as refusal:  # ReplayRefused, or a sample that is not a number
        message = str(refusal) if isinstance(refusal, replay.ReplayRefused) else "The number of items must be a whole number."
        return render(request, "moderation/replay.html#replay-form", form_context(policy, message), status=400)
    target = reverse("moderation:replay", args=[started.pk])
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = target
        return response
    return redirect(target)


@require_GET
def replay_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The replay's progress while it runs (htmx polls the status card), then its report."""
    run = get_object_or_404(DraftReplay.objects.select_related("policy", "live_version", "created_by"), pk=pk)
    context = {"replay": run, "report": run.report, "stalled": replay.is_stalled(run), "policy": run.policy,
               "editable": can_edit_policies(request.user)}
    if request.htmx and request.htmx.target == "replay-status":
        if not run.is_active:  # it just finished: reload the page so the report appears
            response = HttpResponse()
            response["HX-Refresh"] = "true"
            return response
        return render(request, "moderation/replay.html#replay-status", context)
    return render(request, "moderation/replay.html", context)


@require_POST
@role_required(ADMIN, POLICY_EDITOR)
def replay_allow(request: HttpRequest, pk: int) -> HttpResponse:
    """"Not this category": a changed item's text becomes an allowed example of the draft's category.
    htmx swaps the row's cell with the outcome; a refusal is a 400 saying why."""
    run = get_object_or_404(DraftReplay.objects.select_related("policy"), pk=pk)
    try:
        outcome = replay.allow_in_draft(run, int(request.POST.get("item", "")), request.POST.get("code", ""), request.user)
    except ValueError as refusal:  # ReplayRefused, or an item that is not a number
        message = str(refusal) if isinstance(refusal, replay.ReplayRefused) else "The item must be an item number."
        return render(request, "moderation/replay.html#allow-outcome", {"outcome": message, "refused": True}, status=400)
    if request.htmx:
        return render(request, "moderation/replay.html#allow-outcome", {"outcome": outcome})
    return redirect(reverse("moderation:replay", args=[run.pk]))


def form_context(policy: Policy, error: str = "", editable: bool = True) -> dict[str, object]:
    return {"policy": policy, "replay_error": error, "replay_sizes": replay.SIZES, "replay_default": replay.DEFAULT_SIZE,
            "last_replay": policy.replays.first(), "editable": editable}
