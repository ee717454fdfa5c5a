"""The names of moderation's Celery tasks, and how the work queues them without importing them.

``moderation.tasks`` is the one entry point: it imports the work (dispatch, explain,
review, webhooks) and wraps it in tasks. The work queues those tasks by name through
this module, so nothing imports ``moderation.tasks`` back and no import circle forms
(``scripts/import_graph.py`` and ``tests/foundation/test_import_graph.py`` check it).
"""

from __future__ import annotations

from typing import Any

CLASSIFY_PENDING = "moderation.tasks.classify_pending"
EXPLAIN_PENDING = "moderation.tasks.explain_pending"
SWEEP_STUCK_ITEMS = "moderation.tasks.sweep_stuck_items"
EXPIRE_CLAIMS = "moderation.tasks.expire_claims"
DELIVER_WEBHOOK = "moderation.tasks.deliver_webhook"
REPLAY_DRAFT = "moderation.tasks.replay_draft"


def queue(name: str, *args: Any, countdown: float | None = None) -> None:
    """Queue the task called ``name`` with positional ``args``.

    A signature by name, resolved through the app's registry, so the task's own
    options apply (its queue from ``task_routes``, eager mode in a shell).
    """
    from guardsite.celery import app

    options: dict[str, Any] = {"countdown": countdown} if countdown else {}
    app.signature(name, args=args).apply_async(**options)
