"""The model registry pages (/models/): versions with status, metrics and provenance;
compare a candidate with production on the same records, per file, task and category;
evaluate both on the same records; promote (behind the regression gate); force a refused
promotion and roll back, each after a confirmation with a required reason.

The decisions themselves live in ``trainer.registry``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from guard.calibration import of_version
from guard.models import ModelVersion
from guardsite.roles import ADMIN, POLICY_EDITOR, can_edit_policies, is_admin, role_required
from trainer import registry
from trainer.models import RegistryEvent, TrainingJob

REASON_MAX = 2000
# The list compares the newest candidates with production on the same records (a bootstrap each).
CANDIDATES_GATED = 10

HEADLINE_TASKS = ("prompt", "response", "refusal")


def _headline(version: ModelVersion) -> dict[str, Any]:
    """F1 per task and category micro F1 from a version's report (empty when it has none)."""
    report = (version.metrics or {}).get("report")
    if not isinstance(report, dict):
        return {}
    tasks = report.get("tasks", {}) or {}
    values: dict[str, Any] = {task: tasks[task].get("f1") if isinstance(tasks.get(task), dict) and tasks[task].get("n") else None
                              for task in HEADLINE_TASKS}
    categories = report.get("categories") or {}
    values["categories"] = categories.get("micro_f1") if categories.get("per_category") else None
    values["n"] = report.get("n")
    values["records"] = registry.record_set(report)
    return values


