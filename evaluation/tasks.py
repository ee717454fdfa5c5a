"""Evaluation runs on the ``gpu-infer`` queue (routed by ``evaluation.tasks.*``).

Reliability: the task writes a heartbeat on its run every few seconds (from a
thread, so a long batch does not starve it). A worker that is SIGKILLed leaves
its message unacknowledged until the broker's visibility timeout (hours), so
``sweep_stale_runs`` (beat, on the ``default`` queue) re-queues runs whose
heartbeat went stale, up to ``MAX_ATTEMPTS``; the task is idempotent (a
finished run is never run again), so a late re-delivery is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from evaluation.models import EvaluationRun

log = logging.getLogger(__name__)
# Write progress to the database at most this often (a batch can take well under a second).
PROGRESS_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 5.0
MAX_ATTEMPTS = 3


def stale_after() -> timedelta:
    return timedelta(seconds=getattr(settings, "EVALUATION_STALE_SECONDS", 60))


class _Heartbeat(threading.Thread):
    def __init__(self, run_id: int) -> None:
        super().__init__(name=f"evaluation-{run_id}-heartbeat", daemon=True)
        self.run_id = run_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_INTERVAL_S):
                try:
                    EvaluationRun.objects.filter(pk=self.run_id, status=EvaluationRun.Status.RUNNING).update(heartbeat_at=timezone.now())
                except Exception as error:  # noqa: BLE001 - a missed beat is not fatal; the next may work
                    log.warning("evaluation %s heartbeat not written: %s", self.run_id, error)
        finally:
            connection.close()  # this thread's own connection


@shared_task(name="evaluation.tasks.run_evaluation")
def run_evaluation(run_id: int) -> str:
    """Run one evaluation and store its report on the row.

    Idempotent: a finished run is left alone; a re-queued run starts again from
    the beginning, which is safe because the harness has no side effects
    besides the final report.
    """
    from evaluation.harness import evaluate

    close_old_connections()
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            log.warning("evaluation run %s does not exist", run_id)
            return "missing"
        if run.status in (EvaluationRun.Status.DONE, EvaluationRun.Status.FAILED):
            return run.status
        run.status = EvaluationRun.Status.RUNNING
        run.started_at = run.heartbeat_at = timezone.now()
        run.attempts += 1
        run.done = 0
        run.error = ""
        run.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "done", "error"])

    last_write = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_write
        now = time.monotonic()
        if done in (0, total) or now - last_write >= PROGRESS_INTERVAL_S:
            EvaluationRun.objects.filter(pk=run_id).update(done=done, total=total, heartbeat_at=timezone.now())
            last_write = now

    heartbeat = _Heartbeat(run_id)
    heartbeat.start()
    try:
        report = evaluate(
            run.data,
            run.model or None,
            mode=run.mode,
            policy=run.policy,
            limit=run.limit,
            batch_size=run.batch_size,
            progress=progress,
            keep_outcomes=True,  # the model registry compares two runs on the same records record by record
        )
        if run.policy_following:
            from evaluation.policy_following import evaluate_policy_following

            judged = int(report["n"])
            report["policy_following"] = evaluate_policy_following(
                run.model or None, mode=run.mode, batch_size=run.batch_size,
                progress=lambda done, total: progress(judged + done, judged + total),
            )
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run, shown in the UI
        log.exception("evaluation run %s failed", run_id)
        EvaluationRun.objects.filter(pk=run_id).update(
            status=EvaluationRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return EvaluationRun.Status.FAILED
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=HEARTBEAT_INTERVAL_S * 2)
    EvaluationRun.objects.filter(pk=run_id).update(
        status=EvaluationRun.Status.DONE, report=report, done=report["n"], total=report["n"], finished_at=timezone.now()
    )
    return EvaluationRun.Status.DONE


def requeue_stale_runs() -> dict[str, int]:
    """Re-queue running runs whose heartbeat went stale (their worker died); fail them after ``MAX_ATTEMPTS``."""
    cutoff = timezone.now() - stale_after()
    requeued = failed = 0
    with transaction.atomic():
        stale = list(
            EvaluationRun.objects.select_for_update(skip_locked=True).filter(
                status=EvaluationRun.Status.RUNNING, heartbeat_at__lt=cutoff
            )
        )
        for run in stale:
            if run.attempts >= MAX_ATTEMPTS:
                run.status = EvaluationRun.Status.FAILED
                run.error = f"the worker was lost {run.attempts} times (killed or out of memory); not retried again"
                run.finished_at = timezone.now()
                run.save(update_fields=["status", "error", "finished_at"])
                failed += 1
                continue
            run.status = EvaluationRun.Status.QUEUED
            run.save(update_fields=["status"])
            transaction.on_commit(lambda pk=run.pk: run_evaluation.delay(pk))
            requeued += 1
    if requeued or failed:
        log.warning("evaluation sweeper: re-queued %d run(s), failed %d", requeued, failed)
    return {"requeued": requeued, "failed": failed}


@shared_task(name="evaluation.sweep_stale_runs")
def sweep_stale_runs() -> dict[str, int]:
    """Beat, every minute. Named outside ``evaluation.tasks.*`` so it is routed to ``default``,
    never behind a long evaluation on gpu-infer."""
    return requeue_stale_runs()
