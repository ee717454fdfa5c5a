"""Try a policy's draft on its recent traffic before publishing it.

A custom category written in the editor is scored zero-shot from its name and description
(``guard.heads``): measured on the held-out policy-following pairs it decides about four texts
in five right, and a zero-shot "Fortune telling" added to the General preset newly flagged 4 of 250
ToxicChat prompts (a D&D character, a poem on magick, black holes; docs/guard.md). So an operator should see what a draft would change before it goes live: a
replay judges the policy's newest items again, under the live version and under a snapshot
of the draft, with the model that serves the policy, and lists every item whose verdict would
change, with the reviewer's decision where there is one (how often each version agrees with
the reviewers is the replay's yardstick). Nothing is written to the items.

A replay runs on the ``gpu-infer`` queue (``moderation.tasks.replay_draft``); with latent heads
a verdict is one forward of the backbone: those 250 prompts under both versions took 20-43 s on
2 CPU cores (the same policy twice 20-23 s: the draft costs little beside the forward).
A replay whose worker died stops beating (``heartbeat_at``) and is shown as stalled; it can be
asked for again: it only reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from guard.backends.base import GuardRequest
from guard.contract import UNSAFE, PolicySpec, Verdict
from guard.spec_json import spec_from_json, spec_to_json
from moderation import task_names
from moderation.models import DraftReplay, Item

SIZES = (100, 250, 500)
DEFAULT_SIZE = 250
BATCH = 16
MAX_CHANGES = 200  # rows listed; the counts cover every judged item
EXCERPT = 280
STALE_AFTER = timedelta(seconds=60)


class ReplayRefused(ValueError):
    """Why a replay cannot start (shown to the operator as it is)."""


@dataclass(frozen=True)
class Judged:
    """One item's verdicts under both versions, with the reviewer's label where there is one."""

    item: Item
    live: Verdict
    draft: Verdict
    reviewed: str  # "unsafe", "safe" or "" (not reviewed)

    @property
    def change(self) -> str:
        if self.live.is_unsafe != self.draft.is_unsafe:
            return "newly unsafe" if self.draft.is_unsafe else "newly safe"
        if self.draft.is_unsafe and sorted(self.live.categories) != sorted(self.draft.categories):
            return "other codes"
        return ""


def judged_items(policy: Any) -> Any:
    """The policy's items that have a verdict (any version): what a replay can judge again."""
    return Item.objects.filter(policy_version__policy=policy, verdict__isnull=False)


def recent_items(policy: Any, sample: int) -> list[Item]:
    """The policy's newest judged items, newest first, with their review decisions."""
    return list(judged_items(policy).prefetch_related("decisions").order_by("-created_at", "-id")[:sample])


