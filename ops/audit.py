"""The audit log of the whole app (/audit/): who did what, when, to which object.

Events come from where each app already records them, read together as one
time-ordered list (a SQL ``UNION ALL``, so paging and counting stay in the database):

- ``moderation.AuditLog``: review decisions, API keys, and whatever else calls ``AuditLog.record``;
- published policy versions (``policies.PolicyVersion``: who published which version, with its note;
  ``policy.rollback`` for a version a rollback published);
- promotions, forced promotions, rollbacks and refused promotions (``trainer.RegistryEvent``);
- started training jobs and evaluation runs.

The same filters drive the page and the CSV / JSON exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from django.db.models import Case, CharField, F, QuerySet, Value, When
from django.db.models.functions import Cast, Coalesce, Concat
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from evaluation.models import EvaluationRun
from moderation.audit_values import details as audit_details
from moderation.audit_values import display
from moderation.models import AuditLog
from policies.models import Policy, PolicyVersion
from trainer.models import RegistryEvent, TrainingJob

SYSTEM = "system"
# How an object type reads on the page; the filter and the exports keep the type's name.
OBJECT_LABELS = {
    "item": "item", "apikey": "API key", "policy": "policy", "policyversion": "policy", "modelversion": "model",
    "trainingjob": "training job", "evaluationrun": "evaluation run", "reviewtask": "review task",
    "webhookdelivery": "webhook delivery",
}
COLUMNS = ("a_source", "a_pk", "a_at", "a_actor", "a_action", "a_object_type", "a_object_id")


class AuditFilterError(ValueError):
    """A filter value that cannot apply; the message names it."""


@dataclass
class Source:
    """One table of events: how to read its time, actor, action and object as the audit's columns."""

    name: str
    actions: tuple[str, ...]  # () = any (moderation's AuditLog: actions are open-ended)
    object_types: tuple[str, ...]

    def queryset(self) -> QuerySet:
        raise NotImplementedError


def _text(value: Any) -> Any:
    return Cast(value, output_field=CharField())


def _annotated(queryset: QuerySet, source: str, at: str, actor: Any, action: Any, object_type: Any, object_id: Any) -> QuerySet:
    # Every column is an annotation made in the same order, so the UNION lines up.
    return queryset.annotate(
        a_source=Value(source, output_field=CharField()),
        a_pk=F("pk"),
        a_at=F(at),
        a_actor=actor,
        a_action=action,
        a_object_type=object_type,
        a_object_id=object_id,
    ).values(*COLUMNS)


@dataclass
class Filters:
    actor: str = ""
    action: str = ""
    object_type: str = ""
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    raw: dict[str, str] = field(default_factory=dict)


