"""Every real worker reports itself, whatever queues it consumes."""

from __future__ import annotations

import pytest

from ops import metrics
from tests.conftest import wait_for


def worker_state(queues: str) -> str | None:
    return next((w.state for w in metrics.workers() if w.queues == queues), None)


@pytest.mark.worker
def test_a_worker_on_the_training_queue_shows_online_then_stopped(start_worker, client_as):
    worker = start_worker(queues="gpu-train")
    wait_for(lambda: worker_state("gpu-train") == "online", timeout=30, message="the worker's first heartbeat")
    assert b"gpu-train" in client_as("viewer").get("/").content
    worker.stop()
    assert worker_state("gpu-train") == "stopped"
