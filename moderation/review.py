"""The human review queue: claims, decisions, and inter-reviewer agreement."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from guard import contract
from moderation import conf, webhooks
from moderation.models import AuditLog, Decision, Item, ReviewTask


class ReviewError(Exception):
    """A decision that cannot be taken; the message says why (shown to the reviewer)."""


def _lockable(queryset):  # noqa: ANN001, ANN202 - a QuerySet in, the same out
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def current_claim(user: object) -> ReviewTask | None:
    return (
        ReviewTask.objects.filter(state=ReviewTask.State.CLAIMED, claimed_by=user, claim_expires_at__gt=timezone.now())
        .order_by("claimed_at")
        .first()
    )


def claim_next(user: object) -> ReviewTask | None:
    """The reviewer's current claim (renewed), else the next open task, claimed for them.

    ``SELECT ... FOR UPDATE SKIP LOCKED`` means two reviewers asking at the same
    moment lock different rows, so no two reviewers ever hold the same task. A
    reviewer is never offered a second task on an item they already decided
    (double review must be independent).
    """
    now = timezone.now()
    expires = now + timedelta(seconds=conf.claim_ttl_seconds())
    with transaction.atomic():
        held = current_claim(user)
        if held is not None:
            ReviewTask.objects.filter(pk=held.pk).update(claim_expires_at=expires)
            held.claim_expires_at = expires
            return held
        decided_items = Decision.objects.filter(reviewer=user).values("item_id")
        available = ReviewTask.objects.filter(
            Q(state=ReviewTask.State.OPEN) | Q(state=ReviewTask.State.CLAIMED, claim_expires_at__lte=now)
        ).exclude(item_id__in=decided_items)
        task = _lockable(available).order_by("priority", "id").first()
        if task is None:
            return None
        # The condition repeats the lock's: on SQLite (no row locks) a racing claimer wins
        # the update and this one matches no row.
        claimed = ReviewTask.objects.filter(pk=task.pk).filter(
            Q(state=ReviewTask.State.OPEN) | Q(state=ReviewTask.State.CLAIMED, claim_expires_at__lte=now)
        ).update(state=ReviewTask.State.CLAIMED, claimed_by=user, claimed_at=now, claim_expires_at=expires)
        if not claimed:
            return None
    task.refresh_from_db()
    return task


def claim_task(task_id: int, user: object) -> tuple[ReviewTask, ReviewTask | None]:
    """Claim the task a reviewer picked from the queue list; returns it and the claim they gave back.

    The rules of ``claim_next`` hold: a task claimed by someone else (claim not yet
    expired) or already decided cannot be taken, and a reviewer never reviews an item
    twice. A reviewer holds one claim at a time, so picking another task hands the
    one they held back to the queue (returned, so the page can say so).
    """
    now = timezone.now()
    expires = now + timedelta(seconds=conf.claim_ttl_seconds())
    takeable = Q(state=ReviewTask.State.OPEN) | Q(state=ReviewTask.State.CLAIMED, claim_expires_at__lte=now)
    with transaction.atomic():
        task = _lockable(ReviewTask.objects.filter(pk=task_id)).first()
        if task is None:
            mine = ReviewTask.objects.filter(pk=task_id, claimed_by=user, state=ReviewTask.State.CLAIMED).first()
            if mine is not None and mine.claim_expires_at and mine.claim_expires_at > now:
                return mine, None
            raise ReviewError("another reviewer is claiming this item right now; pick another")
        if task.state == ReviewTask.State.DONE:
            raise ReviewError(f"item {task.item_id} was already decided; pick another")
        if task.state == ReviewTask.State.CLAIMED and task.claimed_by_id == getattr(user, "pk", None) and task.claim_expires_at and task.claim_expires_at > now:
            ReviewTask.objects.filter(pk=task.pk).update(claim_expires_at=expires)
            task.refresh_from_db()
            return task, None
        if Decision.objects.filter(reviewer=user, item_id=task.item_id).exists():
            raise ReviewError(f"you already reviewed item {task.item_id}; its second review must come from another reviewer")
        if not ReviewTask.objects.filter(pk=task.pk).filter(takeable).exists():
            who = task.claimed_by.get_username() if task.claimed_by else "another reviewer"
            raise ReviewError(f"item {task.item_id} is claimed by {who} until {task.claim_expires_at:%H:%M:%S} UTC; pick another")
        held = current_claim(user)
        if held is not None and held.pk != task.pk:
            release(held, user)
        claimed = ReviewTask.objects.filter(pk=task.pk).filter(takeable).update(
            state=ReviewTask.State.CLAIMED, claimed_by=user, claimed_at=now, claim_expires_at=expires
        )
        if not claimed:
            raise ReviewError("another reviewer claimed this item a moment ago; pick another")
    task.refresh_from_db()
    return task, held if held is not None and held.pk != task.pk else None


def release(task: ReviewTask, user: object) -> None:
    """Hand a claim back to the queue unanswered."""
    ReviewTask.objects.filter(pk=task.pk, state=ReviewTask.State.CLAIMED, claimed_by=user).update(
        state=ReviewTask.State.OPEN, claimed_by=None, claimed_at=None, claim_expires_at=None
    )


def expire_claims() -> int:
    """Open again every task whose claim ran out; returns how many."""
    return ReviewTask.objects.filter(state=ReviewTask.State.CLAIMED, claim_expires_at__lt=timezone.now()).update(
        state=ReviewTask.State.OPEN, claimed_by=None, claimed_at=None, claim_expires_at=None
    )


@dataclass
class Labels:
    """A reviewer's labels. ``prompt_categories`` / ``response_categories`` say which text each
    code was chosen for; ``categories`` is every code (what training and agreement read). Labels
    given with ``categories`` alone (no text named) keep the older rule: some text is unsafe."""

    prompt_label: str
    response_label: str | None = None
    refusal_label: str | None = None
    categories: list[str] = field(default_factory=list)
    prompt_categories: list[str] = field(default_factory=list)
    response_categories: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "prompt_label": self.prompt_label,
            "response_label": self.response_label,
            "refusal_label": self.refusal_label,
            "categories": list(self.categories),
            "prompt_categories": list(self.prompt_categories),
            "response_categories": list(self.response_categories),
        }

    @property
    def is_unsafe(self) -> bool:
        return contract.UNSAFE in (self.prompt_label, self.response_label)

    @property
    def per_text(self) -> bool:
        return bool(self.prompt_categories or self.response_categories)


def guard_labels(item: Item) -> Labels:
    """The guard's labels; its categories (one list for the conversation) belong to each text it found unsafe."""
    verdict = item.verdict
    codes = list(verdict.categories)
    return Labels(
        verdict.prompt_label,
        verdict.response_label,
        verdict.refusal_label,
        codes,
        prompt_categories=codes if verdict.prompt_label == contract.UNSAFE else [],
        response_categories=codes if verdict.response_label == contract.UNSAFE else [],
    )


