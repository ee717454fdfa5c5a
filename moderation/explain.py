"""Explanations for fast verdicts, written afterwards by a reason pass.

Fast mode (the API default) decides from the label logits and writes no
explanation. A policy says which fast verdicts get one anyway
(``Policy.explain``: off, flagged and blocked items, or all). Such verdicts are
stored with ``explanation_status`` "pending"; once the API has answered, the
``explain_pending`` task (queue ``gpu-infer``) runs reason mode on them in small
batches and stores the explanation on the verdict. The fast labels stay the
decision: reason mode shares the fast scoring pass, so its labels agree; should
they differ (say the production model changed in between), the explanation is
kept with a note saying so. A client with a webhook gets an ``explanation`` event.

Like item dispatch, the database is the queue and broker messages are only
wake-ups: a batch is claimed under a lease with ``SELECT ... FOR UPDATE SKIP
LOCKED``, the explanation is written only while the verdict is still pending
(so a re-delivered task changes nothing), and a worker that dies mid-batch
leaves a lease that runs out, after which the sweeper wakes the workers again;
after ``MODERATION_MAX_ATTEMPTS`` claims the explanation is marked failed.
The fast path goes first: the pass stops while items wait for a verdict.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from moderation import conf, task_names, webhooks
from moderation.models import Verdict

logger = logging.getLogger(__name__)
PENDING = Verdict.ExplanationStatus.PENDING
# When items wait for a verdict, the pass steps aside and wakes again this much later.
YIELD_SECONDS = 2.0


def announce(countdown: float | None = None) -> bool:
    """Wake the reason pass. False when the broker is down (the sweeper retries)."""
    try:
        task_names.queue(task_names.EXPLAIN_PENDING, countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the sweeper retries later
        logger.warning("could not wake the explanation pass (%s); the sweeper will retry", exc)
        return False
    return True


def announce_on_commit() -> None:
    transaction.on_commit(announce)


def _claimable(now: object) -> Q:
    return Q(explanation_status=PENDING) & (Q(explanation_leased_until__isnull=True) | Q(explanation_leased_until__lt=now))


def claim(size: int) -> list[Verdict]:
    """Claim up to ``size`` pending explanations under a lease; oldest first."""
    now = timezone.now()
    lease = now + timedelta(seconds=conf.lease_seconds())
    with transaction.atomic():
        pending = Verdict.objects.filter(_claimable(now), explanation_attempts__lt=conf.max_attempts()).order_by("id")
        if connection.features.has_select_for_update_skip_locked:
            pending = pending.select_for_update(skip_locked=True)
        ids = list(pending.values_list("pk", flat=True)[:size])
        if not ids:
            return []
        Verdict.objects.filter(_claimable(now), pk__in=ids).update(
            explanation_leased_until=lease, explanation_attempts=F("explanation_attempts") + 1
        )
    return list(
        Verdict.objects.filter(pk__in=ids, explanation_status=PENDING, explanation_leased_until=lease)
        .select_related("item__policy_version__policy__production_model", "item__client")
        .order_by("id")
    )


def disagreement(verdict: Verdict, reasoned: object) -> str:
    """A note when the reason pass's labels differ from the stored (deciding) ones."""
    ours = (verdict.prompt_label, verdict.response_label, verdict.refusal_label)
    theirs = (reasoned.prompt_label, reasoned.response_label, reasoned.refusal_label)  # type: ignore[attr-defined]
    if ours == theirs:
        return ""
    names = ("prompt", "response", "refusal")
    changed = ", ".join(f"{n} {b}" for n, a, b in zip(names, ours, theirs, strict=True) if a != b)
    return f"the explanation pass judged {changed}; the fast verdict's labels remain the decision"


@dataclass
class ExplainOutcome:
    claimed: int = 0
    written: int = 0
    failed: int = 0
    deferred: bool = False


