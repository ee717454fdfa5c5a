"""Dispatch of accepted items to the guard workers.

The database is the queue; broker messages are only wake-up calls.

1. The API commits items as ``queued``; only *after* the commit does it
   publish ``classify_pending`` wake-ups. If the broker is down at that moment
   nothing is lost: the items are marked ``received`` and the sweeper
   announces every pending item older than ``MODERATION_STALE_PENDING_SECONDS``.
2. A worker claims up to ``MODERATION_MICRO_BATCH_SIZE`` pending items of at
   most ``MODERATION_MICRO_BATCH_MAX_CHARS`` characters with
   ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers never claim the same
   item), round-robin across (API key, policy version) lanes so one client's
   backlog cannot starve another's, marks them ``running`` with a lease,
   classifies them as one batch and stores the verdicts. The verdict table's
   one-to-one constraint makes a re-delivered batch harmless.
3. A worker killed mid-batch leaves its items ``running`` with a lease that
   runs out; the sweeper puts them back to ``queued`` (or ``failed`` after
   ``MODERATION_MAX_ATTEMPTS`` claims) and wakes the workers.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F, Min, Value
from django.db.models.functions import Coalesce, Length
from django.utils import timezone

from moderation import conf, task_names
from moderation.models import Item, Verdict

logger = logging.getLogger(__name__)
# More wake-up messages than this per announcement buys nothing: each task drains the backlog.
MAX_WAKEUPS_PER_ANNOUNCEMENT = 8
# A claim looks at most this many (API key, policy version) lanes, the longest waiting first.
MAX_LANES_PER_CLAIM = 64


def announce_on_commit(item_ids: list[int], mark_queued: bool = True) -> None:
    """After the surrounding transaction commits, wake the workers for these items.

    ``mark_queued=False`` when the items were committed as ``queued`` already
    (the API does that to save a write per request).
    """
    if item_ids:
        ids = list(item_ids)
        transaction.on_commit(lambda: announce(ids, mark_queued=mark_queued))


def announce(item_ids: Iterable[int], wakeups: int | None = None, mark_queued: bool = True) -> bool:
    """Publish wake-ups for committed items. False when the broker is down.

    Items are committed as ``queued``; when the broker cannot be reached they
    are marked ``received`` (visible in the item browser) and the sweeper
    announces them again later.
    """
    ids = list(item_ids)
    if wakeups is None:
        wakeups = math.ceil(len(ids) / conf.micro_batch_size())
    wakeups = min(MAX_WAKEUPS_PER_ANNOUNCEMENT, max(1, wakeups))
    try:
        for _ in range(wakeups):
            task_names.queue(task_names.CLASSIFY_PENDING)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the sweeper retries later
        logger.warning("could not announce %d item(s) to the workers (%s); the sweeper will retry", len(ids), exc)
        Item.objects.filter(pk__in=ids, status=Item.Status.QUEUED).update(status=Item.Status.RECEIVED)
        return False
    if mark_queued:
        Item.objects.filter(pk__in=ids, status=Item.Status.RECEIVED).update(status=Item.Status.QUEUED, updated_at=timezone.now())
    return True


@dataclass
class BatchOutcome:
    claimed: int = 0
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    # Stored fast verdicts that wait for an explanation (the reason pass is woken for them).
    to_explain: int = 0


def item_cost(prompt_chars: int, response_chars: int) -> int:
    """What one item weighs in a micro-batch's character budget.

    The guard truncates a conversation to ``GUARD_MAX_INPUT_TOKENS``, so a huge
    text costs no more than about four characters per token of that limit.
    """
    return max(1, min(prompt_chars + response_chars, 4 * conf.max_input_tokens()))


def _lanes(limit: int) -> list[tuple[int | None, int]]:
    """(client, policy version) lanes with pending work, the one waiting longest first."""
    rows = (
        Item.objects.filter(status__in=Item.PENDING)
        .values("client_id", "policy_version_id")
        .annotate(head=Min("id"))
        .order_by("head")[:limit]
    )
    return [(row["client_id"], row["policy_version_id"]) for row in rows]


def fair_pick(lanes: list[list[tuple[int, int]]], size: int, max_chars: int) -> list[int]:
    """Round-robin over ``lanes`` (each a list of (item id, cost), oldest first): one item
    from each lane in turn until ``size`` items or ``max_chars`` are reached.

    The first item is always taken, whatever its cost (a batch is never empty); a
    lane whose next item does not fit the remaining budget gives up its turns.
    """
    chosen: list[int] = []
    used = 0
    cursors = [0] * len(lanes)
    open_lanes = [n for n, lane in enumerate(lanes) if lane]
    while open_lanes and len(chosen) < size:
        still_open = []
        for n in open_lanes:
            if len(chosen) >= size:
                break
            pk, cost = lanes[n][cursors[n]]
            if chosen and used + cost > max_chars:
                continue  # this lane is done for this batch
            chosen.append(pk)
            used += cost
            cursors[n] += 1
            if cursors[n] < len(lanes[n]):
                still_open.append(n)
        open_lanes = still_open
    return chosen


def claim_batch(size: int, token: str, max_chars: int | None = None) -> list[Item]:
    """Claim up to ``size`` pending items (at most ``max_chars`` of text) for ``token`` under a lease.

    Fair across clients: the pending items are grouped in lanes by (API key,
    policy version) and the batch takes one item from each lane in turn, the
    lane waiting longest first; within a lane, oldest first. One client's
    backlog therefore never holds up another client's next item for longer
    than one micro-batch.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=conf.lease_seconds())
    budget = conf.micro_batch_max_chars() if max_chars is None else max_chars
    skip_locked = connection.features.has_select_for_update_skip_locked
    lanes = _lanes(MAX_LANES_PER_CLAIM)
    if not lanes:
        return []
    with transaction.atomic():
        candidates: list[list[tuple[int, int]]] = []
        for client_id, version_id in lanes:
            pending = Item.objects.filter(status__in=Item.PENDING, client_id=client_id, policy_version_id=version_id).order_by("id")
            if skip_locked:
                # Rows another claimer holds are skipped; the rest are held until this claim commits.
                pending = pending.select_for_update(skip_locked=True)
            rows = pending.annotate(
                prompt_chars=Length("prompt"), response_chars=Coalesce(Length("response"), Value(0))
            ).values_list("pk", "prompt_chars", "response_chars")[:size]
            candidates.append([(pk, item_cost(p, r)) for pk, p, r in rows])
        ids = fair_pick(candidates, size, budget)
        if not ids:
            return []
        # The status filter repeats the claim condition: on SQLite (no row locks) a
        # concurrent claimer's rows are simply not matched.
        Item.objects.filter(pk__in=ids, status__in=Item.PENDING).update(
            status=Item.Status.RUNNING, claimed_by_task=token, leased_until=lease, attempts=F("attempts") + 1, updated_at=now
        )
    return list(
        Item.objects.filter(pk__in=ids, status=Item.Status.RUNNING, claimed_by_task=token)
        .select_related("policy_version__policy__production_model", "client")
        .order_by("id")
    )


