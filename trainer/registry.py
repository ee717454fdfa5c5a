"""The model registry's decisions: compare a candidate with production, promote, roll back.

Comparison is on the same records, always: the newest pair of evaluations of the two models
over one record set (two finished evaluation runs, or the pair a training job made when it
evaluated its candidate and the model it would replace; ``find_pair``). With per-record
outcomes in both reports, every F1 difference has a paired bootstrap interval
(``trainer.paired``); reports from before outcomes were kept are compared without one.
Two models never evaluated on the same records are not compared: promotion then needs an
evaluation of both (``evaluate_both``) or Force.

The promotion gate: a suite (all records or one file, per task; the category micro F1)
regresses when its F1 drops by more than ``settings.TRAINER_PROMOTION_MAX_REGRESSION`` points
(default 2.0) and its interval lies entirely below zero; a drop inside the interval is shown
but not refused. An admin may force a refused promotion, and may roll back to any model that
ever served (the first production model included, which has no promotion record), both with a
required reason; every promotion, refusal and rollback is recorded as a ``RegistryEvent``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from guard.models import ModelVersion
from trainer.comparison import (
    EMBEDDED_LABEL,
    Comparison,
    RecordSet,
    Row,
    compare,
    compare_reports,
    current_production,
    find_pair,
    max_regression,
    record_set,
)
from trainer.models import RegistryEvent

# The comparison lives in trainer.comparison; these names are the registry's public vocabulary too.
__all__ = ["EMBEDDED_LABEL", "Comparison", "PromotionRefused", "ReasonRequired", "RecordSet", "Row", "compare",
           "compare_reports", "current_production", "evaluate_both", "find_pair", "gate", "has_served", "max_regression",
           "promote", "record_set", "rollback", "rollback_candidates"]


class PromotionRefused(Exception):
    """The regression gate said no; ``comparison`` says where."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison


class ReasonRequired(ValueError):
    """A forced promotion or a rollback without a reason."""


def evaluation_data(candidate: ModelVersion) -> list[str]:
    """What ``evaluate_both`` evaluates: the shipped evaluation set, in full (never trained on)."""
    from evaluation.datasets import shipped_files

    return [str(path) for path in shipped_files()]


def evaluate_both(candidate: ModelVersion, user: Any = None, mode: str = "fast") -> tuple[Any, Any]:
    """Queue evaluation runs of ``candidate`` and of production (or the embedded base) on the same records;
    the gate uses them once both are done. Returns the two runs (candidate's, production's)."""
    from evaluation.models import EvaluationRun
    from evaluation.tasks import run_evaluation

    data = evaluation_data(candidate)
    if not data:
        raise ValueError("there is no shipped evaluation set in this checkout to evaluate both models on")
    production = current_production()
    baseline = production.name if production is not None and production.pk != candidate.pk else EMBEDDED_LABEL
    runs = []
    with transaction.atomic():
        for model in (candidate.name, baseline):
            run = EvaluationRun.objects.create(model=model, mode=mode, policy="auto", data=data, limit=None,
                                               created_by=_user(user))
            transaction.on_commit(lambda pk=run.pk: run_evaluation.delay(pk))
            runs.append(run)
    return runs[0], runs[1]


def _switch_policies(previous: ModelVersion | None, new: ModelVersion | None) -> list[str]:
    """Point the policies served by ``previous`` (None = the embedded default) at ``new``."""
    from policies.models import Policy

    policies = Policy.objects.filter(production_model=previous) if previous else Policy.objects.filter(production_model__isnull=True)
    slugs = list(policies.values_list("slug", flat=True))
    policies.update(production_model=new)
    return slugs