def explain_verdicts(verdicts: list[Verdict]) -> ExplainOutcome:
    """Run reason mode on claimed verdicts (one guard call per model) and store the explanations."""
    from guard.backends.base import GuardRequest
    from guard.runtime import classify
    from moderation.dispatch import model_name_for

    outcome = ExplainOutcome(claimed=len(verdicts))
    specs: dict[int, object] = {}
    by_model: dict[str | None, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        version = verdict.item.policy_version
        if version.pk not in specs:
            specs[version.pk] = version.to_spec()
        by_model[model_name_for(version.policy)].append(verdict)
    for model, group in by_model.items():
        requests = [
            GuardRequest(policy=specs[v.item.policy_version_id], prompt=v.item.prompt, response=v.item.response, mode="reason", tag=v.item_id)  # type: ignore[arg-type]
            for v in group
        ]
        try:
            results = classify(requests, model=model)
        except Exception as exc:  # noqa: BLE001 - the model could not run: give the claims back
            logger.exception("explanation pass: guard %s failed on %d verdict(s)", model or "embedded", len(group))
            give_back(group, f"guard {model or 'embedded'} failed: {exc}")
            outcome.failed += len(group)
            continue
        now = timezone.now()
        for verdict, result in zip(group, results, strict=True):
            text = (result.explanation or "").strip()
            if result.parse_error is not None or not text:
                fields = {"explanation_error": f"the model wrote no usable explanation ({result.parse_error or 'empty'})"}
                if verdict.explanation_attempts >= conf.max_attempts():
                    fields["explanation_status"] = Verdict.ExplanationStatus.FAILED
                give_back([verdict], fields["explanation_error"], **fields)
                outcome.failed += 1
                continue
            # Written only while still pending and held by this claim: re-delivery changes nothing.
            written = Verdict.objects.filter(
                pk=verdict.pk, explanation_status=PENDING, explanation_leased_until=verdict.explanation_leased_until
            ).update(
                explanation=text,
                explanation_status=Verdict.ExplanationStatus.DONE,
                explanation_error=disagreement(verdict, result),
                explanation_leased_until=None,
                explained_at=now,
            )
            outcome.written += written
            if written:
                webhooks.announce(verdict.item, "explanation")  # clients with a webhook hear of it
    return outcome


def give_back(verdicts: list[Verdict], reason: str, **fields: object) -> None:
    """Release claims for a later attempt (or fail them when out of attempts)."""
    held = Verdict.objects.filter(pk__in=[v.pk for v in verdicts], explanation_status=PENDING)
    held.filter(explanation_attempts__gte=conf.max_attempts()).update(
        explanation_status=Verdict.ExplanationStatus.FAILED, explanation_leased_until=None, explanation_error=reason
    )
    held.update(explanation_leased_until=None, explanation_error=reason, **fields)


def run_pending(token: str | None = None, time_budget_s: float | None = None) -> ExplainOutcome:
    """Explain pending verdicts in batches until none is left, the time budget is spent,
    or items are waiting for a fast verdict (then ``deferred``: the fast path goes first)."""
    from moderation.dispatch import pending_exists

    token = token or uuid.uuid4().hex
    budget = conf.task_time_budget_seconds() if time_budget_s is None else time_budget_s
    deadline = time.monotonic() + budget
    total = ExplainOutcome()
    while time.monotonic() < deadline:
        if pending_exists():
            total.deferred = True
            break
        verdicts = claim(conf.explain_batch_size())
        if not verdicts:
            break
        outcome = explain_verdicts(verdicts)
        total.claimed += outcome.claimed
        total.written += outcome.written
        total.failed += outcome.failed
        if outcome.failed == outcome.claimed:
            break  # the guard is broken right now: leave the rest to a later attempt
    return total


def pending_exists() -> bool:
    return Verdict.objects.filter(_claimable(timezone.now()), explanation_attempts__lt=conf.max_attempts()).exists()


def sweep() -> int:
    """Fail explanations out of attempts whose last lease ran out; wake the pass when some wait.

    Returns how many explanations were marked failed.
    """
    now = timezone.now()
    failed = Verdict.objects.filter(
        _claimable(now), explanation_attempts__gte=conf.max_attempts()
    ).update(
        explanation_status=Verdict.ExplanationStatus.FAILED,
        explanation_leased_until=None,
        explanation_error=f"gave up after {conf.max_attempts()} attempt(s): the worker writing it stopped before finishing",
    )
    stale_before = now - timedelta(seconds=conf.stale_pending_seconds())
    waiting = Verdict.objects.filter(_claimable(now), explanation_attempts__lt=conf.max_attempts()).filter(
        Q(explanation_leased_until__isnull=False) | Q(created_at__lt=stale_before)
    )
    if waiting.exists():
        announce()  # a lost wake-up or a dead worker; the task steps aside itself while items wait
    return failed
