"""Evaluation runs on the ``gpu-infer`` queue (routed by ``evaluation.tasks.*``)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from evaluation.models import EvaluationRun

log = logging.getLogger(__name__)
# Write progress to the database at most this often (a batch can take well under a second).
PROGRESS_INTERVAL_S = 1.0


@shared_task(name="evaluation.tasks.run_evaluation")
def run_evaluation(run_id: int) -> str:
    """Run one evaluation and store its report on the row.

    Idempotent: a finished run is left alone; a run re-delivered after its
    worker died (acks_late) starts again from the beginning, which is safe
    because the harness has no side effects besides the final report.
    """
    from evaluation.harness import evaluate

    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            log.warning("evaluation run %s does not exist", run_id)
            return "missing"
        if run.status in (EvaluationRun.Status.DONE, EvaluationRun.Status.FAILED):
            return run.status
        run.status = EvaluationRun.Status.RUNNING
        run.started_at = timezone.now()
        run.attempts += 1
        run.done = 0
        run.error = ""
        run.save(update_fields=["status", "started_at", "attempts", "done", "error"])

    last_write = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_write
        now = time.monotonic()
        if done in (0, total) or now - last_write >= PROGRESS_INTERVAL_S:
            EvaluationRun.objects.filter(pk=run_id).update(done=done, total=total)
            last_write = now

    try:
        report = evaluate(
            run.data,
            run.model or None,
            mode=run.mode,
            policy=run.policy,
            limit=run.limit,
            batch_size=run.batch_size,
            progress=progress,
        )
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run, shown in the UI
        log.exception("evaluation run %s failed", run_id)
        EvaluationRun.objects.filter(pk=run_id).update(
            status=EvaluationRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return EvaluationRun.Status.FAILED
    EvaluationRun.objects.filter(pk=run_id).update(
        status=EvaluationRun.Status.DONE, report=report, done=report["n"], total=report["n"], finished_at=timezone.now()
    )
    return EvaluationRun.Status.DONE
