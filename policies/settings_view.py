"""A policy's serving settings (not versioned content): which fast verdicts get an explanation,
and what the review team can take (the review budget that sizes the uncertain band)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from guardsite.roles import ADMIN, POLICY_EDITOR, role_required
from policies.models import Policy

MAX_ITEMS_PER_DAY = 1_000_000


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


class ReviewBudgetForm(forms.Form):
    """What the review team can take for this policy: items a day, or a share of the policy's traffic."""

    review_budget = forms.ChoiceField(choices=Policy.ReviewBudget.choices, label="Budget", widget=forms.RadioSelect)
    review_items_per_day = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_ITEMS_PER_DAY, label="Items a day",
        error_messages={"invalid": "Items a day must be a whole number, e.g. 200."},
    )
    review_traffic_percent = forms.FloatField(
        required=False, min_value=0.01, max_value=100, label="Share of traffic (%)",
        error_messages={"invalid": "The share of traffic must be a number of percent, e.g. 2 or 0.5."},
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        mode = cleaned.get("review_budget")
        if mode == Policy.ReviewBudget.PER_DAY and not cleaned.get("review_items_per_day") and "review_items_per_day" not in self.errors:
            self.add_error("review_items_per_day", "A budget in items a day needs the number of items the team reviews a day.")
        if mode == Policy.ReviewBudget.SHARE and not cleaned.get("review_traffic_percent") and "review_traffic_percent" not in self.errors:
            self.add_error("review_traffic_percent", "A budget as a share of traffic needs the percent of items to review.")
        return cleaned


def _budget_page(request: HttpRequest, policy: Policy, form: ReviewBudgetForm, status: int = 200) -> HttpResponse:
    from moderation import conf
    from moderation.review_budget import compute_band

    low, high = conf.uncertain_band()
    context = {"policy": policy, "form": form, "band": compute_band(policy), "fixed_band": f"P(unsafe) {low:g}–{high:g}"}
    return render(request, "policies/review_budget.html", context, status=status)


@role_required(ADMIN, POLICY_EDITOR)
@require_http_methods(["GET", "POST"])
def review_budget(request: HttpRequest, slug: str) -> HttpResponse:
    """The policy's review budget, and the uncertain band and daily inflow it gives on recent traffic.
    A budget that cannot apply is refused (400) with the reason next to its field; a change is audited."""
    from moderation.models import AuditLog

    policy = get_object_or_404(Policy, slug=slug)
    fields = ["review_budget", "review_items_per_day", "review_traffic_percent"]
    if request.method == "GET":
        return _budget_page(request, policy, ReviewBudgetForm(initial={name: getattr(policy, name) for name in fields}))
    form = ReviewBudgetForm(request.POST)
    if not form.is_valid():
        return _budget_page(request, policy, form, status=400)
    before = {name: getattr(policy, name) for name in fields}
    after = {name: form.cleaned_data.get(name) for name in fields}
    # Only the chosen kind's number is kept: the other would read as a second budget.
    if after["review_budget"] != Policy.ReviewBudget.PER_DAY:
        after["review_items_per_day"] = None
    if after["review_budget"] != Policy.ReviewBudget.SHARE:
        after["review_traffic_percent"] = None
    if after != before:
        Policy.objects.filter(pk=policy.pk).update(**after)
        AuditLog.record(request.user, "policy.settings", policy, before=before, after=after)
        policy.refresh_from_db()
        messages.success(request, f"Review budget: {policy.review_budget_text or 'none (the fixed uncertain band)'}; it applies to verdicts from now on.")
    return redirect("policies:review-budget", slug=policy.slug)