def validate_labels(item: Item, labels: Labels) -> Labels:
    """Check an override against the contract's label vocabularies and the policy's codes."""
    if labels.prompt_label not in contract.LABEL_CHOICES[contract.FIELD_PROMPT]:
        raise ReviewError(f"prompt label {labels.prompt_label!r} is not one of safe, unsafe")
    if item.has_response:
        if labels.response_label not in (contract.SAFE, contract.UNSAFE):
            raise ReviewError(f"response label {labels.response_label!r} is not one of safe, unsafe")
        if labels.refusal_label not in (contract.REFUSAL, contract.COMPLIANCE):
            raise ReviewError(f"refusal label {labels.refusal_label!r} is not one of refusal, compliance")
    else:
        labels.response_label = None
        labels.refusal_label = None
        if labels.response_categories:
            raise ReviewError("categories were chosen for the response, but this item has no response")
    known = list(item.policy_version.categories.values_list("code", flat=True))
    chosen = [*labels.categories, *labels.prompt_categories, *labels.response_categories]
    unknown = list(dict.fromkeys(code for code in chosen if code not in known))
    if unknown:
        raise ReviewError(f"unknown category code(s) {', '.join(unknown)}; policy has {', '.join(known)}")
    if labels.per_text:
        for text, label, codes in (
            ("prompt", labels.prompt_label, labels.prompt_categories),
            ("response", labels.response_label, labels.response_categories),
        ):
            if codes and label != contract.UNSAFE:
                raise ReviewError(f"categories {', '.join(codes)} were chosen for the {text}, but the {text} is labelled {label}")
    # Policy order, no duplicates.
    labels.prompt_categories = [code for code in known if code in labels.prompt_categories]
    labels.response_categories = [code for code in known if code in labels.response_categories]
    labels.categories = [code for code in known if code in chosen]
    if labels.categories and not labels.is_unsafe:
        raise ReviewError("categories were chosen but no label is unsafe")
    return labels


