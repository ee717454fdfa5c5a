"""A policy's serving settings (not versioned content): which fast verdicts get an explanation."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from guardsite.roles import ADMIN, POLICY_EDITOR, role_required
from policies.models import Policy


@role_required(ADMIN, POLICY_EDITOR)
@require_POST
def policy_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """Save "Explain items": off, flagged and blocked (default), or all. Takes effect for
    verdicts stored from now on; recorded in the audit log."""
    from moderation.models import AuditLog

    policy = get_object_or_404(Policy, slug=slug)
    value = request.POST.get("explain", "")
    if value not in Policy.Explain.values:
        choices = ", ".join(f"{v!r}" for v in Policy.Explain.values)
        return render(
            request,
            "policies/settings_error.html",
            {"policy": policy, "error": f"Explain items: {value!r} is not one of {choices}."},
            status=400,
        )
    before = policy.explain
    if value != before:
        Policy.objects.filter(pk=policy.pk).update(explain=value)
        AuditLog.record(request.user, "policy.settings", policy, before={"explain": before}, after={"explain": value})
        messages.success(request, f"Explanations: {Policy.Explain(value).label} (from the next verdict on).")
    return redirect("policies:detail", slug=policy.slug)
