"""Celery tasks of the moderation app (routing is fixed in guardsite/celery.py).

The one entry point that imports the work; the work queues these tasks by name
(``moderation.task_names``) and never imports this module back.
"""

from __future__ import annotations

import logging

from celery import shared_task

from moderation import conf, dispatch, explain, replay, review, task_names, webhooks

logger = logging.getLogger(__name__)


@shared_task(name=task_names.CLASSIFY_PENDING, ignore_result=True)
def classify_pending() -> dict:
    """Classify pending items in micro-batches (queue ``gpu-infer``).

    The message carries no item ids: the task claims whatever is pending, so
    a duplicate or re-delivered message is harmless. After its time budget it
    hands the rest of the backlog to a fresh task.
    """
    outcome = dispatch.run_pending(token=classify_pending.request.id)
    if outcome.claimed and outcome.failed < outcome.claimed and dispatch.pending_exists():
        classify_pending.delay()
    elif outcome.to_explain or (outcome.claimed and explain.pending_exists()):
        explain.announce()  # the fast verdicts are out: now their explanations
    return {"claimed": outcome.claimed, "stored": outcome.stored, "duplicates": outcome.duplicates, "failed": outcome.failed}


@shared_task(name=task_names.EXPLAIN_PENDING, ignore_result=True)
def explain_pending() -> dict:
    """Write the explanations of fast verdicts whose policy asks for one (queue ``gpu-infer``).

    Like ``classify_pending`` the message carries no ids, so a duplicate or
    re-delivered message is harmless. While items wait for a verdict it steps
    aside and wakes again a moment later.
    """
    outcome = explain.run_pending(token=explain_pending.request.id)
    if outcome.deferred:
        explain.announce(countdown=explain.YIELD_SECONDS)
    elif outcome.claimed and outcome.failed < outcome.claimed and explain.pending_exists():
        explain.announce()
    return {"claimed": outcome.claimed, "written": outcome.written, "failed": outcome.failed, "deferred": outcome.deferred}


@shared_task(name=task_names.SWEEP_STUCK_ITEMS, ignore_result=True)
def sweep_stuck_items() -> dict:
    """Re-queue items of workers that died; wake the explanation pass when explanations wait (beat: every 30 s)."""
    outcome = dispatch.sweep()
    if outcome.requeued or outcome.failed:
        logger.warning("sweeper: re-queued %d item(s), failed %d", outcome.requeued, outcome.failed)
    explanations_failed = explain.sweep()
    return {"requeued": outcome.requeued, "failed": outcome.failed, "announced": outcome.announced, "explanations_failed": explanations_failed}


@shared_task(name=task_names.EXPIRE_CLAIMS, ignore_result=True)
def expire_claims() -> int:
    """Give review claims that ran out back to the queue (beat: every 60 s)."""
    return review.expire_claims()


@shared_task(name=task_names.DELIVER_WEBHOOK, bind=True, ignore_result=True, acks_late=True)
def deliver_webhook(self, delivery_id: int, legacy_event: str | None = None) -> int:  # noqa: ANN001 - bound task
    """POST a recorded delivery to the client's webhook; bounded retries with exponential backoff.

    Each try is recorded as an attempt; after the last retry the delivery is failed.
    ``legacy_event``: a message queued by an older release as ``(item_id, event)``.
    """
    if legacy_event is not None:
        found = webhooks.legacy_delivery(delivery_id, legacy_event)
        if found is None:
            return 0
        delivery_id = found  # the retries carry the new delivery's id
    try:
        return webhooks.deliver(delivery_id)
    except webhooks.DeliveryFailed as exc:
        if self.request.retries >= conf.webhook_max_retries():
            logger.warning("webhook delivery %s given up after %d retries: %s", delivery_id, self.request.retries, exc)
            webhooks.give_up(delivery_id)
            return 0
        raise self.retry(args=[delivery_id], exc=exc, countdown=min(300, 2 ** (self.request.retries + 1))) from exc


@shared_task(name=task_names.REPLAY_DRAFT, ignore_result=True)
def replay_draft(replay_id: int) -> str:
    """Judge a policy's recent items under its live version and its draft (queue ``gpu-infer``)."""
    return replay.execute(replay_id)