def classify_items(items: list[Item]) -> BatchOutcome:
    """Classify claimed items (one guard call per model) and store their verdicts."""
    from guard.backends.base import GuardRequest
    from guard.runtime import classify
    from moderation.verdicts import Timing, category_actions, store_verdict

    outcome = BatchOutcome(claimed=len(items))
    specs: dict[int, object] = {}
    actions: dict[int, dict[str, str]] = {}
    by_model: dict[str | None, list[Item]] = defaultdict(list)
    for item in items:
        version = item.policy_version
        if version.pk not in specs:
            specs[version.pk] = version.to_spec()
            actions[version.pk] = category_actions(version)
        by_model[model_name_for(version.policy)].append(item)

    for model, group in by_model.items():
        requests = [
            GuardRequest(policy=specs[i.policy_version_id], prompt=i.prompt, response=i.response, mode=i.mode, tag=i.pk)  # type: ignore[arg-type]
            for i in group
        ]
        # Loads the model on first use, so the batch's time below is the guard's time only.
        thresholds = applied_thresholds(model)
        started = time.monotonic()
        try:
            results = classify(requests, model=model)
        except Exception as exc:  # noqa: BLE001 - the model could not run: release the items for a retry
            logger.exception("guard %s failed on a batch of %d", model or "embedded", len(group))
            release(group, f"guard {model or 'embedded'} failed: {exc}")
            outcome.failed += len(group)
            continue
        batch_ms = int((time.monotonic() - started) * 1000)
        label = model_label(model)
        for item, result, share in zip(group, results, shares(group, batch_ms), strict=True):
            timing = Timing(latency_ms=share, batch_size=len(group), batch_ms=batch_ms)
            verdict, created = store_verdict(item, result, actions[item.policy_version_id], label, share, timing=timing, thresholds=thresholds)
            if created:
                outcome.stored += 1
                outcome.to_explain += verdict.explanation_status == Verdict.ExplanationStatus.PENDING
            else:
                outcome.duplicates += 1
    return outcome


def shares(items: list[Item], batch_ms: int) -> list[int]:
    """Each item's share of its batch's guard time, in proportion to its weight (its
    text length, as the budget counts it): a long conversation costs more of the batch."""
    costs = [item_cost(len(i.prompt), len(i.response or "")) for i in items]
    total = sum(costs) or 1
    return [round(batch_ms * cost / total) for cost in costs]


