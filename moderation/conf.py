"""Knobs of the moderation app.

Each knob is read, in order, from a Django setting of the same name (tests
override them with pytest-django's ``settings`` fixture), from the environment
(worker processes, production), else the default below. They are read at call
time, never cached at import, so an override takes effect at once.
"""

from __future__ import annotations

import os

from django.conf import settings

DEFAULTS: dict[str, float] = {
    # The guard is "uncertain" when P(unsafe) lies in [LOW, HIGH]: such items go to review.
    "MODERATION_UNCERTAIN_LOW": 0.35,
    "MODERATION_UNCERTAIN_HIGH": 0.65,
    # Share of items judged safe (and allowed) that go to review anyway (quality control).
    "MODERATION_QC_SAMPLE_RATE": 0.02,
    # 1: an allowed verdict on a text the guard read only part of (verdict.truncated: the latent heads read a
    # long text's first and last 96 tokens) goes to review, outside any budget. A harmful request padded with
    # ordinary text evades the heads (docs/guard.md, "Long texts"); where that matters, a human reads it.
    "MODERATION_REVIEW_PARTLY_READ": 0,
    # A policy with a review budget: its band is sized from this many days of its verdicts,
    # recomputed at most this often, never wider than MAX_WIDTH around the threshold, and
    # BUDGET_START_WIDTH while the policy has no traffic yet.
    "MODERATION_BUDGET_HISTORY_DAYS": 7,
    "MODERATION_BUDGET_REFRESH_SECONDS": 600,
    "MODERATION_BUDGET_MAX_WIDTH": 0.25,
    "MODERATION_BUDGET_START_WIDTH": 0.05,
    # Share of reviewed items that get a second, independent review (agreement, kappa).
    "MODERATION_DOUBLE_REVIEW_RATE": 0.1,
    # How long a reviewer holds a claimed item before it goes back to the queue.
    "MODERATION_CLAIM_TTL_SECONDS": 600,
    # How long a worker holds a claimed micro-batch before the sweeper may re-queue it.
    "MODERATION_LEASE_SECONDS": 300,
    # Deliveries of one item to workers before it is marked failed.
    "MODERATION_MAX_ATTEMPTS": 3,
    # A worker that claimed fewer items than a full micro-batch waits this long, once, for more.
    "MODERATION_MICRO_BATCH_WAIT_MS": 50,
    # A micro-batch holds at most this many characters of text (each item counted up to
    # 4 x GUARD_MAX_INPUT_TOKENS, as the guard truncates longer ones); at least one item.
    "MODERATION_MICRO_BATCH_MAX_CHARS": 65536,
    # Items of one API key waiting to be judged (received, queued or running); a batch
    # beyond it is refused with 429 and Retry-After.
    "MODERATION_MAX_QUEUED_PER_KEY": 2000,
    # Fast verdicts whose explanation the reason pass writes in one guard call.
    "MODERATION_EXPLAIN_BATCH_SIZE": 8,
    # One classify_pending task keeps claiming micro-batches for at most this long,
    # then hands over to a fresh task (so other queued work gets a turn).
    "MODERATION_TASK_TIME_BUDGET_SECONDS": 60,
    # Pending items older than this are re-announced to the workers by the sweeper.
    "MODERATION_STALE_PENDING_SECONDS": 30,
    # Webhook delivery: attempts after the first, and the HTTP timeout.
    "MODERATION_WEBHOOK_MAX_RETRIES": 5,
    "MODERATION_WEBHOOK_TIMEOUT_SECONDS": 5,
    # The idempotency record of a batch is kept this long (a replay after that is a new batch).
    "MODERATION_IDEMPOTENCY_TTL_HOURS": 24,
}


def _value(name: str) -> float:
    if hasattr(settings, name):
        return float(getattr(settings, name))
    raw = os.environ.get(name)
    if raw not in (None, ""):
        return float(raw)
    return DEFAULTS[name]


def uncertain_band() -> tuple[float, float]:
    return _value("MODERATION_UNCERTAIN_LOW"), _value("MODERATION_UNCERTAIN_HIGH")


def qc_sample_rate() -> float:
    return _value("MODERATION_QC_SAMPLE_RATE")


def review_partly_read() -> bool:
    return bool(_value("MODERATION_REVIEW_PARTLY_READ"))


def budget_history_days() -> float:
    return max(1 / 24, _value("MODERATION_BUDGET_HISTORY_DAYS"))


def budget_refresh_seconds() -> int:
    return max(0, int(_value("MODERATION_BUDGET_REFRESH_SECONDS")))


def budget_max_width() -> float:
    return min(1.0, max(0.0, _value("MODERATION_BUDGET_MAX_WIDTH")))


def budget_start_width() -> float:
    return min(1.0, max(0.0, _value("MODERATION_BUDGET_START_WIDTH")))


def double_review_rate() -> float:
    return _value("MODERATION_DOUBLE_REVIEW_RATE")


def claim_ttl_seconds() -> int:
    return int(_value("MODERATION_CLAIM_TTL_SECONDS"))


def lease_seconds() -> int:
    return int(_value("MODERATION_LEASE_SECONDS"))


def max_attempts() -> int:
    return max(1, int(_value("MODERATION_MAX_ATTEMPTS")))


def micro_batch_wait_seconds() -> float:
    return _value("MODERATION_MICRO_BATCH_WAIT_MS") / 1000.0


def task_time_budget_seconds() -> float:
    return _value("MODERATION_TASK_TIME_BUDGET_SECONDS")


def stale_pending_seconds() -> float:
    return _value("MODERATION_STALE_PENDING_SECONDS")


def webhook_max_retries() -> int:
    return int(_value("MODERATION_WEBHOOK_MAX_RETRIES"))


def webhook_timeout_seconds() -> float:
    return _value("MODERATION_WEBHOOK_TIMEOUT_SECONDS")


def idempotency_ttl_hours() -> float:
    return _value("MODERATION_IDEMPOTENCY_TTL_HOURS")


def micro_batch_size() -> int:
    return max(1, int(settings.MODERATION_MICRO_BATCH_SIZE))


def max_batch() -> int:
    return int(settings.MODERATION_MAX_BATCH)


def max_text_chars() -> int:
    return int(settings.GUARD_MAX_TEXT_CHARS)


def default_rate_limit_per_minute() -> int:
    return int(settings.MODERATION_RATE_LIMIT_PER_MINUTE)


def micro_batch_max_chars() -> int:
    return max(1, int(_value("MODERATION_MICRO_BATCH_MAX_CHARS")))


def max_queued_per_key() -> int:
    return max(1, int(_value("MODERATION_MAX_QUEUED_PER_KEY")))


def explain_batch_size() -> int:
    return max(1, int(_value("MODERATION_EXPLAIN_BATCH_SIZE")))


def max_input_tokens() -> int:
    return int(settings.GUARD_MAX_INPUT_TOKENS)
