"""Policy pages. Reading is open to every signed-in user; changing needs admin or policy_editor.

Small edits (the draft's header and categories) are htmx requests answered
with template partials; publishing, rolling back and importing are ordinary
POSTs followed by a redirect.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from guard.serving import serving
from guardsite.roles import ADMIN, POLICY_EDITOR, role_required
from policies import audit, presets
from policies.console import initial_model, run_console
from policies.diffing import diff_documents
from policies.documents import (
    DocumentError,
    import_as_new_policy,
    import_into_draft,
    parse_document,
    version_document,
)
from policies.forms import (
    BLANK_PRESET,
    ConsoleForm,
    ImportForm,
    PolicyCreateForm,
    PublishForm,
    name_taken_problem,
    unique_slug,
)
from policies.models import Policy, PolicyVersion
from policies.rendering import model_input

editor_required = role_required(ADMIN, POLICY_EDITOR)
# htmx listens for this event to refresh the draft status and the model input.
DRAFT_CHANGED = "draft-changed"
PUBLISH_REFUSAL_KEY = "policies.publish_refusal"


# --------------------------------------------------------------------------- helpers


def _policy(slug: str) -> Policy:
    return get_object_or_404(Policy.objects.select_related("production_model", "owner"), slug=slug)


def _version(policy: Policy, ref: str | int | None) -> PolicyVersion:
    """``ref``: a version number, or "draft"."""
    if ref in (None, "", "draft"):
        return policy.draft()
    try:
        number = int(ref)
    except (TypeError, ValueError):
        raise Http404(f"No version {ref!r}.") from None
    return get_object_or_404(PolicyVersion, policy=policy, number=number)


def _draft_has_changes(policy: Policy, draft: PolicyVersion) -> bool:
    latest = policy.latest_version()
    if latest is None:
        return True
    return not diff_documents(version_document(latest), version_document(draft)).is_empty


def _changed(response: HttpResponse) -> HttpResponse:
    response["HX-Trigger"] = DRAFT_CHANGED
    return response


def _console_form(policy: Policy, version: PolicyVersion) -> ConsoleForm:
    model = initial_model(policy)
    return ConsoleForm(initial={"version": "draft" if version.is_draft else version.number, "model": model})


# --------------------------------------------------------------------------- list, create, import


def _list_rows() -> list[dict[str, Any]]:
    rows = []
    for policy in Policy.objects.select_related("production_model").prefetch_related("versions"):
        numbers = [v.number for v in policy.versions.all() if v.number]
        rows.append({"policy": policy, "latest": max(numbers) if numbers else None, "serving": serving(policy)})
    return rows


@require_GET
def policy_list(request: HttpRequest) -> HttpResponse:
    return render(request, "policies/list.html", {"rows": _list_rows(), "form": PolicyCreateForm()})


@require_http_methods(["GET", "HEAD", "POST"])
@editor_required
def policy_create(request: HttpRequest) -> HttpResponse:
    """POST creates; GET (a bookmark, a typed URL) goes to the form on the list page."""
    if request.method != "POST":
        return redirect(reverse("policies:list") + "#create-policy")
    form = PolicyCreateForm(request.POST)
    if not form.is_valid():
        return render(request, "policies/list.html", {"rows": _list_rows(), "form": form}, status=400)
    data = form.cleaned_data
    name = data["name"].strip()
    preset = None if data["preset"] == BLANK_PRESET else data["preset"]
    if preset is None:
        spec = presets.PolicySpec(name=name, categories=())
    else:
        spec = presets.preset_spec(preset)
        name = name or presets.preset_title(preset)
    try:
        with transaction.atomic():
            policy = Policy.create_from_spec(
                spec,
                slug=data["slug"] or unique_slug(name),
                name=name,
                description=data["description"].strip() or spec.description,
                owner=request.user,
                preset=preset,
            )
    except IntegrityError:
        # Another editor took the name (or slug) a moment ago.
        form.add_error("name", name_taken_problem(name) or "A policy with this name or slug was just created; choose another.")
        return render(request, "policies/list.html", {"rows": _list_rows(), "form": form}, status=400)
    audit.created(request.user, policy, f"preset {preset}" if preset else "blank")
    served = serving(policy)
    messages.success(request, f"Created {policy.name}, served by {served.label}. Edit the draft, then publish version 1.")
    return redirect("policies:editor", slug=policy.slug)


def _import_errors_page(request: HttpRequest, form: ImportForm, errors: list, policy: Policy | None) -> HttpResponse:
    return render(request, "policies/import.html", {"form": form, "errors": errors, "policy": policy}, status=400)


@editor_required
def policy_import(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """Import a Policy JSON file as a new policy, or (with ``slug``) into that policy's draft."""
    policy = _policy(slug) if slug else None
    if request.method != "POST":
        return render(request, "policies/import.html", {"form": ImportForm(), "policy": policy})
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "policies/import.html", {"form": form, "policy": policy}, status=400)
    document, errors = parse_document(form.content())
    if document is None:
        return _import_errors_page(request, form, errors, policy)
    new_name = (form.cleaned_data.get("name") or "").strip()
    if policy is None and new_name:
        document = replace(document, name=new_name)
    name_problem = name_taken_problem(document.name, policy)
    if name_problem:
        where = "the name above" if policy is None else '"name" in the file'
        problem = DocumentError("name", f"{name_problem} Change {where} and import again.")
        return _import_errors_page(request, form, [problem], policy)
    if policy is not None:
        before = [c.code for c in policy.draft().categories.all()]
        import_into_draft(policy, document)
        audit.draft_edited(request.user, policy, "imported a file into the draft",
                           before={"categories": before}, after={"categories": [c["code"] for c in document.categories]})
        messages.success(request, f"Imported {len(document.categories)} categories into the draft of {policy.name}.")
        return redirect("policies:editor", slug=policy.slug)
    slug_value = (form.cleaned_data.get("slug") or "").strip() or document.slug
    if slug_value and Policy.objects.filter(slug=slug_value).exists():
        problem = DocumentError("slug", f"a policy with slug {slug_value!r} already exists; choose another slug above")
        return _import_errors_page(request, form, [problem], None)
    with transaction.atomic():
        policy = import_as_new_policy(document, slug_value or unique_slug(document.name), owner=request.user)
        audit.created(request.user, policy, "imported from a file")
    messages.success(request, f"Imported {policy.name} as a draft with {len(document.categories)} categories.")
    return redirect("policies:editor", slug=policy.slug)