def gate(candidate: ModelVersion, previous: ModelVersion | None = None) -> tuple[Comparison, str]:
    """The comparison with ``previous`` (default: production) and the gate's objection ("" = none)."""
    comparison = compare(candidate, previous if previous is not None else current_production())
    if not comparison.available:
        return comparison, (f"there is no evaluation of {candidate.name} and {comparison.baseline_label} on the same records: "
                            "evaluate both first")
    if comparison.regressions:
        worst = ", ".join(r.describe() for r in comparison.regressions[:5])
        bound = "and beyond the paired bootstrap interval " if comparison.paired else ""
        return comparison, (f"{candidate.name} regresses by more than {comparison.threshold:g} F1 points {bound}"
                            f"on {comparison.record_set.label if comparison.record_set else 'the shared records'}: {worst}")
    return comparison, ""


def promote(candidate: ModelVersion, user: Any = None, force: bool = False, note: str = "") -> RegistryEvent:
    """Make ``candidate`` the production model, or raise ``PromotionRefused``.

    The previous production model is retired and the policies it served (or,
    with none, the policies on the embedded default) switch to the candidate.
    A refusal is recorded too (outside the rolled-back transaction). Forcing a
    promotion the gate refuses needs a reason (``note``): ``ReasonRequired``.
    """
    given = candidate
    note = note.strip()
    with transaction.atomic():
        candidate = ModelVersion.objects.select_for_update().get(pk=candidate.pk)
        if candidate.status == ModelVersion.Status.PRODUCTION:
            raise ValueError(f"{candidate.name} is already the production model")
        previous = current_production()
        previous_label = previous.name if previous else EMBEDDED_LABEL
        comparison, problem = gate(candidate, previous)
        if problem and force and not note:
            raise ReasonRequired("a forced promotion needs a reason: say why the gate is wrong this time")
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
                note=note or problem or "passed the regression gate",
                details={**comparison.summary(), "policies": switched, **({"gate": problem} if problem else {})},
            )
    RegistryEvent.objects.create(action=RegistryEvent.Action.REFUSED, model_version=candidate, previous=previous_label,
                                 user=_user(user), note=problem, details=comparison.summary())
    raise PromotionRefused(problem, comparison)


def _served() -> Q:
    """Versions that served at some point: promoted (or rolled back to), production now, or named as the production
    model a change replaced (the demo's first production model was registered as production, never promoted)."""
    replaced = RegistryEvent.objects.exclude(previous="").values_list("previous", flat=True)
    return Q(promoted_at__isnull=False) | Q(status=ModelVersion.Status.PRODUCTION) | Q(name__in=replaced)


def has_served(version: ModelVersion) -> bool:
    return ModelVersion.objects.filter(_served(), pk=version.pk).exists()


def rollback_candidates() -> list[ModelVersion]:
    """Every model that ever served, except production, most recently serving first."""
    versions = list(ModelVersion.objects.filter(_served()).exclude(status=ModelVersion.Status.PRODUCTION))
    last_served: dict[str, datetime] = {}
    for event in RegistryEvent.objects.exclude(previous="").order_by("created_at"):
        last_served[event.previous] = event.created_at
    return sorted(versions, key=lambda v: last_served.get(v.name) or v.promoted_at or v.created_at, reverse=True)


@transaction.atomic
def rollback(target: ModelVersion | None, user: Any = None, note: str = "") -> RegistryEvent:
    """Make a model that served before (``None``: the embedded base) the production model again. No gate:
    rolling back is the way out of a bad promotion. Needs a reason (``note``): ``ReasonRequired``."""
    note = note.strip()
    if not note:
        raise ReasonRequired("a rollback needs a reason: say what went wrong")
    previous = current_production()
    given = target
    if target is not None:
        target = ModelVersion.objects.select_for_update().get(pk=target.pk)
        if previous is not None and previous.pk == target.pk:
            raise ValueError(f"{target.name} is already the production model")
        if not has_served(target):
            raise ValueError(f"{target.name} was never in production: promote it instead of rolling back to it")
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
        user=_user(user), note=note, details={"policies": switched, "to": target.name if target else EMBEDDED_LABEL},
    )


def _user(user: Any) -> Any:
    return user if getattr(user, "pk", None) else None
