"""The training job task (queue ``gpu-train``): train -> evaluate -> register a candidate.

Reliability:
* The task re-reads the job from the database and only runs a job that is
  ``queued`` (new or resumed) or ``running`` (a re-delivery after the worker
  died: ``acks_late`` + ``reject_on_worker_lost``), in which case it resumes
  from the newest checkpoint in the job's output directory.
* Every step a TrainerCallback writes ``step``/``metrics`` and reads the
  status: ``cancelling`` makes the trainer save a checkpoint at that step and
  stop; the job becomes ``cancelled`` and can be resumed from that checkpoint.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

# A CPU training run shares 2 cores with the web server and other workers: an
# OpenMP runtime that spins while waiting makes every op wait for a descheduled
# thread (6x slower steps measured). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from celery import shared_task  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from trainer.models import TrainingJob  # noqa: E402

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 80
MAX_METRIC_POINTS = 2000
DEFAULT_EVAL_LIMIT = 50


def job_output_dir(job: TrainingJob) -> Path:
    return Path(settings.TRAINING_OUTPUT_DIR) / f"job-{job.pk}"


class JobProgress:
    """Writes a job's progress to the database; answers "was I asked to stop?"."""

    def __init__(self, job: TrainingJob, resume_step: int) -> None:
        self.job_id = job.pk
        # Steps after the checkpoint are trained again: drop their old points.
        self.metrics: list[dict[str, Any]] = [m for m in job.metrics if int(m.get("step", 0)) <= resume_step]
        self.lines: list[str] = job.log_tail.splitlines()[-LOG_TAIL_LINES:]

    def log(self, message: str) -> None:
        logger.info("training job %s: %s", self.job_id, message)
        stamp = timezone.now().strftime("%H:%M:%S")
        self.lines.extend(f"{stamp} {line}" for line in str(message).splitlines() or [""])
        self.lines = self.lines[-LOG_TAIL_LINES:]
        TrainingJob.objects.filter(pk=self.job_id).update(log_tail="\n".join(self.lines), updated_at=timezone.now())

    def on_entry(self, entry: dict[str, Any]) -> None:
        self.metrics.append(entry)
        if len(self.metrics) > MAX_METRIC_POINTS:
            # Thin the older half so a long run keeps its shape in bounded space.
            half = len(self.metrics) // 2
            self.metrics = self.metrics[:half:2] + self.metrics[half:]
        # The step's log line arrives through ``log`` (recipes.run logs every entry).
        TrainingJob.objects.filter(pk=self.job_id).update(metrics=self.metrics, updated_at=timezone.now())

    def on_step(self, step: int, max_steps: int) -> None:
        TrainingJob.objects.filter(pk=self.job_id).update(step=step, total_steps=max_steps, updated_at=timezone.now())

    def should_stop(self) -> bool:
        return TrainingJob.objects.filter(pk=self.job_id, status=TrainingJob.Status.CANCELLING).exists()


def settings_for(job: TrainingJob, out_dir: Path) -> Any:
    from trainer.settings import TrainSettings

    hp = dict(job.hyperparameters or {})
    known = set(TrainSettings.__dataclass_fields__) - {"recipe", "data", "out_dir", "base", "init_adapter", "policy"}
    return TrainSettings(
        recipe=job.recipe,
        data=list(job.data_sources),
        out_dir=str(out_dir),
        base=job.base_model or "embedded",
        init_adapter=job.init_adapter or "",
        policy=job.policy or "auto",
        **{key: value for key, value in hp.items() if key in known},
    )


def _claim(job_id: int) -> tuple[TrainingJob | None, str | None]:
    """Move the job to running; return it and the checkpoint to resume from (None: from scratch)."""
    from trainer.recipes import latest_checkpoint

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None, None
        if job.status == TrainingJob.Status.CANCELLING:
            job.status = TrainingJob.Status.CANCELLED
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "finished_at", "updated_at"])
            return None, None
        if job.status not in (TrainingJob.Status.QUEUED, TrainingJob.Status.RUNNING):
            return None, None
        out_dir = Path(job.output_dir) if job.output_dir else job_output_dir(job)
        resume = job.checkpoint_path or None
        if job.status == TrainingJob.Status.RUNNING:
            # Re-delivered after a lost worker: continue from what that attempt saved.
            resume = latest_checkpoint(out_dir) or resume
        if resume and not Path(resume).is_dir():
            resume = None
        job.status = TrainingJob.Status.RUNNING
        job.stage = TrainingJob.Stage.DATA
        job.attempts += 1
        job.error = ""
        job.output_dir = str(out_dir)
        job.started_at = job.started_at or timezone.now()
        job.finished_at = None
        job.save()
        return job, resume


