from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """Last sign of life of each Celery worker process (written by ``ops.tasks.heartbeat``)."""

    hostname = models.CharField(max_length=200, unique=True)
    pid = models.IntegerField(default=0)
    queues = models.CharField(max_length=200, blank=True, default="")
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.hostname
