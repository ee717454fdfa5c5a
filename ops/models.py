from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """Last sign of life of each Celery worker (written by ``ops.worker`` every few seconds,
    and by the ``ops.tasks.heartbeat`` task)."""

    hostname = models.CharField(max_length=200, unique=True)
    pid = models.IntegerField(default=0)
    queues = models.CharField(max_length=200, blank=True, default="")
    seen_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    # Set when the worker shut down cleanly; a worker that was killed just stops being seen.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.hostname
