"""The draft editor: the page, its status, and each small edit (htmx partials), every edit audited.

Publishing and rolling back stay in ``policies.views``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from guardsite.roles import can_edit_policies
from policies import audit
from policies.forms import CategoryForm, PublishForm, VersionHeaderForm
from policies.models import Category, Policy, PolicyVersion
from policies.views import (
    PUBLISH_REFUSAL_KEY,
    _changed,
    _console_form,
    _draft_has_changes,
    _policy,
    editor_required,
)


def _editor_context(request: HttpRequest, policy: Policy, **extra: Any) -> dict[str, Any]:
    draft = policy.draft()
    context = {
        "policy": policy,
        "draft": draft,
        "categories": draft.categories.all(),
        "add_form": CategoryForm(version=draft, prefix="new"),
        "editable": can_edit_policies(request.user),
    }
    context.update(extra)
    return context


@require_GET
def draft_editor(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    # A refused publish comes back here with its reason and the change note the editor typed.
    refusal = request.session.pop(PUBLISH_REFUSAL_KEY, None) or {}
    context = _editor_context(
        request,
        policy,
        publish_form=PublishForm(initial={"change_note": refusal.get("note", "")}),
        publish_error=refusal.get("error", ""),
        console_form=_console_form(policy, policy.draft()),
        latest=policy.latest_version(),
        draft_has_changes=_draft_has_changes(policy, policy.draft()),
        draft_has_categories=policy.draft().categories.exists(),
    )
    return render(request, "policies/editor.html", context)


@require_GET
def draft_status(request: HttpRequest, slug: str) -> HttpResponse:
    """The draft's status badge, or (``?part=publish``) the publish buttons with why they are disabled."""
    policy = _policy(slug)
    draft = policy.draft()
    context = {
        "policy": policy,
        "latest": policy.latest_version(),
        "draft_has_changes": _draft_has_changes(policy, draft),
        "draft_has_categories": draft.categories.exists(),
    }
    part = "publish-actions" if request.GET.get("part") == "publish" else "draft-status"
    return render(request, f"policies/partials.html#{part}", context)


@editor_required
def draft_header(request: HttpRequest, slug: str) -> HttpResponse:
    """GET ?edit=1: the form; GET: the header; POST: save and show the header."""
    policy = _policy(slug)
    draft = policy.draft()
    if request.method == "POST":
        before = {"name": draft.name, "description": draft.description}
        form = VersionHeaderForm(request.POST, instance=draft)
        if not form.is_valid():
            return render(request, "policies/partials.html#header-form", {"policy": policy, "draft": draft, "form": form}, status=422)
        form.save()
        after = {"name": draft.name, "description": draft.description}
        if after != before:
            audit.draft_edited(request.user, policy, "name and description edited", before=before, after=after)
        return _changed(render(request, "policies/partials.html#header", {"policy": policy, "draft": draft, "editable": True}))
    if request.GET.get("edit"):
        form = VersionHeaderForm(instance=draft)
        return render(request, "policies/partials.html#header-form", {"policy": policy, "draft": draft, "form": form})
    return render(request, "policies/partials.html#header", {"policy": policy, "draft": draft, "editable": True})


def _categories_response(request: HttpRequest, policy: Policy, status: int = 200, **extra: Any) -> HttpResponse:
    context = _editor_context(request, policy, **extra)
    return render(request, "policies/partials.html#categories", context, status=status)


@require_POST
@editor_required
def category_add(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    draft = policy.draft()
    form = CategoryForm(request.POST, version=draft, prefix="new")
    if not form.is_valid():
        return _categories_response(request, policy, status=422, add_form=form, add_open=True)
    category = form.save(commit=False)
    category.version = draft
    last = draft.categories.order_by("-position").first()
    category.position = (last.position + 1) if last else 0
    try:
        with transaction.atomic():
            category.save()
    except IntegrityError:
        # Another editor added the same code a moment ago (the form's check raced with theirs).
        form.add_error("code", f"Code {category.code!r} is already used in this version.")
        return _categories_response(request, policy, status=422, add_form=form, add_open=True)
    audit.draft_edited(request.user, policy, f"category {category.code} added", after=audit.category_state(category))
    return _changed(_categories_response(request, policy, added=category.pk))


def _draft_category(policy: Policy, pk: int) -> Category:
    return get_object_or_404(Category, pk=pk, version=policy.draft())


@require_GET
def category_row(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    policy = _policy(slug)
    category = _draft_category(policy, pk)
    return render(request, "policies/partials.html#category-row", {"policy": policy, "category": category, "editable": can_edit_policies(request.user)})


@editor_required
def category_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    policy = _policy(slug)
    draft = policy.draft()
    category = _draft_category(policy, pk)
    if request.method == "POST":
        before = audit.category_state(category)
        form = CategoryForm(request.POST, instance=category, version=draft, prefix=f"c{pk}")
        if form.is_valid():
            try:
                with transaction.atomic():
                    form.save()
            except IntegrityError:
                form.add_error("code", f"Code {form.cleaned_data['code']!r} is already used in this version.")
        if form.errors:
            return render(request, "policies/partials.html#category-form", {"policy": policy, "category": category, "form": form}, status=422)
        after = audit.category_state(category)
        if after != before:
            audit.draft_edited(request.user, policy, f"category {before['code']} edited", before=before, after=after)
        return _changed(render(request, "policies/partials.html#category-row", {"policy": policy, "category": category, "editable": True}))
    form = CategoryForm(instance=category, version=draft, prefix=f"c{pk}")
    return render(request, "policies/partials.html#category-form", {"policy": policy, "category": category, "form": form})


@require_POST
@editor_required
def category_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    policy = _policy(slug)
    category = _draft_category(policy, pk)
    before = audit.category_state(category)
    category.delete()
    audit.draft_edited(request.user, policy, f"category {before['code']} deleted", before=before)
    return _changed(_categories_response(request, policy))


@require_POST
@editor_required
def category_move(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Swap with the neighbour above (direction=up) or below (direction=down)."""
    policy = _policy(slug)
    direction = request.POST.get("direction")
    if direction not in ("up", "down"):
        return HttpResponse("direction must be 'up' or 'down'", status=400, content_type="text/plain")
    with transaction.atomic():
        draft = PolicyVersion.objects.select_for_update().get(pk=policy.draft().pk)
        ordered = list(draft.categories.order_by("position", "id"))
        index = next((i for i, c in enumerate(ordered) if c.pk == pk), None)
        if index is None:
            raise Http404("No such category in the draft.")
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(ordered):
            before = [c.code for c in ordered]
            ordered[index], ordered[other] = ordered[other], ordered[index]
            audit.draft_edited(request.user, policy, f"category {ordered[other].code} moved {direction}",
                               before={"order": before}, after={"order": [c.code for c in ordered]})
            # Renumber densely: positions may have gaps or ties after imports and deletions.
            for position, category in enumerate(ordered):
                if category.position != position:
                    category.position = position
                    category.save(update_fields=["position"])
    return _changed(_categories_response(request, policy, moved=pk))


@require_POST
@editor_required
def draft_discard(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    latest = policy.latest_version()
    if latest is None:
        messages.error(request, "Nothing is published yet, so there is nothing to go back to.")
    else:
        policy.discard_draft_changes()
        audit.draft_edited(request.user, policy, f"draft changes discarded (back to version {latest.number})")
        messages.success(request, f"The draft is equal to version {latest.number} again.")
    return redirect("policies:editor", slug=policy.slug)


