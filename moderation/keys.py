"""API keys (hashed at rest) and the per-key, per-minute rate limit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from moderation.models import ApiKey, RateCounter

KEY_SCHEME = "gsk"
PREFIX_LENGTH = 8
# Writing last_used_at on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def create_key(name: str, created_by: object | None = None, **fields: object) -> tuple[ApiKey, str]:
    """A new key and its full secret (the only time the secret exists outside the client)."""
    while True:
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        full_key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name,
                    prefix=prefix,
                    key_hash=hash_secret(full_key),
                    created_by=created_by if getattr(created_by, "pk", None) else None,
                    **fields,
                )
            return key, full_key
        except IntegrityError:  # prefix collision: draw again
            continue


class KeyRejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_prefix(full_key: str) -> str | None:
    scheme, _, rest = full_key.partition("_")
    if scheme != KEY_SCHEME or len(rest) <= PREFIX_LENGTH + 1 or rest[PREFIX_LENGTH] != "_":
        return None
    return rest[:PREFIX_LENGTH]


def authenticate(full_key: str) -> ApiKey:
    """The active key matching ``full_key``; ``KeyRejected`` says why not."""
    full_key = full_key.strip()
    prefix = parse_prefix(full_key)
    if prefix is None:
        raise KeyRejected("invalid_api_key", "The API key is malformed (expected gsk_<prefix>_<secret>).")
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.key_hash, hash_secret(full_key)):
        raise KeyRejected("invalid_api_key", "The API key is not valid.")
    if key.revoked_at is not None:
        raise KeyRejected("revoked_api_key", f"The API key {key.prefix} was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# ----------------------------------------------------------------- rate limit


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int
    limit: int
    retry_after_s: int


@lru_cache(maxsize=1)
def _redis_client(url: str):  # noqa: ANN202 - redis is optional at import time
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _redis_url() -> str | None:
    url = getattr(settings, "MODERATION_RATE_LIMIT_REDIS_URL", None) or settings.CELERY_BROKER_URL
    return url if url and url.startswith(("redis://", "rediss://")) else None


def _count_in_redis(url: str, prefix: str, minute: int) -> int | None:
    import redis

    name = f"guardsite:ratelimit:{prefix}:{minute}"
    try:
        pipe = _redis_client(url).pipeline()
        pipe.incr(name)
        pipe.expire(name, 120)
        count, _ = pipe.execute()
        return int(count)
    except redis.RedisError:
        return None  # Redis trouble must not take the API down: count in the database instead


def _count_in_database(prefix: str, minute: int) -> int:
    updated = RateCounter.objects.filter(key_prefix=prefix, minute=minute).update(count=F("count") + 1)
    if not updated:
        try:
            with transaction.atomic():
                RateCounter.objects.create(key_prefix=prefix, minute=minute, count=1)
            RateCounter.objects.filter(key_prefix=prefix, minute__lt=minute - 2).delete()
            return 1
        except IntegrityError:
            RateCounter.objects.filter(key_prefix=prefix, minute=minute).update(count=F("count") + 1)
    return RateCounter.objects.get(key_prefix=prefix, minute=minute).count


def hit(key: ApiKey, now: float | None = None) -> RateDecision:
    """Count one request of ``key`` in the current minute (a fixed window)."""
    now = time.time() if now is None else now
    minute = int(now // 60)
    retry_after = max(1, 60 - int(now % 60))
    url = _redis_url()
    count = _count_in_redis(url, key.prefix, minute) if url else None
    if count is None:
        count = _count_in_database(key.prefix, minute)
    limit = key.rate_limit_per_minute
    return RateDecision(allowed=count <= limit, count=count, limit=limit, retry_after_s=retry_after)