def decide(task_id: int, user: object, outcome: str, labels: Labels | None = None, note: str = "") -> Decision:
    """Record a reviewer's decision on their claimed task, with an audit log entry."""
    with transaction.atomic():
        task = (
            ReviewTask.objects.select_for_update(of=("self",))
            .select_related("item__policy_version__policy", "item__verdict", "item__client")
            .get(pk=task_id)
        )
        item = task.item
        if task.state == ReviewTask.State.DONE:
            raise ReviewError("this item was already decided")
        if task.claimed_by_id != getattr(user, "pk", None):
            raise ReviewError("your claim on this item expired and another reviewer took it")
        before = guard_labels(item)
        if outcome == Decision.Outcome.AGREE:
            final = before
        elif outcome == Decision.Outcome.OVERRIDE:
            if labels is None:
                raise ReviewError("an override needs labels")
            final = validate_labels(item, labels)
        else:
            raise ReviewError(f"unknown decision {outcome!r}; expected agree or override")
        now = timezone.now()
        decision = Decision.objects.create(
            task=task, item=item, reviewer=user, outcome=outcome, note=note.strip(), created_at=now, **final.as_dict()
        )
        ReviewTask.objects.filter(pk=task.pk).update(state=ReviewTask.State.DONE, completed_at=now, claim_expires_at=None)
        Item.objects.filter(pk=item.pk).update(updated_at=now)
        AuditLog.record(
            user,
            f"review.{outcome}",
            item,
            before={"source": "guard", **before.as_dict(), "action": item.verdict.action},
            after={**final.as_dict(), "outcome": outcome, "note": decision.note, "task": task.pk, "reason": task.reason},
        )
        webhooks.announce(item, "decision")
    return decision


# ----------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items,
    or both raters used one and the same label throughout)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(label) / n) * (list(b).count(label) / n) for label in labels)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else None
    return (observed - expected) / (1.0 - expected)


@dataclass
class AgreementRow:
    name: str
    pairs: int
    agreement: float | None
    kappa: float | None


@dataclass
class AgreementReport:
    pairs: int
    overall: AgreementRow
    per_reviewer: list[AgreementRow]
    per_category: list[AgreementRow]


def _row(name: str, a: list[str], b: list[str]) -> AgreementRow:
    n = len(a)
    agreement = sum(x == y for x, y in zip(a, b, strict=True)) / n if n else None
    return AgreementRow(name=name, pairs=n, agreement=agreement, kappa=cohen_kappa(a, b))


def agreement(policy_slug: str | None = None) -> AgreementReport:
    """Agreement between the first two reviewers of each double-reviewed item.

    Overall and per reviewer on the safe/unsafe judgement; per category on
    whether the category was chosen.
    """
    decisions = Decision.objects.select_related("reviewer").order_by("item_id", "created_at")
    if policy_slug:
        decisions = decisions.filter(item__policy_version__policy__slug=policy_slug)
    by_item: dict[int, list[Decision]] = defaultdict(list)
    for decision in decisions:
        seen = {d.reviewer_id for d in by_item[decision.item_id]}
        if decision.reviewer_id not in seen and len(by_item[decision.item_id]) < 2:
            by_item[decision.item_id].append(decision)
    pairs = [pair for pair in by_item.values() if len(pair) == 2]

    def judged(decision: Decision) -> str:
        return contract.UNSAFE if contract.UNSAFE in (decision.prompt_label, decision.response_label) else contract.SAFE

    overall = _row("all reviewers", [judged(p[0]) for p in pairs], [judged(p[1]) for p in pairs])
    reviewer_pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for first, second in pairs:
        for me, other in ((first, second), (second, first)):
            mine, others = reviewer_pairs[me.reviewer.get_username()]
            mine.append(judged(me))
            others.append(judged(other))
    per_reviewer = [_row(name, a, b) for name, (a, b) in sorted(reviewer_pairs.items())]
    codes = sorted({code for pair in pairs for d in pair for code in d.categories})
    per_category = [
        _row(code, [str(code in p[0].categories) for p in pairs], [str(code in p[1].categories) for p in pairs])
        for code in codes
    ]
    return AgreementReport(pairs=len(pairs), overall=overall, per_reviewer=per_reviewer, per_category=per_category)