def _day(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise AuditFilterError(f"{name} must be a date like 2026-01-31, not {value!r}") from None
    return timezone.make_aware(datetime.combine(day, time.min))


def parse_filters(params: dict[str, str]) -> Filters:
    start = _day(params.get("date_from", "").strip(), "from")
    to = _day(params.get("date_to", "").strip(), "to")
    end = to + timedelta(days=1) if to else None
    if start and end and start >= end:
        raise AuditFilterError(f"the date range is empty: from {params['date_from']} is after to {params['date_to']}")
    return Filters(
        actor=params.get("actor", "").strip(),
        action=params.get("action", "").strip(),
        object_type=params.get("object_type", "").strip(),
        start=start,
        end=end,
        raw={k: v for k, v in params.items() if v and k != "page"},
    )


# ----------------------------------------------------------------- the sources


def _within(queryset: QuerySet, at: str, filters: Filters) -> QuerySet:
    if filters.start:
        queryset = queryset.filter(**{f"{at}__gte": filters.start})
    if filters.end:
        queryset = queryset.filter(**{f"{at}__lt": filters.end})
    return queryset


def _audit_log(filters: Filters) -> QuerySet | None:
    rows = _within(AuditLog.objects.all(), "at", filters)
    if filters.actor:
        rows = rows.filter(actor_label=filters.actor) if filters.actor != SYSTEM else rows.filter(actor__isnull=True)
    if filters.action:
        rows = rows.filter(action=filters.action)
    if filters.object_type:
        rows = rows.filter(object_type=filters.object_type)
    return _annotated(rows, "audit", "at", F("actor_label"), F("action"), F("object_type"), F("object_id"))


def _actor(rows: QuerySet, user_field: str, filters: Filters) -> QuerySet:
    if not filters.actor:
        return rows
    if filters.actor == SYSTEM:
        return rows.filter(**{f"{user_field}__isnull": True})
    return rows.filter(**{f"{user_field}__username": filters.actor})


def _fixed(filters: Filters, action: str, object_type: str) -> bool:
    return filters.action in ("", action) and filters.object_type in ("", object_type)


POLICY_VERSION_ACTIONS = ("policy.publish", "policy.rollback")


def _policy_versions(filters: Filters) -> QuerySet | None:
    """Published versions: ``policy.publish``, or ``policy.rollback`` for a version a rollback published."""
    if filters.action not in ("", *POLICY_VERSION_ACTIONS) or filters.object_type not in ("", "policyversion"):
        return None
    rows = _actor(_within(PolicyVersion.objects.filter(number__isnull=False), "published_at", filters), "published_by", filters)
    if filters.action:
        rows = rows.filter(rollback_of__isnull=filters.action == "policy.publish")
    action = Case(When(rollback_of__isnull=False, then=Value("policy.rollback")), default=Value("policy.publish"), output_field=CharField())
    return _annotated(
        rows, "policyversion", "published_at", Coalesce(F("published_by__username"), Value(SYSTEM), output_field=CharField()),
        action, Value("policyversion", output_field=CharField()),
        Concat(F("policy__slug"), Value(" v"), _text(F("number")), output_field=CharField()),
    )


REGISTRY_ACTIONS = {f"model.{a}": a for a in RegistryEvent.Action.values}


def _registry_events(filters: Filters) -> QuerySet | None:
    if filters.object_type not in ("", "modelversion") or (filters.action and filters.action not in REGISTRY_ACTIONS):
        return None
    rows = _actor(_within(RegistryEvent.objects.all(), "created_at", filters), "user", filters)
    if filters.action:
        rows = rows.filter(action=REGISTRY_ACTIONS[filters.action])
    return _annotated(
        rows, "registry", "created_at", Coalesce(F("user__username"), Value(SYSTEM), output_field=CharField()),
        Concat(Value("model."), F("action"), output_field=CharField()), Value("modelversion", output_field=CharField()),
        Coalesce(F("model_version__name"), Value("embedded"), output_field=CharField()),
    )


def _started(model: type, source: str, action: str, object_type: str, filters: Filters) -> QuerySet | None:
    if not _fixed(filters, action, object_type):
        return None
    rows = _actor(_within(model.objects.all(), "created_at", filters), "created_by", filters)
    return _annotated(
        rows, source, "created_at", Coalesce(F("created_by__username"), Value(SYSTEM), output_field=CharField()),
        Value(action, output_field=CharField()), Value(object_type, output_field=CharField()), _text(F("pk")),
    )


def events(filters: Filters) -> QuerySet:
    """Every event matching ``filters``, newest first, as rows of ``COLUMNS``."""
    parts = [
        _audit_log(filters),
        _policy_versions(filters),
        _registry_events(filters),
        _started(TrainingJob, "trainingjob", "training.start", "trainingjob", filters),
        _started(EvaluationRun, "evaluationrun", "evaluation.start", "evaluationrun", filters),
    ]
    parts = [p.order_by() for p in parts if p is not None]
    first, rest = parts[0], parts[1:]  # AuditLog is always a part (its filters never exclude it)
    return (first.union(*rest, all=True) if rest else first).order_by("-a_at", "-a_source", "-a_pk")


def known_actions() -> list[str]:
    fixed = {*POLICY_VERSION_ACTIONS, "training.start", "evaluation.start", *REGISTRY_ACTIONS}
    return sorted(fixed | set(AuditLog.objects.values_list("action", flat=True).distinct()))


def known_object_types() -> list[str]:
    fixed = {"policyversion", "modelversion", "trainingjob", "evaluationrun"}
    return sorted(fixed | set(AuditLog.objects.values_list("object_type", flat=True).distinct()))


# ----------------------------------------------------------------- rendering one event


@dataclass
class Event:
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    url: str
    details: list[tuple[str, Any, Any, bool]]  # (key, before, after, changed); before is None for plain facts

    @property
    def object_label(self) -> str:
        return f"{OBJECT_LABELS.get(self.object_type, self.object_type)} {self.object_id}"

    @property
    def rows(self) -> list[tuple[str, str, str, bool]]:
        """(key, before, after, changed) as display text; ``changed`` only where a before is known."""
        return [(k, display(b), display(a), changed) for k, b, a, changed in self.details]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "url": self.url,
            "details": {k: ({"before": b, "after": a} if changed else a) for k, b, a, changed in self.details},
        }

    def details_text(self) -> str:
        return "; ".join(f"{k}: {b} → {a}" if changed else f"{k}: {a}" for k, b, a, changed in self.rows)