def adapter_shape(version: ModelVersion) -> dict[str, Any]:
    """LoRA rank and adapted layers as saved in the adapter's own ``adapter_config.json`` (the truth
    about what runs); empty for a full model or an unreadable config."""
    if not version.adapter_path:
        return {}
    try:
        config = json.loads((Path(version.adapter_path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    layers = config.get("layers_to_transform")
    layers = sorted(int(n) for n in layers) if isinstance(layers, list) else []
    return {"rank": config.get("r"), "alpha": config.get("lora_alpha"), "layers": layers,
            "layer_count": len(layers), "layer_span": f"{layers[0]}-{layers[-1]}" if layers else ""}


def _hyperparameters(provenance: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    """The recorded hyperparameters, with LoRA rank and layers taken from the saved adapter."""
    values = dict(provenance.get("hyperparameters") or {})
    if values and shape.get("rank"):
        values["lora_rank"] = shape["rank"]
        values["lora_layers"] = shape["layer_count"] or "all"
    return values


def _own_evaluation(version: ModelVersion) -> dict[str, Any]:
    """The version's own report, for its page: per task and per file F1 (empty without a report)."""
    report = (version.metrics or {}).get("report")
    if not isinstance(report, dict):
        return {}
    tasks = [(task, report.get("tasks", {}).get(task) or {}) for task in HEADLINE_TASKS]
    files = sorted((report.get("files") or {}).items())
    if len(files) == 1:
        files = []  # one file: its rows are the "all" rows
    return {
        "report": report,
        "tasks": [(task, scores) for task, scores in tasks if scores.get("n")],
        "files": [(name, [(task, (scores.get(task) or {})) for task in HEADLINE_TASKS]) for name, scores in files],
        "categories": report.get("categories") or {},
    }


@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    versions = list(ModelVersion.objects.all())
    production = registry.current_production()
    jobs = {job.candidate_id: job for job in TrainingJob.objects.filter(candidate__in=versions)}
    gated = {v.pk for v in versions if v.status == ModelVersion.Status.CANDIDATE}
    gated = set(sorted(gated, reverse=True)[:CANDIDATES_GATED])
    rows = [{"version": v, "headline": _headline(v), "job": jobs.get(v.pk),
             "gate": registry.compare(v, production) if v.pk in gated else None,
             "recipe": (v.provenance or {}).get("recipe"), "data": _data_names(v)} for v in versions]
    return render(request, "registry/model_list.html", {
        "rows": rows,
        "production": production,
        "events": RegistryEvent.objects.select_related("model_version", "user")[:20],
        "rollback_targets": registry.rollback_candidates(),
        "is_admin": is_admin(request.user),
    })


def _data_names(version: ModelVersion) -> list[str]:
    data = (version.provenance or {}).get("data") or {}
    names = [f.get("name", "") for f in data.get("files", []) if isinstance(f, dict)]
    names += list((data.get("reviewed") or {}).keys())
    return names


@require_GET
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    version = get_object_or_404(ModelVersion, name=name)
    return render(request, "registry/model_detail.html", _detail_context(request, version))


def _detail_context(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    against_name = request.GET.get("against", "").strip()
    against = ModelVersion.objects.filter(name=against_name).exclude(pk=version.pk).first() if against_name else None
    comparison = registry.compare(version, against)
    provenance = version.provenance or {}
    files = [f for f in ((provenance.get("data") or {}).get("files") or []) if isinstance(f, dict)]
    shape = adapter_shape(version)
    return {
        "adapter_shape": shape,
        "hyperparameters": _hyperparameters(provenance, shape),
        "own": _own_evaluation(version),
        "version": version,
        "production": registry.current_production(),
        "comparison": comparison,
        "suite_rows": [r for r in comparison.rows if r.suite != "all"],
        "overall_rows": [r for r in comparison.rows if r.suite == "all"],
        "category_summary": [r for r in comparison.category_rows if r.suite == "categories"] + comparison.policy_following_rows,
        "category_rows": [r for r in comparison.category_rows if r.suite == "category"][:40],
        "provenance": provenance,
        "data_files": files,
        "reviewed": (provenance.get("data") or {}).get("reviewed") or {},
        "mix": ((provenance.get("data") or {}).get("mix") or {}).get("after") or {},
        "job": TrainingJob.objects.filter(candidate=version).first(),
        "events": RegistryEvent.objects.filter(model_version=version).select_related("user")[:20],
        "others": ModelVersion.objects.exclude(pk=version.pk).order_by("-created_at")[:50],
        "is_admin": is_admin(request.user),
        "can_evaluate": can_edit_policies(request.user),
        "served": registry.has_served(version),
        "headline": _headline(version),
        "calibration": of_version(version.metrics, Path(version.adapter_path) if version.adapter_path else None),
    }


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def promote(request: HttpRequest, name: str) -> HttpResponse:
    """POST: promote behind the gate; a refusal goes back to the model page with the reason (GET: the page)."""
    version = get_object_or_404(ModelVersion, name=name)
    if request.method == "GET":
        return redirect("registry:model", name=version.name)
    try:
        event = registry.promote(version, user=request.user, note=_reason(request))
    except registry.PromotionRefused as refusal:
        messages.error(request, f"Promotion refused: {refusal}. An admin may force it, with a reason.")
        return redirect("registry:model", name=version.name)
    except ValueError as error:
        messages.error(request, f"Promotion refused: {error}.")
        return redirect("registry:model", name=version.name)
    _promoted_message(request, version, event)
    return redirect("registry:model", name=version.name)


def _promoted_message(request: HttpRequest, version: ModelVersion, event: RegistryEvent) -> None:
    switched = event.details.get("policies") or []
    messages.info(request, f"{version.name} is now the production model"
                  + (" (forced past the regression gate)" if event.action == RegistryEvent.Action.FORCED_PROMOTE else "")
                  + (f"; policies switched: {', '.join(switched)}" if switched else "") + ".")


def _reason(request: HttpRequest) -> str:
    return (request.POST.get("reason") or request.POST.get("note") or "").strip()[:REASON_MAX]


def _confirm(request: HttpRequest, context: dict[str, Any], error: str = "") -> HttpResponse:
    """The confirmation page of a force or a rollback: what will change, and a required reason."""
    return render(request, "registry/confirm.html", {"error": error, "production": registry.current_production(),
                                                     "reason": _reason(request), **context}, status=400 if error else 200)


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def force_promote(request: HttpRequest, name: str) -> HttpResponse:
    version = get_object_or_404(ModelVersion, name=name)
    if version.status == ModelVersion.Status.PRODUCTION:
        messages.info(request, f"{version.name} is already the production model.")
        return redirect("registry:model", name=version.name)
    comparison, problem = registry.gate(version)
    context = {"action": "force", "version": version, "comparison": comparison, "problem": problem,
               "post_url": reverse("registry:force", args=[version.name])}
    if request.method == "GET":
        return _confirm(request, context)
    try:
        event = registry.promote(version, user=request.user, force=True, note=_reason(request))
    except registry.ReasonRequired as error:
        return _confirm(request, context, str(error))
    except ValueError as error:
        messages.error(request, f"Promotion refused: {error}.")
        return redirect("registry:model", name=version.name)
    _promoted_message(request, version, event)
    return redirect("registry:model", name=version.name)


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def rollback(request: HttpRequest, name: str) -> HttpResponse:
    version = get_object_or_404(ModelVersion, name=name)
    return _rollback(request, version)


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def rollback_to_embedded(request: HttpRequest) -> HttpResponse:
    return _rollback(request, None)


def _rollback(request: HttpRequest, version: ModelVersion | None) -> HttpResponse:
    label = version.name if version is not None else "the embedded base (Gemma 3 270M, untrained)"
    if version is not None and not registry.has_served(version):
        return HttpResponse(f"{version.name} was never in production: promote it instead of rolling back to it.", status=409)
    context = {"action": "rollback", "version": version, "label": label,
               "post_url": reverse("registry:rollback", args=[version.name]) if version else reverse("registry:rollback_embedded")}
    if request.method == "GET":
        return _confirm(request, context)
    try:
        registry.rollback(version, user=request.user, note=_reason(request))
    except registry.ReasonRequired as error:
        return _confirm(request, context, str(error))
    except ValueError as error:
        messages.error(request, f"Not rolled back: {error}.")
        return redirect("registry:models")
    messages.info(request, f"Rolled back: {label} is the production model again.")
    return redirect("registry:models")


@require_POST
@role_required(POLICY_EDITOR)
def evaluate_both(request: HttpRequest, name: str) -> HttpResponse:
    """Queue evaluations of this model and production on the same records (the shipped evaluation set)."""
    version = get_object_or_404(ModelVersion, name=name)
    try:
        mine, theirs = registry.evaluate_both(version, user=request.user)
    except ValueError as error:
        messages.error(request, str(error))
        return redirect("registry:model", name=version.name)
    messages.info(request, f"Evaluations #{mine.pk} ({mine.model}) and #{theirs.pk} ({theirs.model}) queued on the same records; "
                  "the comparison and the gate use them once both are done.")
    return redirect("registry:model", name=version.name)
