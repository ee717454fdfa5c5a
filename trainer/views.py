"""Training pages: list, start (also from a policy page: /training/new?policy=<slug>),
live progress (htmx polling), cancel, resume."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from guardsite.roles import POLICY_EDITOR, can_edit_policies, role_required
from trainer import mix as mixing
from trainer.charts import training_charts
from trainer.forms import StartTrainingForm, reviewed_policy_choices
from trainer.models import STALE_AFTER_SECONDS, TrainingJob
from trainer.tasks import enqueue
from trainer.waiting import wait_reason

JOBS_SHOWN = 100


@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = list(TrainingJob.objects.select_related("created_by", "candidate")[:JOBS_SHOWN])
    context = {"jobs": jobs, "any_active": any(job.is_active for job in jobs), "can_start": can_edit_policies(request.user)}
    if request.htmx:
        return render(request, "trainer/job_list.html#job-table", context)
    return render(request, "trainer/job_list.html", context)


def _reviewed_count(slug: str) -> dict[str, int] | None:
    """The policy's reviewed items by label (None without a policy)."""
    if not slug:
        return None
    from trainer.forms import reviewed_labels

    counts = reviewed_labels(slug)
    return {"total": sum(counts.values()), **counts} if counts else None


@require_http_methods(["GET", "POST"])
@role_required(POLICY_EDITOR)
def start_job(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        slug = request.GET.get("policy", "").strip()
        form = StartTrainingForm(initial={"policy": slug, "reviewed": bool(slug)})
        if slug and slug not in _known_slugs():
            return render(request, "trainer/job_form.html", {"form": form, "policy": "", "unknown_policy": slug,
                                                             "reviewed_policies": reviewed_policy_choices()}, status=404)
        return render(request, "trainer/job_form.html", _form_context(form, slug))
    form = StartTrainingForm(request.POST)
    if not form.is_valid():
        return render(request, "trainer/job_form.html", _form_context(form, request.POST.get("policy", "")), status=400)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            recipe=form.cleaned_data["recipe"],
            data_sources=form.data_sources(),
            policy=form.render_policy(),
            base_model=form.cleaned_data["base_model"],
            init_adapter=form.init_adapter_path(),
            hyperparameters=form.hyperparameters(),
            total_steps=form.cleaned_data["max_steps"],
            created_by=request.user,
        )
        enqueue(job)
    # No flash message: the job page says "queued" inside the part it polls, so the note goes when the job starts.
    return redirect("trainer:detail", pk=job.pk)


def _form_context(form: StartTrainingForm, slug: str) -> dict[str, Any]:
    """From a policy page (``slug``): that policy's reviewed items. Otherwise (Training -> New, the
    overview's link) a choice of the policy whose reviewed items to train on."""
    context: dict[str, Any] = {"form": form, "policy": slug, "reviewed_count": _reviewed_count(slug)}
    if not slug:
        context["reviewed_policies"] = reviewed_policy_choices()
    return context


def _known_slugs() -> set[str]:
    from trainer.forms import policy_slugs

    return set(policy_slugs())


def _mix_context(data_mix: dict[str, Any]) -> dict[str, Any]:
    """The realised task x label x source table; jobs built before it was recorded show source x label."""
    if data_mix.get("table"):
        layout = mixing.mix_rows(data_mix["table"])
        tasks = data_mix.get("summary", {}).get("tasks", {})
        return {"mix_columns": [f"{task} {label}" for task, label in layout.columns], "mix_rows": layout.rows,
                "mix_totals": layout.totals, "mix_grand": layout.grand,
                "mix_tasks": [(task, info["n"], round(100 * info["share"], 1), mixing.POSITIVE[task],
                               round(100 * info["positive_share"], 1)) for task, info in tasks.items()]}
    after = data_mix.get("after", {})
    labels = sorted({label for counts in after.values() for label in counts})
    return {"mix_columns": labels,
            "mix_rows": [(source, [counts.get(label, 0) for label in labels], sum(counts.values()))
                         for source, counts in after.items()]}


def _detail_context(request: HttpRequest, job: TrainingJob) -> dict[str, Any]:
    context: dict[str, Any] = {
        "job": job,
        "charts": training_charts(job.metrics, total_steps=job.total_steps),
        "can_control": can_edit_policies(request.user),
        **_mix_context(job.data_mix),
        "training": job.summary.get("training", {}),
        "evaluation": job.summary.get("evaluation", {}),
        "waiting": wait_reason(job),
    }
    if job.candidate is not None:
        from trainer.registry import compare

        comparison = compare(job.candidate)
        if comparison.available:
            # The whole-record tasks, then the policy-following pairs (shown, never gated).
            overall = [r for r in comparison.rows if r.suite == "all"] + comparison.policy_following_rows
            context.update(comparison=comparison, overall_rows=overall)
    return context