def _url(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def object_url(object_type: str, object_id: str, obj: Any = None, policy_slugs: dict[str, str] | None = None) -> str:
    if object_type == "item":
        return _url("moderation:item", object_id)
    if object_type == "apikey":
        return _url("moderation:api-keys")
    if object_type == "policyversion" and obj is not None:
        return _url("policies:version", obj.policy.slug, obj.number)
    if object_type == "policy":
        # Entries name a policy by its id; its page is at its slug.
        slug = (policy_slugs or {}).get(object_id)
        return _url("policies:detail", slug) if slug else ""
    if object_type == "modelversion" and object_id != "embedded":
        return _url("registry:model", object_id)
    if object_type == "trainingjob":
        return _url("trainer:detail", object_id)
    if object_type == "evaluationrun":
        return _url("evaluation:detail", object_id)
    return ""


def _facts(values: dict[str, Any]) -> list[tuple[str, Any, Any, bool]]:
    return [(k, None, v, False) for k, v in values.items() if v not in (None, "", [], {})]


def _details(source: str, obj: Any) -> list[tuple[str, Any, Any, bool]]:
    if obj is None:
        return []
    if source == "audit":
        return audit_details(obj.before, obj.after)
    if source == "policyversion":
        rolled_back_to = obj.rollback_of.number if obj.rollback_of_id else None
        return _facts({"version": obj.number, "equal to version": rolled_back_to, "change note": obj.change_note})
    if source == "registry":
        return _facts({"previous production": obj.previous, "note": obj.note, **(obj.details or {})})
    if source == "trainingjob":
        return _facts({"recipe": obj.recipe, "status": obj.status, "policy": obj.policy, "data": obj.data_sources})
    if source == "evaluationrun":
        return _facts({"model": obj.model or "default", "mode": obj.mode, "policy": obj.policy, "status": obj.status})
    return []


MODELS = {
    "audit": AuditLog.objects.all(),
    "policyversion": PolicyVersion.objects.select_related("policy", "rollback_of"),
    "registry": RegistryEvent.objects.all(),
    "trainingjob": TrainingJob.objects.all(),
    "evaluationrun": EvaluationRun.objects.all(),
}


def materialise(rows: Iterable[dict[str, Any]]) -> list[Event]:
    """Union rows -> events with their details (one query per source, not per row)."""
    rows = list(rows)
    wanted: dict[str, list[int]] = {}
    for row in rows:
        wanted.setdefault(row["a_source"], []).append(row["a_pk"])
    loaded = {source: MODELS[source].in_bulk(pks) for source, pks in wanted.items()}
    policy_ids = {row["a_object_id"] for row in rows if row["a_object_type"] == "policy" and row["a_object_id"].isdigit()}
    policy_slugs = {str(pk): slug for pk, slug in Policy.objects.filter(pk__in=policy_ids).values_list("pk", "slug")} if policy_ids else {}
    events_out = []
    for row in rows:
        obj = loaded[row["a_source"]].get(row["a_pk"])
        details = _details(row["a_source"], obj)
        events_out.append(Event(
            at=row["a_at"], actor=row["a_actor"] or SYSTEM, action=row["a_action"], object_type=row["a_object_type"],
            object_id=row["a_object_id"], url=object_url(row["a_object_type"], row["a_object_id"], obj, policy_slugs),
            details=details,
        ))
    return events_out


def iter_events(filters: Filters, chunk: int = 500) -> Iterator[Event]:
    """All matching events for an export, read a chunk at a time."""
    queryset = events(filters)
    offset = 0
    while True:
        rows = list(queryset[offset : offset + chunk])
        if not rows:
            return
        yield from materialise(rows)
        offset += chunk
