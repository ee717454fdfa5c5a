"""The model registry's decisions: compare a candidate with production, promote, roll back.

Comparison is apples to apples where possible: when a training job finishes it
evaluates the candidate *and* the model it would replace on the same held-out
records (``metrics["baseline"]``). If production has changed since, the
production model's own report is used, over the files both reports share.

The promotion gate: a candidate is refused when any suite (a benchmark file,
per task) or the overall task / category scores drop by more than
``settings.TRAINER_PROMOTION_MAX_REGRESSION`` F1 points (default 2.0), or when
there is nothing to compare with. An admin may force it; every promotion,
refusal and rollback is recorded as a ``RegistryEvent``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from guard.models import ModelVersion
from trainer.models import RegistryEvent

TASKS = ("prompt", "response", "refusal")
EMBEDDED_LABEL = "embedded"
DEFAULT_MAX_REGRESSION = 2.0


class PromotionRefused(Exception):
    """The regression gate said no; ``comparison`` says where."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison


def max_regression() -> float:
    """F1 points a suite may drop before promotion is refused (setting, else environment, else 2.0)."""
    value = getattr(settings, "TRAINER_PROMOTION_MAX_REGRESSION", None)
    if value is None:
        value = os.environ.get("TRAINER_PROMOTION_MAX_REGRESSION") or DEFAULT_MAX_REGRESSION
    return float(value)


def current_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).order_by("-promoted_at", "-pk").first()


@dataclass(frozen=True)
class Row:
    suite: str  # a file name, "all" or "categories"
    task: str
    candidate: float | None
    baseline: float | None
    n: int
    threshold: float

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.baseline is None:
            return None
        return round(self.candidate - self.baseline, 2)

    @property
    def regression(self) -> bool:
        return self.delta is not None and self.delta < -self.threshold


@dataclass
class Comparison:
    candidate: ModelVersion
    baseline_label: str
    # "evaluated together" | "production report" | "" (nothing to compare)
    source: str
    threshold: float
    rows: list[Row] = field(default_factory=list)
    category_rows: list[Row] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return bool(self.source) and any(r.delta is not None for r in self.rows)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in [*self.rows, *self.category_rows] if r.regression and r.suite != "category"]

    @property
    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.rows if r.suite != "all"})

    def summary(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline_label,
            "source": self.source,
            "threshold": self.threshold,
            "regressions": [{"suite": r.suite, "task": r.task, "delta": r.delta} for r in self.regressions],
        }


def _f1(entry: dict[str, Any] | None) -> tuple[float | None, int]:
    if not isinstance(entry, dict) or not entry.get("n"):
        return None, 0
    value = entry.get("f1")
    return (float(value) if value is not None else None), int(entry["n"])


def compare_reports(candidate: dict[str, Any], baseline: dict[str, Any], threshold: float) -> tuple[list[Row], list[Row]]:
    """Rows per (file, task) and overall task, plus category rows (overall micro/macro and per category)."""
    rows: list[Row] = []
    for task in TASKS:
        c, n = _f1(candidate.get("tasks", {}).get(task))
        b, _ = _f1(baseline.get("tasks", {}).get(task))
        if n:
            rows.append(Row("all", task, c, b, n, threshold))
    shared = sorted(set(candidate.get("files", {})) & set(baseline.get("files", {})))
    for name in shared:
        for task in TASKS:
            c, n = _f1(candidate["files"][name].get(task))
            b, _ = _f1(baseline["files"][name].get(task))
            if n:
                rows.append(Row(name, task, c, b, n, threshold))
    category_rows: list[Row] = []
    cc, bc = candidate.get("categories", {}) or {}, baseline.get("categories", {}) or {}
    per_c, per_b = cc.get("per_category", {}) or {}, bc.get("per_category", {}) or {}
    if per_c:
        support = sum(int(e.get("n", 0)) for e in per_c.values())
        for key in ("micro_f1", "macro_f1"):
            if cc.get(key) is not None:
                category_rows.append(Row("categories", key, float(cc[key]), _num(bc.get(key)), support, threshold))
        for key in sorted(per_c, key=lambda k: (-int(per_c[k].get("n", 0)), k)):
            entry_b = per_b.get(key)
            category_rows.append(Row("category", key, _num(per_c[key].get("f1")), _num(entry_b.get("f1")) if entry_b else None,
                                     int(per_c[key].get("n", 0)), threshold))
    return rows, category_rows


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def compare(candidate: ModelVersion, against: ModelVersion | None = None, threshold: float | None = None) -> Comparison:
    """Compare ``candidate`` with ``against`` (default: the current production model)."""
    threshold = max_regression() if threshold is None else threshold
    target = against if against is not None else current_production()
    if target is not None and target.pk == candidate.pk:
        target = None
    label = target.name if target is not None else EMBEDDED_LABEL
    report = (candidate.metrics or {}).get("report")
    baseline_entry = (candidate.metrics or {}).get("baseline") or {}
    if against is None and candidate.status == ModelVersion.Status.PRODUCTION and baseline_entry.get("model"):
        # The production model itself: compare it with the model it was evaluated against (the one it replaced).
        label = str(baseline_entry["model"])
    baseline: dict[str, Any] | None = None
    source = ""
    if isinstance(baseline_entry.get("report"), dict) and baseline_entry.get("model") == label:
        baseline, source = baseline_entry["report"], "evaluated together"
    elif target is not None and isinstance((target.metrics or {}).get("report"), dict):
        baseline, source = target.metrics["report"], "production report"
    comparison = Comparison(candidate=candidate, baseline_label=label, source=source if report else "", threshold=threshold)
    if isinstance(report, dict) and baseline is not None:
        comparison.rows, comparison.category_rows = compare_reports(report, baseline, threshold)
    return comparison