@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob.objects.select_related("created_by", "candidate"), pk=pk)
    return render(request, "trainer/job_detail.html", _detail_context(request, job))


@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob.objects.select_related("created_by", "candidate"), pk=pk)
    if request.htmx and job.is_terminal:
        # The poll saw the job end: one full refresh, so nothing on the page (messages, setup) stays stale.
        response = HttpResponse()
        response["HX-Refresh"] = "true"
        return response
    return render(request, "trainer/job_detail.html#progress", _detail_context(request, job))


def _after_action(request: HttpRequest, job: TrainingJob) -> HttpResponse:
    if request.htmx:
        return render(request, "trainer/job_detail.html#progress", _detail_context(request, job))
    return redirect("trainer:detail", pk=job.pk)


@require_POST
@role_required(POLICY_EDITOR)
def cancel_job(request: HttpRequest, pk: int) -> HttpResponse:
    with transaction.atomic():
        job = get_object_or_404(TrainingJob.objects.select_for_update(), pk=pk)
        if job.status == TrainingJob.Status.QUEUED:
            # Not started: nothing to checkpoint; the task skips a cancelled job.
            job.status = TrainingJob.Status.CANCELLED
            job.finished_at = timezone.now()
        elif job.status == TrainingJob.Status.RUNNING:
            # The trainer saves a checkpoint and stops at its next step.
            job.status = TrainingJob.Status.CANCELLING
        elif job.status == TrainingJob.Status.CANCELLING and job.is_stale:
            # Nobody has written progress for a long time: the worker is gone. Keep its last checkpoint.
            from trainer.recipes import latest_checkpoint

            job.status = TrainingJob.Status.CANCELLED
            job.finished_at = timezone.now()
            job.checkpoint_path = (latest_checkpoint(job.output_dir) if job.output_dir else None) or job.checkpoint_path
            job.log_tail += f"\n{timezone.now():%H:%M:%S} no progress for {STALE_AFTER_SECONDS // 60} minutes: cancelled without the worker"
        else:
            return HttpResponse(f"Job #{job.pk} is {job.status}: only a queued or running job can be cancelled.", status=409)
        job.save(update_fields=["status", "finished_at", "checkpoint_path", "log_tail", "updated_at"])
    return _after_action(request, job)


@require_POST
@role_required(POLICY_EDITOR)
def resume_job(request: HttpRequest, pk: int) -> HttpResponse:
    with transaction.atomic():
        job = get_object_or_404(TrainingJob.objects.select_for_update(), pk=pk)
        if not job.can_resume:
            return HttpResponse(f"Job #{job.pk} is {job.status}: only a cancelled or failed job can be resumed.", status=409)
        job.status = TrainingJob.Status.QUEUED
        job.stage = TrainingJob.Stage.WAITING
        job.error = ""
        job.finished_at = None
        job.save(update_fields=["status", "stage", "error", "finished_at", "updated_at"])
        enqueue(job)
    return _after_action(request, job)


@require_http_methods(["GET", "POST"])
@role_required(POLICY_EDITOR)
def teach_policy(request: HttpRequest, slug: str) -> HttpResponse:
    """Refit a policy's categories from its reviews (POST), and show the scores before and after."""
    from policies.models import Policy
    from trainer.teaching import scores_before_after, teach

    policy = get_object_or_404(Policy, slug=slug)
    if request.method == "POST":
        started = timezone.now()
        snapshot = teach(policy, request.user)
        seconds = (timezone.now() - started).total_seconds()
        messages.info(request, f"Teaching #{snapshot.number}: {snapshot.reviewed_items} reviewed item(s) taught "
                               f"{len(snapshot.examples)} categor{'y' if len(snapshot.examples) == 1 else 'ies'} in {seconds:.1f} s.")
        return redirect("trainer:teach", slug=slug)
    latest = policy.teachings.order_by("-number").first()
    rows = scores_before_after(policy, latest) if latest is not None else []
    return render(request, "trainer/teach.html", {"policy": policy, "latest": latest, "rows": rows,
                                                  "history": policy.teachings.order_by("-number")[:10]})
