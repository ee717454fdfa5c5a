"""gunicorn's settings file (read from the directory gunicorn starts in): each web worker loads the
production guard before it takes traffic, when GUARD_PRELOAD includes "web" (guard/preload.py)."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:  # noqa: ANN401 - gunicorn's worker
    """Called once the worker has loaded the Django app, before it accepts a connection."""
    from guard import preload

    if preload.enabled("web"):
        preload.preload(f"web worker {worker.pid}")