# --------------------------------------------------------------------------- reading


@require_GET
def policy_detail(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    versions = list(policy.versions.filter(number__isnull=False).select_related("published_by").order_by("-number"))
    for version in versions:
        version.category_count = version.categories.count()
    current = versions[0] if versions else policy.draft()
    context = {
        "policy": policy,
        "versions": versions,
        "current": current,
        "categories": current.categories.all(),
        "draft_has_changes": _draft_has_changes(policy, policy.draft()),
        "serving": serving(policy),
    }
    return render(request, "policies/detail.html", context)


@require_GET
def version_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    policy = _policy(slug)
    version = _version(policy, number)
    latest = policy.latest_version()
    context = {
        "policy": policy,
        "version": version,
        "categories": version.categories.all(),
        "is_latest": latest is not None and latest.pk == version.pk,
        "previous": policy.versions.filter(number__lt=version.number).order_by("-number").first(),
        "console_form": _console_form(policy, version),
    }
    return render(request, "policies/version.html", context)


@require_GET
def diff_view(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    latest = policy.latest_version()
    default_new = "draft"
    default_old = str(latest.number) if latest else "draft"
    old_ref, new_ref = request.GET.get("old", default_old), request.GET.get("new", default_new)
    old, new = _version(policy, old_ref), _version(policy, new_ref)
    choices = [("draft", "Draft")] + [
        (str(n), f"Version {n}") for n in policy.versions.filter(number__isnull=False).order_by("-number").values_list("number", flat=True)
    ]
    context = {
        "policy": policy,
        "old": old,
        "new": new,
        "old_ref": old_ref,
        "new_ref": new_ref,
        "choices": choices,
        "diff": diff_documents(version_document(old), version_document(new)),
    }
    return render(request, "policies/diff.html", context)


@require_GET
def export_version(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    version = _version(policy, request.GET.get("version") or (policy.latest_version() or policy.draft()).number)
    document = version_document(version)
    response = JsonResponse(document, json_dumps_params={"indent": 2, "ensure_ascii": False})
    suffix = f"v{version.number}" if version.number else "draft"
    response["Content-Disposition"] = f'attachment; filename="{policy.slug}-{suffix}.json"'
    return response


@require_GET
def model_input_view(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    version = _version(policy, request.GET.get("version", "draft"))
    mode = request.GET.get("mode") if request.GET.get("mode") in ("fast", "reason") else "fast"
    rendered = model_input(version.to_spec(), request.GET.get("prompt", ""), request.GET.get("response", ""), mode)
    return render(request, "policies/partials.html#model-input", {"rendered": rendered, "version": version, "policy": policy})


@require_POST
def console_run(request: HttpRequest, slug: str) -> HttpResponse:
    """Judge one request synchronously; every signed-in user may test (it changes nothing)."""
    policy = _policy(slug)
    form = ConsoleForm(request.POST)
    if not form.is_valid():
        return render(request, "policies/partials.html#console-result", {"form": form, "result": None}, status=400)
    version = _version(policy, form.cleaned_data["version"])
    if not version.categories.exists() and version.is_draft:
        form.add_error(None, "The draft has no categories yet: add one first.")
        return render(request, "policies/partials.html#console-result", {"form": form, "result": None}, status=400)
    data = form.cleaned_data
    result = run_console(version, data["prompt"], data["response"], data["mode"], data["model"])
    spec = version.to_spec()
    names = {c.code: c.name for c in spec.categories}
    context = {"form": form, "result": result, "version": version, "category_names": names}
    return render(request, "policies/partials.html#console-result", context, status=200 if not result.error else 422)


@require_POST
@editor_required
def publish(request: HttpRequest, slug: str) -> HttpResponse:
    policy = _policy(slug)
    form = PublishForm(request.POST)
    draft = policy.draft()
    problem = None
    if not form.is_valid():
        problem = " ".join(e for errors in form.errors.values() for e in errors)
    elif not draft.categories.exists():
        problem = "Add at least one category before publishing."
    elif not _draft_has_changes(policy, draft):
        problem = f"The draft is identical to version {policy.latest_version().number}; there is nothing to publish."
    else:
        problem = name_taken_problem(draft.spec_name, policy)
    if problem:
        # Back to the editor (never left at /draft/publish/): the reason on top and beside the
        # button, the change note as typed.
        messages.error(request, f"Not published: {problem}")
        request.session[PUBLISH_REFUSAL_KEY] = {"note": request.POST.get("change_note", "")[:2000], "error": problem}
        return redirect(reverse("policies:editor", kwargs={"slug": policy.slug}) + "#publish")
    try:
        with transaction.atomic():
            version = policy.publish(request.user, change_note=form.cleaned_data["change_note"].strip())
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("policies:editor", slug=policy.slug)
    except IntegrityError:
        messages.error(request, f"Not published: {name_taken_problem(draft.spec_name, policy) or 'another policy has this name.'}")
        return redirect("policies:editor", slug=policy.slug)
    messages.success(request, f"Published version {version.number}.")
    return redirect("policies:version", slug=policy.slug, number=version.number)


@require_POST
@editor_required
def rollback(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    policy = _policy(slug)
    target = _version(policy, number)
    latest = policy.latest_version()
    if latest and latest.pk == target.pk:
        messages.error(request, f"Version {number} is already the latest version.")
        return redirect("policies:version", slug=policy.slug, number=number)
    problem = name_taken_problem(target.spec_name, policy)
    if problem:
        messages.error(request, f"Not rolled back: version {number} is named {target.spec_name!r}. {problem}")
        return redirect("policies:version", slug=policy.slug, number=number)
    version = policy.rollback_to(target, request.user)
    messages.success(request, f"Published version {version.number}, equal to version {number}.")
    return redirect(reverse("policies:diff", kwargs={"slug": policy.slug}) + f"?old={latest.number if latest else ''}&new={version.number}")