def _checkpoint_step(path: str | None) -> int:
    if not path:
        return 0
    tail = Path(path).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@shared_task(name="trainer.tasks.run_training_job", acks_late=True)
def run_training_job(job_id: int) -> str:
    job, resume = _claim(job_id)
    if job is None:
        return "not run"
    progress = JobProgress(job, _checkpoint_step(resume))
    if resume:
        progress.log(f"resuming from {resume}")
    try:
        return _run(job, resume, progress)
    except Exception as error:  # noqa: BLE001 - any failure ends in the job record, never silently
        logger.exception("training job %s failed", job_id)
        progress.log(f"failed: {error}")
        from trainer.recipes import latest_checkpoint

        checkpoint = latest_checkpoint(job.output_dir) or ""
        TrainingJob.objects.filter(pk=job_id).update(
            status=TrainingJob.Status.FAILED, error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc()[-4000:]}",
            finished_at=timezone.now(), checkpoint_path=checkpoint, updated_at=timezone.now(),
        )
        return "failed"
    finally:
        gc.collect()


def _run(job: TrainingJob, resume: str | None, progress: JobProgress) -> str:
    from trainer import recipes
    from trainer.callbacks import make_progress_callback

    if job.recipe == TrainingJob.Recipe.HEADS:
        from trainer.heads_job import run_heads_job

        outcome = run_heads_job(job, progress)
        summary = {**job.summary, "training": outcome.summary}
        TrainingJob.objects.filter(pk=job.pk).update(stage=TrainingJob.Stage.EVALUATING, summary=summary, step=1)
        return _finish(job, outcome, summary, progress)
    out_dir = Path(job.output_dir)
    train_settings = settings_for(job, out_dir)

    def on_data(built: Any) -> None:
        summary = {**job.summary, "data_mix": built.mix, "data_files": [f.name for f in built.files]}
        job.summary = summary
        TrainingJob.objects.filter(pk=job.pk).update(summary=summary, stage=TrainingJob.Stage.TRAINING,
                                                     total_steps=train_settings.max_steps)

    callback = make_progress_callback(progress.on_entry, progress.should_stop, progress.on_step)
    outcome = recipes.run(train_settings, callbacks=[callback], resume_from_checkpoint=resume, teacher=_teacher(progress),
                          log=progress.log, on_data=on_data)
    job.refresh_from_db()
    summary = {**job.summary, "training": outcome.summary}
    # A cancel that arrives after the last step has nothing left to stop: the job finishes.
    if callback.stopped:
        checkpoint = outcome.checkpoint or ""
        progress.log(f"cancelled at step {outcome.steps}; checkpoint {checkpoint or 'none'}")
        TrainingJob.objects.filter(pk=job.pk).update(
            status=TrainingJob.Status.CANCELLED, stage=TrainingJob.Stage.WAITING, checkpoint_path=checkpoint,
            summary=summary, step=outcome.steps, finished_at=timezone.now(),
        )
        return "cancelled"
    TrainingJob.objects.filter(pk=job.pk).update(stage=TrainingJob.Stage.EVALUATING, summary=summary,
                                                 step=outcome.steps, checkpoint_path=outcome.checkpoint or "")
    gc.collect()
    inherit_calibration(job, outcome, progress)
    if not (job.hyperparameters or {}).get("full"):
        from trainer.heads_job import refit_after_training

        heads = refit_after_training(job, Path(outcome.model_dir), progress)
        if heads is not None:
            summary["training"] = {**summary["training"], "heads": heads}
    return _finish(job, outcome, summary, progress)


def _finish(job: TrainingJob, outcome: Any, summary: dict[str, Any], progress: JobProgress) -> str:
    """Evaluate the candidate against production on the same records, register it, record the runs."""
    metrics = evaluate_candidate(job, outcome, progress)
    summary["evaluation"] = {key: value for key, value in metrics.items() if key not in ("report", "baseline")}
    TrainingJob.objects.filter(pk=job.pk).update(stage=TrainingJob.Stage.REGISTERING, summary=summary)
    candidate = register_candidate(job, outcome, metrics)
    progress.log(f"registered candidate model {candidate.name}")
    runs = record_evaluation_runs(job, candidate, metrics)
    if runs:
        summary["evaluation"]["runs"] = runs
        progress.log(f"evaluation runs #{runs['baseline']} ({metrics['baseline']['model']}) and #{runs['candidate']} "
                     f"({candidate.name}) are listed under Evaluations")
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.SUCCEEDED, stage=TrainingJob.Stage.DONE, candidate=candidate, summary=summary,
        finished_at=timezone.now(),
    )
    return "succeeded"


