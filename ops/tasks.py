from __future__ import annotations

import os
import socket

from celery import shared_task
from django.utils import timezone

from ops.models import WorkerHeartbeat


@shared_task(name="ops.tasks.heartbeat")
def heartbeat(label: str = "") -> dict[str, object]:
    """Record that a worker process ran a task; returns where it ran."""
    hostname = label or f"{socket.gethostname()}:{os.getppid()}"
    row, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"pid": os.getpid(), "seen_at": timezone.now()}
    )
    return {"hostname": row.hostname, "pid": row.pid}