def _switch_policies(previous: ModelVersion | None, new: ModelVersion | None) -> list[str]:
    """Point the policies served by ``previous`` (None = the embedded default) at ``new``."""
    from policies.models import Policy

    policies = Policy.objects.filter(production_model=previous) if previous else Policy.objects.filter(production_model__isnull=True)
    slugs = list(policies.values_list("slug", flat=True))
    policies.update(production_model=new)
    return slugs


def promote(candidate: ModelVersion, user: Any = None, force: bool = False, note: str = "") -> RegistryEvent:
    """Make ``candidate`` the production model, or raise ``PromotionRefused``.

    The previous production model is retired and the policies it served (or,
    with none, the policies on the embedded default) switch to the candidate.
    A refusal is recorded too (outside the rolled-back transaction).
    """
    given = candidate
    with transaction.atomic():
        candidate = ModelVersion.objects.select_for_update().get(pk=candidate.pk)
        if candidate.status == ModelVersion.Status.PRODUCTION:
            raise ValueError(f"{candidate.name} is already the production model")
        previous = current_production()
        previous_label = previous.name if previous else EMBEDDED_LABEL
        comparison = compare(candidate, previous)
        problem = ""
        if not comparison.available:
            problem = f"there is no evaluation to compare {candidate.name} with {comparison.baseline_label}"
        elif comparison.regressions:
            worst = ", ".join(f"{r.suite} {r.task} {r.delta:+.1f}" for r in comparison.regressions[:5])
            problem = f"{candidate.name} regresses by more than {comparison.threshold:g} F1 points on: {worst}"
        if not problem or force:
            if previous is not None:
                previous.status = ModelVersion.Status.RETIRED
                previous.save(update_fields=["status"])
            candidate.status = ModelVersion.Status.PRODUCTION
            candidate.promoted_at = timezone.now()
            candidate.save(update_fields=["status", "promoted_at"])
            # The caller's instance reflects the change too.
            given.status, given.promoted_at = candidate.status, candidate.promoted_at
            switched = _switch_policies(previous, candidate)
            return RegistryEvent.objects.create(
                action=RegistryEvent.Action.FORCED_PROMOTE if problem else RegistryEvent.Action.PROMOTE,
                model_version=candidate, previous=previous_label, user=_user(user),
                note=note or problem, details={**comparison.summary(), "policies": switched},
            )
    RegistryEvent.objects.create(action=RegistryEvent.Action.REFUSED, model_version=candidate, previous=previous_label,
                                 user=_user(user), note=problem, details=comparison.summary())
    raise PromotionRefused(problem, comparison)


def rollback_candidates() -> list[ModelVersion]:
    """Earlier production models (any version that was ever promoted), newest first."""
    return list(ModelVersion.objects.filter(promoted_at__isnull=False).exclude(status=ModelVersion.Status.PRODUCTION)
                .order_by("-promoted_at"))


@transaction.atomic
def rollback(target: ModelVersion | None, user: Any = None, note: str = "") -> RegistryEvent:
    """Make an earlier version (``None``: the embedded base) the production model again. No gate:
    rolling back is the way out of a bad promotion."""
    previous = current_production()
    given = target
    if target is not None:
        target = ModelVersion.objects.select_for_update().get(pk=target.pk)
        if previous is not None and previous.pk == target.pk:
            raise ValueError(f"{target.name} is already the production model")
    elif previous is None:
        raise ValueError("the embedded base is already the production model")
    if previous is not None:
        previous.status = ModelVersion.Status.RETIRED
        previous.save(update_fields=["status"])
    if target is not None:
        target.status = ModelVersion.Status.PRODUCTION
        target.promoted_at = timezone.now()
        target.save(update_fields=["status", "promoted_at"])
        if given is not None:
            given.status, given.promoted_at = target.status, target.promoted_at
    switched = _switch_policies(previous, target)
    return RegistryEvent.objects.create(
        action=RegistryEvent.Action.ROLLBACK, model_version=target, previous=previous.name if previous else EMBEDDED_LABEL,
        user=_user(user), note=note or f"roll back to {target.name if target else EMBEDDED_LABEL}",
        details={"policies": switched},
    )


def _user(user: Any) -> Any:
    return user if getattr(user, "pk", None) else None