def _teacher(progress: JobProgress) -> Any:
    from trainer.teacher import configured_teacher

    teacher = configured_teacher()
    if teacher is not None:
        progress.log(f"teacher model {teacher.name} writes the explanations (kept where its labels match gold)")
    return teacher


def evaluate_candidate(job: TrainingJob, outcome: Any, progress: JobProgress) -> dict[str, Any]:
    """The candidate and the model it would replace, on the same held-out records (evaluation harness)."""
    from trainer.registry import EMBEDDED_LABEL, current_production

    hp = job.hyperparameters or {}
    limit = int(hp.get("eval_limit") or DEFAULT_EVAL_LIMIT)
    mode = str(hp.get("eval_mode") or "fast")
    batch_size = int(hp.get("eval_batch_size") or 8)
    held_out = [f for f in outcome.held_out_files if f.endswith(".jsonl")]
    shipped = evaluation_suite_files(held_out)
    files = held_out + shipped
    info: dict[str, Any] = {"mode": mode, "limit": limit, "files": [Path(f).name for f in files],
                            "held_out_files": len(held_out), "shipped_files": [Path(f).name for f in shipped]}
    if not files:
        progress.log("no held-out benchmark records and no shipped evaluation set: evaluation skipped")
        return {**info, "skipped": "no held-out benchmark records and no shipped evaluation set"}
    try:
        from evaluation.harness import evaluate
    except ImportError as error:
        progress.log(f"evaluation harness unavailable ({error}): evaluation skipped")
        return {**info, "skipped": f"evaluation harness unavailable: {error}"}
    production = current_production()
    baseline = production.name if production else EMBEDDED_LABEL
    try:
        progress.log(f"evaluating the candidate on {len(held_out)} held-out file(s) (at most {limit} records each)"
                     + (f" and the whole shipped evaluation set ({', '.join(Path(f).name for f in shipped)})" if shipped else "")
                     + f", {mode} mode")
        # The shipped set is evaluated in full whatever the limit: a handful of records cannot carry a 2-point gate.
        options = {"data": files, "mode": mode, "policy": "auto", "limit": limit, "batch_size": batch_size,
                   "file_limits": {Path(f).name: None for f in shipped}, "keep_outcomes": True}
        report = evaluate(model=str(outcome.model_dir), **options)
        progress.log(f"evaluating the baseline {baseline} on the same records")
        baseline_report = evaluate(model=baseline, **options)
        if hp.get("eval_policy_following", True):
            from evaluation.policy_following import evaluate_policy_following

            # Does the candidate still follow custom categories it never saw? Both models, the same pairs.
            progress.log("judging the policy-following pairs with both models")
            pairs = int(getattr(settings, "TRAINER_EVAL_POLICY_FOLLOWING_PAIRS", 0) or 0) or None
            for model, judged in ((str(outcome.model_dir), report), (baseline, baseline_report)):
                judged["policy_following"] = evaluate_policy_following(model, mode=mode, batch_size=batch_size, limit=pairs)
    except Exception as error:  # noqa: BLE001 - a candidate without metrics can still be inspected and force-promoted
        logger.exception("evaluation of training job %s failed", job.pk)
        progress.log(f"evaluation failed: {error}")
        return {**info, "error": f"{type(error).__name__}: {error}"}
    finally:
        # A training worker serves no traffic: free the evaluated models for the next job.
        from guard import runtime

        runtime.reset_backends()
    tasks = report.get("tasks", {})
    progress.log("candidate F1: " + ", ".join(f"{t} {v.get('f1')}" for t, v in tasks.items() if v.get("n")))
    return {**info, "report": report, "baseline": {"model": baseline, "report": baseline_report}}


