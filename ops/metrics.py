"""The numbers on the overview page.

Every figure is aggregated in SQL (COUNT/MIN grouped by hour, by category, by
reviewer, by model) over indexed timestamp columns, so the page costs a few
small queries however many items there are. Hourly rows are folded into
coarser buckets in Python (at most 168 rows for a week).

Category codes live in a JSON list on the verdict; expanding it needs the
database's JSON table function (``jsonb_array_elements_text`` on PostgreSQL,
``json_each`` on SQLite), hence the two small raw queries.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from guard.serving import serving
from moderation.models import Decision, Item, ReviewTask, Verdict
from ops import worker
from ops.models import WorkerHeartbeat
from policies.models import Policy, PolicyVersion

logger = logging.getLogger(__name__)

QUEUES = ("default", "gpu-infer", "gpu-train")
# kombu's Redis transport keeps priorities 3, 6 and 9 of queue "q" in lists "q\x06\x163" etc.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
# The broker must never make the page hang.
BROKER_TIMEOUT_S = 0.5
MAX_CATEGORY_LINES = 8


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    bucket: timedelta
    label_every: int  # x-axis label on every n-th bucket
    label_format: str


WINDOWS = {
    "24h": Window("24h", "last 24 hours", timedelta(hours=24), timedelta(hours=1), 3, "%H:00"),
    "7d": Window("7d", "last 7 days", timedelta(days=7), timedelta(hours=6), 4, "%a %d"),
}
DEFAULT_WINDOW = "24h"


@dataclass
class Buckets:
    """The time buckets of a window, oldest first; ``index(t)`` finds a timestamp's bucket."""

    window: Window
    now: datetime
    starts: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        hours = int(self.window.bucket.total_seconds() // 3600)
        end = self.now.replace(minute=0, second=0, microsecond=0)
        # Align coarse buckets to multiples of their size (00:00, 06:00, ...).
        end -= timedelta(hours=end.hour % hours)
        count = int(self.window.span / self.window.bucket)
        self.starts = [end - self.window.bucket * (count - 1 - i) for i in range(count)]

    @property
    def start(self) -> datetime:
        return self.starts[0]

    @property
    def bucket_hours(self) -> float:
        return self.window.bucket.total_seconds() / 3600

    def index(self, moment: datetime) -> int | None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        position = int((moment - self.start) // self.window.bucket)
        return position if 0 <= position < len(self.starts) else None

    def labels(self) -> list[str]:
        return [start.strftime(self.window.label_format) for start in self.starts]

    def fold(self, rows: list[tuple[datetime, float]]) -> list[float]:
        """Sum hourly (moment, value) rows into this window's buckets."""
        totals = [0.0] * len(self.starts)
        for moment, value in rows:
            index = self.index(moment)
            if index is not None:
                totals[index] += value
        return totals


# ----------------------------------------------------------------- traffic


def items_per_hour(buckets: Buckets) -> list[float]:
    rows = (
        Item.objects.filter(created_at__gte=buckets.start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    totals = buckets.fold([(hour, n) for hour, n in rows])
    return [round(total / buckets.bucket_hours, 2) for total in totals]


def verdicts_per_bucket(buckets: Buckets) -> list[float]:
    rows = (
        Verdict.objects.filter(created_at__gte=buckets.start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    return buckets.fold([(hour, n) for hour, n in rows])


def unsafe_per_bucket(buckets: Buckets) -> list[float]:
    rows = (
        Verdict.objects.filter(created_at__gte=buckets.start)
        .filter(Q(prompt_label="unsafe") | Q(response_label="unsafe"))
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    return buckets.fold([(hour, n) for hour, n in rows])


def _json_codes(column: str, empty_as: str | None = None) -> str:
    """SQL of a table function yielding the codes of a JSON list column as ``code``."""
    if connection.vendor == "postgresql":
        value = f"{column}::jsonb"
        if empty_as is not None:
            value = f"CASE WHEN jsonb_array_length({value}) = 0 THEN '[\"{empty_as}\"]'::jsonb ELSE {value} END"
        return f"jsonb_array_elements_text({value}) AS codes(code)"
    value = column
    if empty_as is not None:
        value = f"CASE WHEN json_array_length({column}) = 0 THEN '[\"{empty_as}\"]' ELSE {column} END"
    # SQLite: a table-valued function may read the outer row (a subquery may not); its column is "value".
    return f"json_each({value}) AS codes"


def _code_column() -> str:
    return "codes.code" if connection.vendor == "postgresql" else "codes.value"


def _hour_sql(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC')"
    return f"strftime('%%Y-%%m-%%d %%H:00:00', {column})"


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def category_counts_per_hour(since: datetime) -> list[tuple[datetime, str, str, int]]:
    """(hour, policy slug, category code, verdicts naming it) since ``since``."""
    verdict = Verdict._meta.db_table
    item = Item._meta.db_table
    version = PolicyVersion._meta.db_table
    policy = Policy._meta.db_table
    sql = (
        f"SELECT {_hour_sql('v.created_at')} AS hour, p.slug, {_code_column()}, COUNT(*) "
        f"FROM {verdict} v JOIN {item} i ON i.id = v.item_id "
        f"JOIN {version} pv ON pv.id = i.policy_version_id JOIN {policy} p ON p.id = pv.policy_id "
        f"CROSS JOIN {_json_codes('v.categories')} "
        "WHERE v.created_at >= %s GROUP BY 1, 2, 3"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(since)])
        return [(_as_datetime(hour), slug, code, n) for hour, slug, code, n in cursor.fetchall()]


@dataclass
class CategoryLine:
    name: str
    rates: list[float | None]  # percent of the bucket's verdicts naming the category
    total: int


def flag_rate_per_category(buckets: Buckets) -> list[CategoryLine]:
    """Share of judged items per bucket whose verdict names each category (top categories)."""
    judged = verdicts_per_bucket(buckets)
    per_line: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(buckets.starts))
    for hour, slug, code, n in category_counts_per_hour(buckets.start):
        index = buckets.index(hour)
        if index is not None:
            per_line[f"{slug} {code}"][index] += n
    ranked = sorted(per_line.items(), key=lambda kv: (-sum(kv[1]), kv[0]))[:MAX_CATEGORY_LINES]
    lines = []
    for name, counts in ranked:
        rates = [round(100 * c / j, 1) if j else None for c, j in zip(counts, judged, strict=True)]
        lines.append(CategoryLine(name=name, rates=rates, total=int(sum(counts))))
    return lines


def unsafe_rate(buckets: Buckets) -> list[float | None]:
    judged = verdicts_per_bucket(buckets)
    unsafe = unsafe_per_bucket(buckets)
    return [round(100 * u / j, 1) if j else None for u, j in zip(unsafe, judged, strict=True)]


# ----------------------------------------------------------------- review


@dataclass
class Backlog:
    """Items waiting for review (an item with a second review waiting is one item, not two)."""

    open: int
    claimed: int
    oldest_item_at: datetime | None
    by_reason: dict[str, int]
    items: int = 0

    @property
    def total(self) -> int:
        return self.items

    @property
    def oldest_age(self) -> timedelta | None:
        return timezone.now() - self.oldest_item_at if self.oldest_item_at else None


def review_backlog() -> Backlog:
    waiting = ReviewTask.objects.filter(state__in=[ReviewTask.State.OPEN, ReviewTask.State.CLAIMED])
    by_state = dict(waiting.values_list("state").annotate(n=Count("item_id", distinct=True)))
    by_reason = dict(waiting.values_list("reason").annotate(n=Count("item_id", distinct=True)))
    oldest = waiting.aggregate(oldest=Min("item__created_at"))["oldest"]
    return Backlog(
        open=by_state.get(ReviewTask.State.OPEN, 0),
        claimed=by_state.get(ReviewTask.State.CLAIMED, 0),
        oldest_item_at=oldest,
        by_reason=by_reason,
        items=waiting.values("item_id").distinct().count(),
    )


def decisions_per_hour(buckets: Buckets) -> list[float]:
    rows = (
        Decision.objects.filter(created_at__gte=buckets.start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    return [round(t / buckets.bucket_hours, 2) for t in buckets.fold([(h, n) for h, n in rows])]


def reviewer_throughput(since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Decisions per reviewer since ``since``, most active first."""
    rows = (
        Decision.objects.filter(created_at__gte=since)
        .values("reviewer__username")
        .annotate(decisions=Count("id"), overturned=Count("id", filter=Q(outcome=Decision.Outcome.OVERRIDE)), last=Max("created_at"))
        .order_by("-decisions", "reviewer__username")[:limit]
    )
    return [
        {"reviewer": r["reviewer__username"], "decisions": r["decisions"], "overturned": r["overturned"], "last": r["last"]}
        for r in rows
    ]


@dataclass
class OverturnRow:
    label: str
    decisions: int
    overturned: int

    @property
    def rate(self) -> float:
        return 100 * self.overturned / self.decisions if self.decisions else 0.0


def overturns_per_model(since: datetime) -> list[OverturnRow]:
    rows = (
        Decision.objects.filter(created_at__gte=since)
        .values_list("item__verdict__model_label")
        .annotate(total=Count("id"), overturned=Count("id", filter=Q(outcome=Decision.Outcome.OVERRIDE)))
        .order_by("-total")
    )
    return [OverturnRow(label or "(no verdict)", total, overturned) for label, total, overturned in rows]


def overturns_per_category(since: datetime, limit: int = 12) -> list[OverturnRow]:
    """Per category the guard named (``none`` when it judged the item safe)."""
    decision = Decision._meta.db_table
    verdict = Verdict._meta.db_table
    item = Item._meta.db_table
    version = PolicyVersion._meta.db_table
    policy = Policy._meta.db_table
    sql = (
        f"SELECT p.slug, {_code_column()}, COUNT(*), SUM(CASE WHEN d.outcome = %s THEN 1 ELSE 0 END) "
        f"FROM {decision} d JOIN {verdict} v ON v.item_id = d.item_id JOIN {item} i ON i.id = d.item_id "
        f"JOIN {version} pv ON pv.id = i.policy_version_id JOIN {policy} p ON p.id = pv.policy_id "
        f"CROSS JOIN {_json_codes('v.categories', empty_as='none')} "
        "WHERE d.created_at >= %s GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Decision.Outcome.OVERRIDE, connection.ops.adapt_datetimefield_value(since)])
        rows = cursor.fetchall()[:limit]
    return [OverturnRow(f"{slug} {code}", int(total), int(over or 0)) for slug, code, total, over in rows]


# ----------------------------------------------------------------- pipeline


@dataclass
class Pipeline:
    by_status: dict[str, int]
    oldest_pending_at: datetime | None

    @property
    def pending(self) -> int:
        return sum(self.by_status.get(s, 0) for s in (Item.Status.RECEIVED, Item.Status.QUEUED, Item.Status.RUNNING))

    @property
    def oldest_pending_age(self) -> timedelta | None:
        return timezone.now() - self.oldest_pending_at if self.oldest_pending_at else None


def pipeline() -> Pipeline:
    unfinished = [Item.Status.RECEIVED, Item.Status.QUEUED, Item.Status.RUNNING, Item.Status.FAILED]
    by_status = dict(Item.objects.filter(status__in=unfinished).values_list("status").annotate(n=Count("id")))
    oldest = Item.objects.filter(status__in=Item.PENDING + (Item.Status.RUNNING,)).aggregate(o=Min("created_at"))["o"]
    return Pipeline(by_status=by_status, oldest_pending_at=oldest)


# ----------------------------------------------------------------- workers and queues


@dataclass
class WorkerRow:
    hostname: str
    queues: str
    pid: int
    seen_at: datetime
    started_at: datetime | None
    state: str  # online | stopped | lost

    @property
    def seen_ago(self) -> timedelta:
        return timezone.now() - self.seen_at


def workers() -> list[WorkerRow]:
    now = timezone.now()
    stale = now - timedelta(seconds=worker.STALE_AFTER_S)
    rows = []
    for beat in WorkerHeartbeat.objects.filter(seen_at__gte=now - worker.FORGET_AFTER).order_by("hostname")[:50]:
        if beat.stopped_at is not None:
            state = "stopped"
        elif beat.seen_at < stale:
            state = "lost"
        else:
            state = "online"
        rows.append(WorkerRow(beat.hostname, beat.queues, beat.pid, beat.seen_at, beat.started_at, state))
    return rows


@dataclass
class QueueState:
    broker: str  # redis | filesystem | other
    reachable: bool
    lengths: dict[str, int | None]
    in_progress: int | None = None  # delivered to a worker, not yet acknowledged
    error: str = ""


def queue_lengths() -> QueueState:
    url = settings.CELERY_BROKER_URL or ""
    if url.startswith(("redis://", "rediss://")):
        return _redis_queue_lengths(url)
    if url.startswith("filesystem://"):
        return _filesystem_queue_lengths()
    return QueueState(broker=url.split(":", 1)[0] or "unknown", reachable=True, lengths=dict.fromkeys(QUEUES))


def _redis_queue_lengths(url: str) -> QueueState:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S)
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            for step in REDIS_PRIORITY_STEPS:
                pipe.llen(f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" if step else queue)
        pipe.hlen("unacked")
        values = pipe.execute()
        client.close()
    except redis.RedisError as error:
        return QueueState(broker="redis", reachable=False, lengths=dict.fromkeys(QUEUES), error=str(error))
    steps = len(REDIS_PRIORITY_STEPS)
    lengths = {queue: int(sum(values[i * steps : (i + 1) * steps])) for i, queue in enumerate(QUEUES)}
    return QueueState(broker="redis", reachable=True, lengths=lengths, in_progress=int(values[-1]))


def _filesystem_queue_lengths() -> QueueState:
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
    lengths: dict[str, int | None] = dict.fromkeys(QUEUES, 0)
    try:
        from pathlib import Path

        for entry in Path(folder).iterdir():
            # kombu names messages "<ms>_<uuid>.<queue>.msg".
            queue = entry.name.partition(".")[2].removesuffix(".msg")
            if queue in lengths:
                lengths[queue] = (lengths[queue] or 0) + 1
    except OSError as error:
        return QueueState(broker="filesystem", reachable=False, lengths=dict.fromkeys(QUEUES), error=str(error))
    return QueueState(broker="filesystem", reachable=True, lengths=lengths)


# (label, app, model, detail URL name): the long-running jobs of other apps, where they exist.
JOB_MODELS = (
    ("training", "trainer", "TrainingJob", "trainer:detail"),
    ("evaluation", "evaluation", "EvaluationRun", "evaluation:detail"),
)
ACTIVE_JOB_STATES = ("queued", "running", "cancelling")


def running_jobs() -> list[dict[str, Any]]:
    """Queued, running (or cancelling) training and evaluation jobs."""
    from django.urls import NoReverseMatch, reverse

    jobs: list[dict[str, Any]] = []
    for label, app_label, model_name, url_name in JOB_MODELS:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            continue
        try:
            active = list(model.objects.filter(status__in=ACTIVE_JOB_STATES).order_by("-pk")[:10])
        except Exception as error:  # noqa: BLE001 - another app's table in flux must not break the page
            logger.warning("could not list %s jobs: %s", label, error)
            continue
        for job in active:
            progress = getattr(job, "progress_percent", None)
            try:
                url = reverse(url_name, args=[job.pk])
            except NoReverseMatch:
                url = ""
            jobs.append(
                {
                    "kind": label,
                    "name": str(job),
                    "status": job.status,
                    "progress": int(progress) if isinstance(progress, int | float) else None,
                    "url": url,
                }
            )
    return jobs


# ----------------------------------------------------------------- models


def production_models() -> list[dict[str, Any]]:
    rows = (
        Policy.objects.select_related("production_model")
        .annotate(latest=Max("versions__number"))
        .order_by("slug")
    )
    rows = list(rows)
    # By registered name; a policy without its own model shows the deployment default's (looked up once).
    default = serving(None).name if any(policy.production_model is None for policy in rows) else ""
    return [
        {
            "slug": policy.slug,
            "name": policy.name,
            "latest": policy.latest,
            "model": policy.production_model.name if policy.production_model else default,
            "promoted_at": policy.production_model.promoted_at if policy.production_model else None,
        }
        for policy in rows
    ]
