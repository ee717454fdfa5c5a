"""Worker liveness for the overview page.

Every ``celery worker`` process (the parent, not the pool children) starts a
small daemon thread when it is ready; the thread writes the worker's
``WorkerHeartbeat`` row every ``HEARTBEAT_INTERVAL_S`` seconds. A clean
shutdown marks the row stopped; a worker that was killed simply stops being
seen and the overview shows it as lost after ``STALE_AFTER_S``.

Why a thread and not a periodic task: a task lands on one queue and is run by
whichever worker consumes it, so a worker that only consumes ``gpu-train``
would never report. The thread reports for every worker, whatever its queues,
and keeps reporting while a long task (a training run) occupies the pool.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.db import close_old_connections
from django.utils import timezone

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = float(os.environ.get("OPS_HEARTBEAT_INTERVAL_S") or 10)
# Three missed beats: the worker is lost (killed, frozen, or cut off from the database).
STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_S + 5
# Rows of workers not seen for this long are deleted (hostnames change on every deploy).
FORGET_AFTER = timedelta(days=2)

_stop = threading.Event()


def record(hostname: str, queues: str, pid: int | None = None, started: bool = False) -> None:
    """Write one heartbeat (creates the row on first sight)."""
    from ops.models import WorkerHeartbeat

    now = timezone.now()
    defaults: dict[str, Any] = {"pid": pid or os.getpid(), "queues": queues[:200], "seen_at": now, "stopped_at": None}
    if started:
        defaults["started_at"] = now
    WorkerHeartbeat.objects.update_or_create(hostname=hostname, defaults=defaults)


def mark_stopped(hostname: str) -> None:
    from ops.models import WorkerHeartbeat

    WorkerHeartbeat.objects.filter(hostname=hostname).update(stopped_at=timezone.now())


def forget_old() -> int:
    from ops.models import WorkerHeartbeat

    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=timezone.now() - FORGET_AFTER).delete()
    return deleted


def _beat_forever(hostname: str, queues: str) -> None:
    first = True
    while not _stop.is_set():
        try:
            # A fresh connection per beat: survives a database restart, holds nothing idle.
            close_old_connections()
            record(hostname, queues, started=first)
            if first:
                forget_old()
            first = False
        except Exception as error:  # noqa: BLE001 - the database may be down; try again next beat
            logger.warning("worker heartbeat not recorded: %s", error)
        finally:
            close_old_connections()
        _stop.wait(HEARTBEAT_INTERVAL_S)


def _queue_names(consumer: Any) -> str:
    try:
        names = [queue.name for queue in consumer.task_consumer.queues]
    except AttributeError:
        names = list(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues)
    return ",".join(sorted(names))


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    hostname = getattr(sender, "hostname", None) or f"worker@{os.uname().nodename}:{os.getpid()}"
    _stop.clear()
    thread = threading.Thread(
        target=_beat_forever, args=(hostname, _queue_names(sender)), name="ops-heartbeat", daemon=True
    )
    thread.start()


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    _stop.set()
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        close_old_connections()
        mark_stopped(hostname)
    except Exception as error:  # noqa: BLE001 - shutting down anyway
        logger.warning("could not mark worker %s stopped: %s", hostname, error)