def applied_thresholds(model: str | None) -> dict[str, float]:
    """The calibrated decision thresholds the backend of ``model`` applies ({} when none)."""
    from guard.runtime import get_backend

    try:
        backend = get_backend(model)
    except Exception:  # noqa: BLE001 - recorded for display only: never fail a stored verdict on it
        return {}
    return {name: float(value) for name, value in (getattr(backend, "thresholds", None) or {}).items()}


def model_label(model: str | None) -> str:
    """What the verdict records as its model: the registered name, "embedded", or the directory."""
    from guard.backends.base import GuardError
    from guard.runtime import resolve_model

    try:
        return resolve_model(model).label
    except GuardError:
        return model or "embedded"


def model_name_for(policy: object) -> str | None:
    """The registered model that serves ``policy``; None means the embedded default."""
    production = getattr(policy, "production_model", None)
    return production.name if production is not None else None


def release(items: list[Item], reason: str) -> None:
    """Give claimed items back (or fail them when out of attempts)."""
    now = timezone.now()
    # Only rows this claimer still holds (the sweeper may have re-queued them meanwhile).
    held = Item.objects.filter(
        pk__in=[i.pk for i in items], status=Item.Status.RUNNING, claimed_by_task__in={i.claimed_by_task for i in items}
    )
    held.filter(attempts__gte=conf.max_attempts()).update(
        status=Item.Status.FAILED, leased_until=None, last_error=reason, updated_at=now
    )
    held.update(
        status=Item.Status.QUEUED, leased_until=None, last_error=reason, updated_at=now
    )


def run_pending(token: str | None = None, time_budget_s: float | None = None) -> BatchOutcome:
    """Claim and classify micro-batches until nothing is pending or the time budget is spent.

    Returns the totals; ``total.claimed`` is 0 when there was nothing to do.
    """
    token = token or uuid.uuid4().hex
    budget = conf.task_time_budget_seconds() if time_budget_s is None else time_budget_s
    size = conf.micro_batch_size()
    deadline = time.monotonic() + budget
    total = BatchOutcome()
    while time.monotonic() < deadline:
        items = claim_batch(size, token)
        wait = conf.micro_batch_wait_seconds()
        room = conf.micro_batch_max_chars() - sum(item_cost(len(i.prompt), len(i.response or "")) for i in items)
        if items and len(items) < size and room > 0 and wait > 0:
            # A GPU runs full batches best: give a burst that is still arriving a moment.
            time.sleep(wait)
            items += claim_batch(size - len(items), token, max_chars=room)
        if not items:
            break
        outcome = classify_items(items)
        total.claimed += outcome.claimed
        total.stored += outcome.stored
        total.duplicates += outcome.duplicates
        total.failed += outcome.failed
        total.to_explain += outcome.to_explain
        if outcome.failed == outcome.claimed:
            break  # the guard is broken right now: leave the rest to a later attempt
    return total


def pending_exists() -> bool:
    return Item.objects.filter(status__in=Item.PENDING).exists()


@dataclass
class SweepOutcome:
    requeued: int = 0
    failed: int = 0
    announced: int = 0


def sweep() -> SweepOutcome:
    """Re-queue items whose worker lease ran out; fail those out of attempts; wake the workers.

    Also announces items that stayed ``received`` (broker down at commit) or
    ``queued`` for long (a lost wake-up message).
    """
    now = timezone.now()
    result = SweepOutcome()
    expired = Item.objects.filter(status=Item.Status.RUNNING, leased_until__lt=now)
    result.failed = expired.filter(attempts__gte=conf.max_attempts()).update(
        status=Item.Status.FAILED,
        leased_until=None,
        last_error=f"gave up after {conf.max_attempts()} attempt(s): the worker holding it stopped before finishing",
        updated_at=now,
    )
    result.requeued = expired.filter(attempts__lt=conf.max_attempts()).update(
        status=Item.Status.QUEUED,
        leased_until=None,
        claimed_by_task="",
        last_error="re-queued: the worker holding it stopped before finishing",
        updated_at=now,
    )
    stale_before = now - timedelta(seconds=conf.stale_pending_seconds())
    stale = list(
        Item.objects.filter(status__in=Item.PENDING, updated_at__lt=stale_before).values_list("pk", flat=True)[:10000]
    )
    if result.requeued or stale:
        # Re-queued items need as many wake-ups as a fresh batch; merely stale ones one
        # (a single task drains the backlog).
        wakeups = max(1, math.ceil(result.requeued / conf.micro_batch_size()))
        if announce(stale, wakeups=wakeups):
            result.announced = result.requeued + len(stale)
    return result
