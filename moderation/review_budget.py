"""Which verdicts go to human review, sized to what the team can review.

A verdict goes to review when the policy flags it, when the guard is uncertain (a
judged text's P(unsafe) lies within the *band* around its threshold), or, now and
then, as a quality-control sample of a confident verdict (as Label Studio and
Argilla keep a random share of the machine's labels for a human to check).

A policy without a budget uses the deployment's fixed band (``MODERATION_UNCERTAIN_LOW``
..``HIGH`` on the verdict's confidence). A policy with a budget (items a day, or a share
of its traffic) gets a band *sized* to it: from the policy's verdicts of the last
``MODERATION_BUDGET_HISTORY_DAYS`` days, the widest band whose expected inflow (the
flagged items, which always go, plus the uncertain ones, plus the QC sample of the rest)
fits the budget. The band is the same width around each text's calibrated threshold.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from guard import contract
from moderation import conf
from moderation.models import ReviewTask, Verdict

JUDGED_FIELDS = (contract.FIELD_PROMPT, contract.FIELD_RESPONSE)
DEFAULT_THRESHOLD = 0.5
# Verdicts read to size one policy's band (the latest ones; the span they cover is the history).
HISTORY_LIMIT = 50_000
FIXED, SIZED = "fixed", "sized"


# ----------------------------------------------------------------- scores


def field_scores(probabilities: Mapping[str, Any] | None, thresholds: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """{field: (P(unsafe), threshold)} of each judged text the guard scored (prompt, response)."""
    scores: dict[str, tuple[float, float]] = {}
    for name in JUDGED_FIELDS:
        distribution = (probabilities or {}).get(name)
        if not isinstance(distribution, Mapping) or contract.UNSAFE not in distribution:
            continue
        try:
            p = float(distribution[contract.UNSAFE])
            t = float((thresholds or {}).get(name, DEFAULT_THRESHOLD))
        except (TypeError, ValueError):
            continue
        if math.isfinite(p) and math.isfinite(t):
            scores[name] = (p, t)
    return scores


def distance(probabilities: Mapping[str, Any] | None, thresholds: Mapping[str, Any] | None) -> float | None:
    """How far the guard was from changing its mind: the smallest |P(unsafe) - threshold| of
    the judged texts; None when it gave no probabilities (an API guard)."""
    scores = field_scores(probabilities, thresholds)
    return min((abs(p - t) for p, t in scores.values()), default=None)


def review_field(verdict: Verdict, has_response: bool) -> tuple[str, float | None]:
    """The text a review of this verdict is about and its P(unsafe): the text the guard
    found unsafe (the more probable one when both), else the one nearest its threshold."""
    scores = field_scores(verdict.probabilities, verdict.thresholds)
    labels = {contract.FIELD_PROMPT: verdict.prompt_label, contract.FIELD_RESPONSE: verdict.response_label}
    unsafe = [name for name in scores if labels.get(name) == contract.UNSAFE]
    if unsafe:
        name = max(unsafe, key=lambda n: scores[n][0])
        return name, scores[name][0]
    if scores:
        name = min(scores, key=lambda n: abs(scores[n][0] - scores[n][1]))
        return name, scores[name][0]
    primary = contract.primary_field(has_response)
    if primary != contract.FIELD_PROMPT and verdict.prompt_label == contract.UNSAFE and verdict.response_label != contract.UNSAFE:
        return contract.FIELD_PROMPT, None  # the confidence is the response's: not this text's score
    return primary, verdict.confidence


# ----------------------------------------------------------------- the band


@dataclass(frozen=True)
class Band:
    """Which verdicts the guard is uncertain about.

    ``fixed``: confidence within [low, high] (the deployment's band). ``sized``: some judged
    text within ``width`` of its threshold (``width`` None: an empty band, the flagged items
    alone fill the budget). The expected figures are items a day, from the history.
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    width: float | None = None
    budget_per_day: float | None = None
    history_items: int = 0
    history_days: float = 0.0
    expected_flagged: float = 0.0
    expected_uncertain: float = 0.0
    expected_qc: float = 0.0

    @property
    def expected_total(self) -> float:
        return self.expected_flagged + self.expected_uncertain + self.expected_qc

    def holds(self, verdict: Verdict) -> bool:
        if self.kind == FIXED:
            return verdict.confidence is not None and self.low <= verdict.confidence <= self.high
        d = distance(verdict.probabilities, verdict.thresholds)
        return self.width is not None and d is not None and d <= self.width

    def describe(self) -> str:
        if self.kind == FIXED:
            return f"P(unsafe) {self.low:g}–{self.high:g}"
        if self.width is None:
            return "empty (flagged items fill the budget)"
        return f"threshold ± {self.width:.3f}"


@dataclass(frozen=True)
class HistoryEntry:
    """One past verdict as the sizing sees it: flagged (always reviewed), and its distance."""

    flagged: bool
    distance: float | None


NOISE_Z = 1.645  # one-sided 95%


def expected_ceiling(budget_per_day: float) -> float:
    """The largest expected daily inflow x whose busy day (x + z * sqrt(x), z for 95%) still fits the budget."""
    if budget_per_day <= 0:
        return 0.0
    root = (-NOISE_Z + math.sqrt(NOISE_Z**2 + 4 * budget_per_day)) / 2
    return root * root


def size_band(
    history: Sequence[HistoryEntry], days: float, budget_per_day: float, qc_rate: float, max_width: float
) -> Band:
    """The widest band (at most ``max_width``) whose expected daily inflow on ``history``
    (``days`` of verdicts) fits ``budget_per_day`` on a busy day too: every flagged item, the
    unflagged ones within the band, and a ``qc_rate`` sample of the rest."""
    days = max(days, 1e-9)
    flagged = sum(1 for entry in history if entry.flagged)
    scored = sorted(entry.distance for entry in history if not entry.flagged and entry.distance is not None)
    unscored = sum(1 for entry in history if not entry.flagged and entry.distance is None)
    # Day-to-day noise: a day's inflow is about Poisson around its expectation, so the expectation
    # is held where the 95th percentile of a day (x + 1.645 * sqrt(x)) fits the budget.
    allowed = expected_ceiling(budget_per_day) * days
    # flagged + k + qc_rate * (rest - k) <= allowed  =>  k <= (allowed - flagged - qc_rate * rest) / (1 - qc_rate)
    rest = len(scored) + unscored
    room = allowed - flagged - qc_rate * rest
    k = math.floor(room / (1.0 - qc_rate) + 1e-9) if qc_rate < 1.0 else (len(scored) if room >= 0 else 0)
    k = max(0, min(k, bisect.bisect_right(scored, max_width)))
    width: float | None = None
    if k > 0:
        width = scored[k - 1]
        if bisect.bisect_right(scored, width) > k:  # ties beyond the room: stop below them
            below = bisect.bisect_left(scored, width) - 1
            width = scored[below] if below >= 0 else None
        k = bisect.bisect_right(scored, width) if width is not None else 0
    return Band(
        kind=SIZED,
        width=width,
        budget_per_day=budget_per_day,
        history_items=len(history),
        history_days=days,
        expected_flagged=flagged / days,
        expected_uncertain=k / days,
        expected_qc=qc_rate * (rest - k) / days,
    )


def budget_per_day(policy: Any, traffic_per_day: float) -> float | None:
    """The policy's budget in items a day (a share of traffic turned into items); None without one."""
    if policy.review_budget == policy.ReviewBudget.PER_DAY and policy.review_items_per_day:
        return float(policy.review_items_per_day)
    if policy.review_budget == policy.ReviewBudget.SHARE and policy.review_traffic_percent:
        return policy.review_traffic_percent / 100.0 * traffic_per_day
    return None


def history(policy: Any, now: Any = None) -> tuple[list[HistoryEntry], float]:
    """The policy's recent verdicts (the latest ``HISTORY_LIMIT`` of the last N days) and the days they span."""
    now = now or timezone.now()
    window = timedelta(days=conf.budget_history_days())
    rows = list(
        Verdict.objects.filter(item__policy_version__policy=policy, created_at__gte=now - window, created_at__lte=now)
        .order_by("-id")
        .values_list("action", "probabilities", "thresholds", "created_at")[:HISTORY_LIMIT]
    )
    if not rows:
        return [], 0.0
    earliest = min(row[3] for row in rows)
    span = window if len(rows) < HISTORY_LIMIT else now - earliest
    # A young policy: its own span, at least an hour (a first burst is not a day's traffic).
    if len(rows) < HISTORY_LIMIT and now - earliest < window:
        span = max(now - earliest, timedelta(hours=1))
    entries = [HistoryEntry(flagged=action == Verdict.Action.FLAG, distance=distance(p, t)) for action, p, t, _ in rows]
    return entries, span.total_seconds() / 86400.0


def compute_band(policy: Any, now: Any = None) -> Band:
    if policy.review_budget == policy.ReviewBudget.FIXED:
        low, high = conf.uncertain_band()
        return Band(kind=FIXED, low=low, high=high)
    entries, days = history(policy, now)
    if not entries:
        # No traffic yet: a narrow band until there is a distribution to size it from.
        budget = budget_per_day(policy, 0.0)
        return Band(kind=SIZED, width=conf.budget_start_width(), budget_per_day=budget)
    budget = budget_per_day(policy, len(entries) / days) or 0.0
    return size_band(entries, days, budget, conf.qc_sample_rate(), conf.budget_max_width())


def _cache_key(policy: Any) -> str:
    created = policy.created_at.timestamp() if policy.created_at else 0
    knobs = (policy.review_budget, policy.review_items_per_day, policy.review_traffic_percent, conf.qc_sample_rate(),
             conf.budget_history_days(), conf.budget_max_width(), conf.budget_start_width())
    return "review-band-" + hashlib.sha256(repr((policy.pk, created, knobs)).encode()).hexdigest()[:32]


def band_for(policy: Any) -> Band:
    """The policy's band; a sized one is recomputed at most every ``MODERATION_BUDGET_REFRESH_SECONDS``
    (a budget change takes effect at once: the budget is part of the cache key)."""
    if policy.review_budget == policy.ReviewBudget.FIXED:
        return compute_band(policy)
    key = _cache_key(policy)
    band = cache.get(key)
    if band is None:
        band = compute_band(policy)
        cache.set(key, band, conf.budget_refresh_seconds())
    return band


# ----------------------------------------------------------------- enrolment


def review_reason(verdict: Verdict, rng: random.Random | None = None, band: Band | None = None) -> str | None:
    """Why this verdict goes to a human, or None."""
    rng = rng or random
    if verdict.action == Verdict.Action.FLAG:
        return ReviewTask.Reason.FLAG
    band = band or band_for(verdict.item.policy_version.policy)
    if band.holds(verdict):
        return ReviewTask.Reason.UNCERTAIN
    if verdict.truncated and verdict.action == Verdict.Action.ALLOW and conf.review_partly_read():
        return ReviewTask.Reason.PARTLY_READ
    if band.kind == FIXED:
        confident = verdict.action == Verdict.Action.ALLOW and not verdict.is_unsafe
    else:  # a budget samples every confident verdict, blocks included (false positives are errors too)
        confident = True
    if confident and rng.random() < conf.qc_sample_rate():
        return ReviewTask.Reason.QC_SAMPLE
    return None


def enroll_for_review(verdict: Verdict, rng: random.Random | None = None, band: Band | None = None) -> list[ReviewTask]:
    rng = rng or random
    reason = review_reason(verdict, rng, band)
    if reason is None:
        return []
    reasons = [reason]
    if rng.random() < conf.double_review_rate():
        reasons.append(ReviewTask.Reason.DOUBLE)
    field, score = review_field(verdict, verdict.item.has_response)
    tasks = []
    for name in reasons:
        task, _ = ReviewTask.objects.get_or_create(
            item_id=verdict.item_id,
            reason=name,
            defaults={"priority": ReviewTask.PRIORITY[name], "field": field, "score": score},
        )
        tasks.append(task)
    return tasks


# ----------------------------------------------------------------- inflow against the budget


@dataclass(frozen=True)
class BudgetRow:
    slug: str
    name: str
    budget: str
    band: Band
    inflow_day: int
    by_reason: dict[str, int]

    @property
    def over(self) -> bool:
        return self.band.budget_per_day is not None and self.inflow_day > self.band.budget_per_day

    @property
    def budget_per_day(self) -> float | None:
        return self.band.budget_per_day


def budget_rows(now: Any = None) -> list[BudgetRow]:
    """Each policy with traffic or a budget: items that entered review in the last 24 h
    (by reason; second reviews are not new items) against its budget and band."""
    from policies.models import Policy

    now = now or timezone.now()
    since = now - timedelta(days=1)
    entered = (
        ReviewTask.objects.filter(created_at__gte=since)
        .exclude(reason=ReviewTask.Reason.DOUBLE)
        .values_list("item__policy_version__policy_id", "reason")
        .annotate(n=Count("item_id", distinct=True))
    )
    by_policy: dict[int, dict[str, int]] = {}
    for policy_id, reason, n in entered:
        by_policy.setdefault(policy_id, {})[reason] = n
    rows = []
    for policy in Policy.objects.order_by("slug"):
        counts = by_policy.get(policy.pk, {})
        if not counts and policy.review_budget == Policy.ReviewBudget.FIXED:
            continue
        rows.append(
            BudgetRow(
                slug=policy.slug,
                name=policy.name,
                budget=policy.review_budget_text,
                band=band_for(policy),
                inflow_day=sum(counts.values()),
                by_reason={ReviewTask.Reason(r).label: n for r, n in sorted(counts.items())},
            )
        )
    return rows
