"""The Celery app.

Queues:
- ``default``: light work (webhooks, sweeper, bookkeeping).
- ``gpu-infer``: classification micro-batches and evaluation runs.
- ``gpu-train``: training jobs.

Reliability choices (why):
- ``acks_late`` + ``reject_on_worker_lost``: a task whose worker dies (SIGKILL,
  OOM-killer) goes back to the queue instead of vanishing. Tasks are written to
  be idempotent (they re-read state from the database), so a re-delivery never
  produces a second verdict. Re-delivery is bounded by per-row attempt counters
  kept in the database (see ``moderation.dispatch``).
- ``worker_prefetch_multiplier = 1``: a GPU worker holds one batch at a time,
  so a long batch does not hide queued work from other workers.
- the model is loaded inside the worker child process, never in the parent, so
  forked children do not share CUDA state: before the first task when the worker
  consumes ``gpu-infer`` and ``GUARD_PRELOAD`` includes ``workers`` (guard/preload.py),
  else lazily on first use (``guard.runtime``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

app = Celery("guardsite")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.update(
    task_queues=(Queue("default"), Queue("gpu-infer"), Queue("gpu-train")),
    task_default_queue="default",
    task_routes={
        "moderation.tasks.classify_pending": {"queue": "gpu-infer"},
        "moderation.tasks.explain_pending": {"queue": "gpu-infer"},
        "moderation.tasks.replay_draft": {"queue": "gpu-infer"},
        "evaluation.tasks.*": {"queue": "gpu-infer"},
        "trainer.tasks.*": {"queue": "gpu-train"},
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    beat_schedule={
        "sweep-stuck-items": {"task": "moderation.tasks.sweep_stuck_items", "schedule": 30.0},
        "expire-review-claims": {"task": "moderation.tasks.expire_claims", "schedule": 60.0},
        "sweep-stale-evaluations": {"task": "evaluation.sweep_stale_runs", "schedule": 60.0},
    },
)
app.autodiscover_tasks()


# --- preloading the guard (guard/preload.py) ------------------------------------------
PRELOAD_QUEUE = "gpu-infer"
_worker: dict[str, Any] = {"queues": set(), "forks": False}


@signals.celeryd_after_setup.connect
def _remember_worker_setup(sender: str, instance: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Celery's signal
    """In the worker's parent: which queues it consumes and whether its pool forks (children inherit this)."""
    _worker["queues"] = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    _worker["forks"] = "prefork" in getattr(instance.pool_cls, "__module__", str(instance.pool_cls))


def _preload_here(where: str) -> None:
    from guard import preload

    if PRELOAD_QUEUE in _worker["queues"] and preload.enabled("workers"):
        preload.preload(where)


@signals.worker_process_init.connect
def _preload_in_pool_process(**kwargs: Any) -> None:  # noqa: ANN401 - Celery's signal
    _preload_here(f"worker process {os.getpid()}")


@signals.worker_ready.connect
def _preload_in_solo_worker(**kwargs: Any) -> None:  # noqa: ANN401 - Celery's signal
    if not _worker["forks"]:
        _preload_here(f"worker {os.getpid()}")
