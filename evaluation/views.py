"""Evaluation pages: start a run, list runs (htmx polling), run detail, compare two runs."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluation import compare
from evaluation.charts import bar_chart
from evaluation.forms import StartEvaluationForm
from evaluation.metrics import TASKS
from evaluation.models import EvaluationRun
from evaluation.tasks import run_evaluation
from guardsite.roles import POLICY_EDITOR, can_edit_policies, role_required

RUNS_SHOWN = 100


def _list_context(request: HttpRequest, form: StartEvaluationForm | None = None) -> dict[str, Any]:
    runs = list(EvaluationRun.objects.select_related("created_by")[:RUNS_SHOWN])
    finished = [run for run in runs if run.status == EvaluationRun.Status.DONE]
    can_start = can_edit_policies(request.user)
    return {
        "runs": runs,
        "any_active": any(run.is_active for run in runs),
        "finished": finished,
        "can_start": can_start,
        "form": form if form is not None else (_start_form(request) if can_start else None),
    }


def _start_form(request: HttpRequest) -> StartEvaluationForm:
    """A fresh start form; ``?model=NAME`` (the model pages' "Evaluate it again") preselects a model."""
    form = StartEvaluationForm()
    wanted = request.GET.get("model", "")
    if wanted and wanted in dict(form.fields["model"].choices):
        form.initial["model"] = wanted
    return form


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    if request.htmx:
        return render(request, "evaluation/run_list.html#run-table", context)
    return render(request, "evaluation/run_list.html", context)


@require_POST
@role_required(POLICY_EDITOR)
def start_run(request: HttpRequest) -> HttpResponse:
    form = StartEvaluationForm(request.POST)
    if not form.is_valid():
        return render(request, "evaluation/run_list.html", _list_context(request, form), status=400)
    with transaction.atomic():
        run = EvaluationRun.objects.create(
            model=form.cleaned_data["model"] or "",
            mode=form.cleaned_data["mode"],
            policy=form.cleaned_data["policy"],
            data=form.data_paths(),
            limit=form.cleaned_data["limit"],
            batch_size=form.cleaned_data["batch_size"],
            policy_following=form.cleaned_data["policy_following"],
            created_by=request.user,
        )
        transaction.on_commit(lambda: run_evaluation.delay(run.pk))
    messages.info(request, f"Evaluation #{run.pk} queued.")
    return redirect("evaluation:detail", pk=run.pk)


def _report_charts(report: dict[str, Any]) -> list:
    charts = []
    tasks = [t for t in TASKS if report["tasks"][t]["n"]]
    if tasks:
        charts.append(bar_chart("F1 per task (%)", tasks, [(report["model"], [report["tasks"][t]["f1"] for t in tasks])]))
    for task in tasks:
        files = [name for name, scores in sorted(report["files"].items()) if scores[task]["n"]]
        if files:
            values = [report["files"][name][task]["f1"] for name in files]
            charts.append(bar_chart(f"{task} F1 per file (%)", files, [(report["model"], values)]))
    return charts


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(EvaluationRun.objects.select_related("created_by"), pk=pk)
    context: dict[str, Any] = {"run": run}
    if run.report:
        report = run.report
        per_category = sorted(report["categories"]["per_category"].items(), key=lambda kv: (-kv[1]["n"], kv[0]))
        context.update(
            report=report,
            tasks=[(t, report["tasks"][t]) for t in TASKS],
            files=[(name, [(t, scores[t]) for t in TASKS]) for name, scores in sorted(report["files"].items())],
            per_category=per_category,
            charts=_report_charts(report),
            others=EvaluationRun.objects.filter(status=EvaluationRun.Status.DONE).exclude(pk=run.pk)[:RUNS_SHOWN],
        )
    if request.htmx and not run.is_active and request.htmx.target == "run-status":
        # The run just finished: reload the whole page so the report appears.
        response = HttpResponse()
        response["HX-Refresh"] = "true"
        return response
    if request.htmx:
        return render(request, "evaluation/run_detail.html#run-status", context)
    return render(request, "evaluation/run_detail.html", context)


def _parse_run_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@require_GET
def compare_runs(request: HttpRequest) -> HttpResponse:
    finished = list(EvaluationRun.objects.filter(status=EvaluationRun.Status.DONE)[:RUNS_SHOWN])
    a_id, b_id = _parse_run_id(request.GET.get("a")), _parse_run_id(request.GET.get("b"))
    context: dict[str, Any] = {"finished": finished, "a_id": a_id, "b_id": b_id}
    if a_id is None or b_id is None:
        if request.GET.get("a") or request.GET.get("b"):
            context["error"] = "Choose two finished runs (a and b are run numbers)."
            return render(request, "evaluation/compare.html", context, status=400)
        return render(request, "evaluation/compare.html", context)
    runs = {run.pk: run for run in EvaluationRun.objects.filter(pk__in=[a_id, b_id])}
    missing = [str(pk) for pk in (a_id, b_id) if pk not in runs]
    if missing:
        context["error"] = f"No evaluation run #{', #'.join(missing)}."
        return render(request, "evaluation/compare.html", context, status=404)
    run_a, run_b = runs[a_id], runs[b_id]
    unfinished = [f"#{run.pk}" for run in (run_a, run_b) if not run.report]
    if unfinished:
        context["error"] = f"Run {' and '.join(unfinished)} has no report yet (only finished runs can be compared)."
        return render(request, "evaluation/compare.html", context, status=400)
    a, b = run_a.report, run_b.report
    name_a, name_b = f"A: #{run_a.pk} {a['model']} ({a['mode']})", f"B: #{run_b.pk} {b['model']} ({b['mode']})"

    def chart(title: str, rows: list[compare.Row]) -> Any:
        return bar_chart(title, [r.label for r in rows], [(name_a, [r.a for r in rows]), (name_b, [r.b for r in rows])])

    tasks = compare.task_rows(a, b)
    files = compare.file_rows(a, b)
    categories = compare.category_rows(a, b)
    charts = [chart("F1 per task (%)", tasks)] if tasks else []
    charts += [chart(f"{task} F1 per file (%)", rows) for task, rows in files.items()]
    if categories:
        top = categories[: compare.MAX_CHART_CATEGORIES]
        charts.append(chart(f"category F1 (%), {len(top)} most frequent", top))
    context.update(
        run_a=run_a, run_b=run_b, name_a=name_a, name_b=name_b, headline=compare.headline_rows(a, b),
        tasks=tasks, files=files, categories=categories, charts=charts,
    )
    return render(request, "evaluation/compare.html", context)