def inherit_calibration(job: TrainingJob, outcome: Any, progress: JobProgress) -> None:
    """A continued adapter keeps its start adapter's decision thresholds (``calibration.json``).

    Without them the candidate decides by the most probable label while production decides by its
    calibrated thresholds, and the comparison measures the calibration, not the training. A short
    continuation barely moves the scores; after a long one, re-fit with ``manage.py calibrate``."""
    from guard.calibration import CALIBRATION_FILE

    init = (job.init_adapter or "").strip()
    source = Path(init) / CALIBRATION_FILE if init else None
    target = Path(outcome.model_dir) / CALIBRATION_FILE
    if source is None or not source.is_file() or target.exists():
        return
    shutil.copyfile(source, target)
    progress.log(f"kept the start adapter's calibration ({CALIBRATION_FILE}); re-fit it with manage.py calibrate "
                 "after a long run")


def evaluation_suite_files(held_out: list[str]) -> list[str]:
    """The evaluation set shipped with the code (never trained on), unless a held-out file has its name."""
    try:
        from evaluation.datasets import shipped_files
    except ImportError:
        return []
    taken = {Path(f).name for f in held_out}
    return [str(p) for p in shipped_files() if p.name not in taken]


def record_evaluation_runs(job: TrainingJob, candidate: Any, metrics: dict[str, Any]) -> dict[str, int]:
    """The job's two reports as finished evaluation runs, so /evaluations/ lists them and can compare
    them like any other runs. Returns {"candidate": run id, "baseline": run id} (empty without reports)."""
    try:
        from evaluation.models import EvaluationRun
    except ImportError:
        return {}
    report, baseline = metrics.get("report"), (metrics.get("baseline") or {})
    if not isinstance(report, dict) or not isinstance(baseline.get("report"), dict):
        return {}
    now = timezone.now()
    runs = {}
    # The candidate's report names its output directory; the run names the registered version.
    for role, model, body in (("baseline", baseline.get("model") or "", baseline["report"]),
                              ("candidate", candidate.name, {**report, "model": candidate.name})):
        run = EvaluationRun.objects.create(
            model=model, mode=body.get("mode", "fast"), policy=str(body.get("policy") or "auto"), data=list(body.get("data") or []),
            limit=metrics.get("limit"), batch_size=int(body.get("batch_size") or 8), status=EvaluationRun.Status.DONE,
            done=int(body.get("n") or 0), total=int(body.get("n") or 0), report=body, attempts=1, created_by=job.created_by,
            started_at=job.started_at or now, finished_at=now,
        )
        runs[role] = run.pk
    return runs


def register_candidate(job: TrainingJob, outcome: Any, metrics: dict[str, Any]) -> Any:
    from guard.models import ModelVersion

    full = bool((job.hyperparameters or {}).get("full"))
    provenance = {
        **outcome.provenance,
        "job": job.pk,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "command": cli_command(job),
        "training": outcome.summary,
    }
    name = f"{job.recipe}-job{job.pk}"
    candidate, _ = ModelVersion.objects.update_or_create(
        name=name,
        defaults={
            "base_model_path": str(outcome.model_dir) if full else (job.base_model or "embedded"),
            "adapter_path": "" if full else str(outcome.model_dir),
            "provenance": provenance,
            "metrics": metrics,
        },
    )
    return candidate


def cli_command(job: TrainingJob) -> str:
    """The equivalent ``manage.py train`` (``fit_heads``) command (for the model card and reproduction)."""
    hp = job.hyperparameters or {}
    if job.recipe == TrainingJob.Recipe.HEADS:
        return f"python manage.py fit_heads --model {job.output_dir or 'DIR'} --data " + " ".join(job.data_sources)
    parts = ["python manage.py train", f"--recipe {job.recipe}", "--data " + " ".join(job.data_sources),
             f"--base {job.base_model or 'embedded'}"]
    if job.init_adapter:
        parts.append(f"--init {job.init_adapter}")
    parts.append(f"--out {job.output_dir or 'DIR'}")
    parts.append(f"--max-steps {hp.get('max_steps', 100)}")
    if hp.get("full"):
        parts.append("--full")
    elif hp.get("lora_rank") and not job.init_adapter:  # a continued adapter keeps its own rank and layers
        parts.append(f"--lora-rank {hp['lora_rank']}")
        if hp.get("lora_layers"):
            parts.append(f"--lora-layers {hp['lora_layers']}")
    parts.append(f"--policy {job.policy or 'auto'}")
    for key in ("max_examples", "learning_rate", "batch_size", "seed"):
        if hp.get(key) is not None:
            parts.append(f"--{key.replace('_', '-')} {hp[key]}")
    return " ".join(parts)


def enqueue(job: TrainingJob) -> None:
    """Queue the job once the surrounding transaction commits (never before the row exists)."""
    transaction.on_commit(lambda: run_training_job.delay(job.pk))