def start(policy: Any, sample: int, user: Any = None) -> DraftReplay:
    """Snapshot the draft and queue its replay on the newest ``sample`` items; ``ReplayRefused`` says why not."""
    if sample not in SIZES:
        raise ReplayRefused(f"Replay {', '.join(map(str, SIZES))} items, not {sample}.")
    live = policy.latest_version()
    if live is None:
        raise ReplayRefused("Publish a first version: a replay compares the draft with the live version on the traffic it judged.")
    draft = policy.draft()
    if not draft.categories.exists():
        raise ReplayRefused("The draft has no categories: add one before trying it on traffic.")
    if not judged_items(policy).exists():
        raise ReplayRefused(f"No traffic yet: {policy.name} has no judged items to replay.")
    running = policy.replays.filter(status__in=(DraftReplay.Status.QUEUED, DraftReplay.Status.RUNNING)).first()
    if running is not None and not is_stalled(running):
        raise ReplayRefused(f"Replay #{running.pk} of this policy is still running; wait for it to finish.")
    replay = DraftReplay.objects.create(
        policy=policy, live_version=live, draft_spec=spec_to_json(draft.to_spec()), sample=sample,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    transaction.on_commit(lambda: task_names.queue(task_names.REPLAY_DRAFT, replay.pk))
    return replay


def is_stalled(replay: DraftReplay) -> bool:
    """A replay nobody works on: queued or running, and no heartbeat for ``STALE_AFTER``."""
    if not replay.is_active:
        return False
    last = replay.heartbeat_at or replay.created_at
    return timezone.now() - last > STALE_AFTER


def reviewer_label(item: Item) -> str:
    """The latest review decision's label of the item ("" when nobody reviewed it)."""
    latest = item.latest_decision()
    if latest is None:
        return ""
    return UNSAFE if UNSAFE in (latest.prompt_label, latest.response_label) else "safe"


def judge(items: list[Item], live: PolicySpec, draft: PolicySpec, model: str | None,
          progress: Callable[[int, int], None] | None = None) -> list[Judged]:
    """Both verdicts of every item, in fast mode, one guard call per batch: the backend computes each
    distinct conversation's states once per call, so the draft costs the heads' scoring, not a forward."""
    from guard.runtime import classify

    out: list[Judged] = []
    for start_at in range(0, len(items), BATCH):
        batch = items[start_at:start_at + BATCH]
        # Each item's two requests side by side: the backend cuts a call into its own batches, and only
        # within one does it compute a conversation's states once for both versions.
        requests = [GuardRequest(policy=spec, prompt=i.prompt, response=i.response, mode="fast")
                    for i in batch for spec in (live, draft)]
        verdicts = classify(requests, model)
        out += [Judged(item, verdicts[2 * k], verdicts[2 * k + 1], reviewer_label(item)) for k, item in enumerate(batch)]
        if progress is not None:
            progress(len(out), len(items))
    return out


def _answer(verdict: Verdict) -> str:
    return f"{UNSAFE} {', '.join(verdict.categories)}".strip() if verdict.is_unsafe else "safe"


def report(judged: list[Judged], live: PolicySpec, draft: PolicySpec, model_label: str) -> dict[str, Any]:
    """What the replay page shows: counts, agreement with reviewers, per-code counts, changed items."""
    reviewed = [j for j in judged if j.reviewed]
    changed = [j for j in judged if j.change]
    order = {"newly unsafe": 0, "newly safe": 1, "other codes": 2}
    changed.sort(key=lambda j: (order[j.change], -j.item.pk))
    live_codes = Counter(code for j in judged if j.live.is_unsafe for code in j.live.categories)
    draft_codes = Counter(code for j in judged if j.draft.is_unsafe for code in j.draft.categories)
    names = {c.code: c.name for c in live.categories} | {c.code: c.name for c in draft.categories}
    return {
        "judged": len(judged),
        "model": model_label,
        "decided_by": judged[0].draft.decided_by if judged else "",
        "live_unsafe": sum(j.live.is_unsafe for j in judged),
        "draft_unsafe": sum(j.draft.is_unsafe for j in judged),
        "newly_unsafe": sum(j.change == "newly unsafe" for j in judged),
        "newly_safe": sum(j.change == "newly safe" for j in judged),
        "other_codes": sum(j.change == "other codes" for j in judged),
        "reviewed": len(reviewed),
        "live_agrees": sum((UNSAFE if j.live.is_unsafe else "safe") == j.reviewed for j in reviewed),
        "draft_agrees": sum((UNSAFE if j.draft.is_unsafe else "safe") == j.reviewed for j in reviewed),
        "codes": [
            {"code": code, "name": names.get(code, ""), "live": live_codes[code], "draft": draft_codes[code],
             "in_live": live.category(code) is not None, "in_draft": draft.category(code) is not None}
            for code in dict.fromkeys([*live.codes, *draft.codes])
        ],
        "changes": [
            {"item": j.item.pk, "text": _excerpt(j.item), "change": j.change, "live": _answer(j.live),
             "draft": _answer(j.draft), "reviewed": j.reviewed,
             # Codes only the draft names here: each can be told "not this one" (``allow_in_draft``).
             "new_codes": [c for c in j.draft.categories if c not in j.live.categories] if j.draft.is_unsafe else []}
            for j in changed[:MAX_CHANGES]
        ],
    }


def _excerpt(item: Item) -> str:
    text = " ".join(item.judged_text.split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def run(replay: DraftReplay, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Judge the replay's items under both versions and return its report."""
    from guard import serving
    from moderation.dispatch import model_name_for

    policy = replay.policy
    live_version = replay.live_version or policy.latest_version()
    if live_version is None:
        raise ReplayRefused("The policy has no published version any more.")
    live, draft = live_version.to_spec(), spec_from_json(replay.draft_spec)
    model = model_name_for(policy)
    items = recent_items(policy, replay.sample)
    # By registered name and role, never a server path (``guard.serving``).
    label = serving.model_label(policy.production_model) if policy.production_model else serving.default_model_label()
    return report(judge(items, live, draft, model, progress), live, draft, label)


def execute(replay_id: int) -> str:
    """The task's body: claim a queued (or stalled) replay, run it, store its report or its error.
    Idempotent: a finished replay, or one another worker is running, is left alone."""
    with transaction.atomic():
        replay = DraftReplay.objects.select_for_update(of=("self",)).select_related("policy__production_model", "live_version").filter(pk=replay_id).first()
        if replay is None:
            return "missing"
        if replay.status == DraftReplay.Status.RUNNING and not is_stalled(replay):
            return "running elsewhere"
        if replay.status in (DraftReplay.Status.DONE, DraftReplay.Status.FAILED):
            return replay.status
        replay.status, replay.heartbeat_at, replay.done, replay.error = DraftReplay.Status.RUNNING, timezone.now(), 0, ""
        replay.save(update_fields=["status", "heartbeat_at", "done", "error"])

    def progress(done: int, total: int) -> None:
        DraftReplay.objects.filter(pk=replay_id).update(done=done, total=total, heartbeat_at=timezone.now())

    try:
        result = run(replay, progress)
    except Exception as error:  # noqa: BLE001 - shown on the replay's page; the items are untouched
        DraftReplay.objects.filter(pk=replay_id).update(
            status=DraftReplay.Status.FAILED, error=f"{type(error).__name__}: {error}", finished_at=timezone.now())
        return DraftReplay.Status.FAILED
    DraftReplay.objects.filter(pk=replay_id).update(
        status=DraftReplay.Status.DONE, report=result, done=result["judged"], total=result["judged"], finished_at=timezone.now())
    return DraftReplay.Status.DONE


def allow_in_draft(replay: DraftReplay, item_id: int, code: str, user: Any = None) -> str:
    """Teach the draft from a replay row: the item's text becomes an "allowed" example of the draft's
    category ``code`` (a near miss: ``guard.zero_shot``), audited like any edit of the draft. Returns
    what happened, in words; ``ReplayRefused`` says why not."""
    from policies import audit
    from policies.validation import MAX_EXAMPLE_CHARS, MAX_EXAMPLES

    row = next((r for r in (replay.report or {}).get("changes", ()) if r["item"] == item_id), None)
    if row is None:
        raise ReplayRefused(f"Item #{item_id} is not among the changes of replay #{replay.pk}.")
    if code not in row.get("new_codes", ()):
        raise ReplayRefused(f"The draft did not newly name {code} for item #{item_id}.")
    policy = replay.policy
    category = policy.draft().categories.filter(code=code).first()
    if category is None:
        raise ReplayRefused(f"The draft has no category {code} any more.")
    item = Item.objects.get(pk=item_id)
    # One line (the editor keeps one example per line), cut to what an example may hold.
    text = " ".join(item.judged_text.split())[:MAX_EXAMPLE_CHARS]
    if text in category.allowed_examples:
        return f"Item #{item_id} is already an allowed example of {code}."
    if len(category.allowed_examples) >= MAX_EXAMPLES:
        raise ReplayRefused(f"{code} already has {MAX_EXAMPLES} allowed examples; remove some in the editor first.")
    before = audit.category_state(category)
    category.allowed_examples = [*category.allowed_examples, text]
    category.save(update_fields=["allowed_examples"])
    audit.draft_edited(user, policy, f"category {code}: item #{item_id} allowed (replay #{replay.pk})",
                       before=before, after=audit.category_state(category))
    return f"Item #{item_id} is now an allowed example of {code} in the draft."
