"""What a queued training job waits for, in words for its page.

A queued job can wait for three reasons: no live worker consumes ``gpu-train``;
other training jobs are ahead of it; or the only worker that consumes
``gpu-train`` also serves ``gpu-infer``/``default`` (the demo's single worker)
and is busy there. Worker liveness and queue depths come from ``ops``
(heartbeats and the broker); nothing here touches the job.
"""

from __future__ import annotations

from typing import Any

from trainer.models import TrainingJob

TRAIN_QUEUE = "gpu-train"
START_HINT = "celery -A guardsite worker -Q gpu-train -c 1 --prefetch-multiplier 1"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def jobs_ahead(job: TrainingJob) -> int:
    return (TrainingJob.objects.filter(status__in=TrainingJob.ACTIVE, created_at__lt=job.created_at)
            .exclude(pk=job.pk).count())


def _items_waiting() -> int:
    try:
        from moderation.models import Item
    except ImportError:
        return 0
    return Item.objects.filter(status__in=(Item.Status.RECEIVED, Item.Status.QUEUED, Item.Status.RUNNING)).count()


def _evaluations_active() -> int:
    try:
        from evaluation.models import EvaluationRun
    except ImportError:
        return 0
    return EvaluationRun.objects.filter(status__in=(EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING)).count()


def wait_reason(job: TrainingJob) -> dict[str, Any]:
    """``{"text": ..., "no_worker": bool, "ahead": N}`` for a queued job ({} for any other)."""
    if job.status != TrainingJob.Status.QUEUED:
        return {}
    try:
        from ops.metrics import workers
    except ImportError:  # pragma: no cover - ops is part of the project
        return {}
    rows = workers()
    trainers = [w for w in rows if TRAIN_QUEUE in w.queues.split(",")]
    online = [w for w in trainers if w.state == "online"]
    ahead = jobs_ahead(job)
    if not online:
        lost = [w for w in trainers if w.state == "lost"]
        text = f"No live worker takes the {TRAIN_QUEUE} queue, so nothing will start this job."
        if lost:
            text += f" The last one ({lost[0].hostname}) stopped sending heartbeats."
        return {"text": text + f" Start one: {START_HINT}", "no_worker": True, "ahead": ahead}
    parts = [f"Waiting for a {TRAIN_QUEUE} worker ({_plural(len(online), 'live worker')})"]
    parts.append(f"{_plural(ahead, 'training job')} ahead" if ahead else "no training job ahead")
    shared = sorted({q for w in online for q in w.queues.split(",") if q and q != TRAIN_QUEUE})
    if shared and all(w.queues != TRAIN_QUEUE for w in online):
        busy = []
        if "gpu-infer" in shared:
            items, evaluations = _items_waiting(), _evaluations_active()
            if items:
                busy.append(f"{_plural(items, 'item')} waiting for a verdict")
            if evaluations:
                busy.append(f"{_plural(evaluations, 'evaluation')} queued or running")
        where = ", ".join(shared)
        parts.append(f"the worker also serves {where}" + (f" and has {' and '.join(busy)}" if busy else ""))
    return {"text": "; ".join(parts) + ".", "no_worker": False, "ahead": ahead}
