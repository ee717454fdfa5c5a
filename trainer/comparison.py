"""How a candidate compares with another model on the same records (the registry's comparison).

The newest pair of evaluations of the two models over one record set: two finished evaluation
runs, or the pair a training job made when it evaluated its candidate and the model it would
replace (``find_pair``). With per-record outcomes in both reports, each F1 difference carries a
paired bootstrap interval (``trainer.paired``) and a row regresses only when its drop exceeds
the threshold and the interval lies entirely below zero; reports from before outcomes were kept
are compared on the threshold alone. Every comparison names its record set and count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from guard.models import ModelVersion
from trainer import paired

TASKS = ("prompt", "response", "refusal")
EMBEDDED_LABEL = "embedded"
# The suite of the policy-following pairs' rows (``evaluation.policy_following``).
POLICY_FOLLOWING = "policy following"
DEFAULT_MAX_REGRESSION = 2.0
# How many recent finished evaluation runs of each model are searched for a pair on the same records.
RUNS_SEARCHED = 50


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
    # The paired bootstrap interval of the difference (None: reports without per-record outcomes).
    low: float | None = None
    high: float | None = None

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.baseline is None:
            return None
        return round(self.candidate - self.baseline, 2)

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def beyond_threshold(self) -> bool:
        return self.delta is not None and self.delta < -self.threshold

    @property
    def regression(self) -> bool:
        """A drop beyond the threshold, and (with an interval) beyond the uncertainty too."""
        if not self.beyond_threshold:
            return False
        return not self.has_interval or (self.high is not None and self.high < 0)

    @property
    def within_uncertainty(self) -> bool:
        """A drop beyond the threshold that the interval does not confirm (shown, not refused)."""
        return self.beyond_threshold and not self.regression

    @property
    def interval(self) -> str:
        return f"[{self.low:+.1f}, {self.high:+.1f}]" if self.has_interval else ""

    def describe(self) -> str:
        where = "all records" if self.suite == "all" else self.suite
        return f"{where} {self.task} {self.delta:+.1f}" + (f" {self.interval}" if self.has_interval else "")


@dataclass(frozen=True)
class RecordSet:
    """The records two evaluations share: named by their files and counted."""

    files: tuple[tuple[str, int], ...]  # (file name, records of it evaluated)
    n: int
    fingerprint: str = ""

    @property
    def label(self) -> str:
        names = " + ".join(f"{name} ({count})" for name, count in self.files) or "unnamed records"
        return f"{names}: {self.n} records"


def record_set(report: dict[str, Any]) -> RecordSet | None:
    """The record set a report was measured on (None for something that is not a report)."""
    if not isinstance(report, dict):
        return None
    sizes = report.get("file_sizes") or {}
    files = tuple((name, int((sizes.get(name) or {}).get("n") or 0)) for name in sorted(report.get("files") or {}))
    outcomes = report.get("outcomes") or {}
    return RecordSet(files=files, n=int(report.get("n") or 0), fingerprint=str(outcomes.get("fingerprint") or ""))


@dataclass
class Comparison:
    candidate: ModelVersion
    baseline_label: str
    # Where the pair of evaluations comes from ("" = no evaluation of both on the same records).
    source: str
    threshold: float
    rows: list[Row] = field(default_factory=list)
    category_rows: list[Row] = field(default_factory=list)
    record_set: RecordSet | None = None
    evaluated_at: datetime | None = None
    runs: tuple[int, int] | None = None  # (candidate run, baseline run) when the pair is two evaluation runs

    @property
    def available(self) -> bool:
        return bool(self.source) and any(r.delta is not None for r in self.rows)

    @property
    def paired(self) -> bool:
        return any(r.has_interval for r in self.rows)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in [*self.rows, *self.category_rows] if r.regression and r.suite != "category"]

    @property
    def uncertain_drops(self) -> list[Row]:
        return [r for r in [*self.rows, *self.category_rows] if r.within_uncertainty and r.suite != "category"]

    @property
    def regressed_suites(self) -> list[str]:
        """Distinct suites with a regression: a file's regression also moves the "all" row, which is not a
        second suite; "all records" is named only when no single file regressed."""
        files = sorted({r.suite for r in self.regressions if r.suite not in ("all",)})
        if files:
            return files
        return ["all records"] if self.regressions else []

    @property
    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.rows if r.suite != "all"})

    @property
    def policy_following_rows(self) -> list[Row]:
        """Pairs right and right code of the policy-following pairs (shown beside the categories, never gated)."""
        return [r for r in self.category_rows if r.suite == POLICY_FOLLOWING]

    def summary(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline_label,
            "source": self.source,
            "threshold": self.threshold,
            "records": self.record_set.label if self.record_set else "",
            "regressions": [{"suite": r.suite, "task": r.task, "delta": r.delta, "interval": r.interval}
                            for r in self.regressions],
        }


def _f1(entry: dict[str, Any] | None) -> tuple[float | None, int]:
    if not isinstance(entry, dict) or not entry.get("n"):
        return None, 0
    value = entry.get("f1")
    return (float(value) if value is not None else None), int(entry["n"])


def compare_reports(candidate: dict[str, Any], baseline: dict[str, Any], threshold: float) -> tuple[list[Row], list[Row]]:
    """Rows per (file, task) and overall task, plus category rows (overall micro/macro and per category).

    Both reports must be of the same records. With per-record outcomes in both, the task rows and the
    category micro F1 carry the paired bootstrap interval; a single file is the "all" suite only."""
    intervals = {(d.suite, d.task): d for d in paired.compare(candidate, baseline)} if paired.same_records(candidate, baseline) else {}
    rows: list[Row] = []
    for task in TASKS:
        c, n = _f1(candidate.get("tasks", {}).get(task))
        b, _ = _f1(baseline.get("tasks", {}).get(task))
        if n:
            rows.append(_row("all", task, c, b, n, threshold, intervals))
    shared = sorted(set(candidate.get("files", {})) & set(baseline.get("files", {})))
    if len(shared) > 1 or not intervals:
        for name in shared:
            for task in TASKS:
                c, n = _f1(candidate["files"][name].get(task))
                b, _ = _f1(baseline["files"][name].get(task))
                if n:
                    rows.append(_row(name, task, c, b, n, threshold, intervals))
    category_rows: list[Row] = []
    cc, bc = candidate.get("categories", {}) or {}, baseline.get("categories", {}) or {}
    per_c, per_b = cc.get("per_category", {}) or {}, bc.get("per_category", {}) or {}
    if per_c:
        support = sum(int(e.get("n", 0)) for e in per_c.values())
        for key in ("micro_f1", "macro_f1"):
            if cc.get(key) is not None:
                category_rows.append(_row("categories", key, float(cc[key]), _num(bc.get(key)), support, threshold, intervals))
        for key in sorted(per_c, key=lambda k: (-int(per_c[k].get("n", 0)), k)):
            entry_b = per_b.get(key)
            category_rows.append(Row("category", key, _num(per_c[key].get("f1")), _num(entry_b.get("f1")) if entry_b else None,
                                     int(per_c[key].get("n", 0)), threshold))
    following_c, following_b = candidate.get("policy_following") or {}, baseline.get("policy_following") or {}
    if following_c.get("n"):
        # Shown, never gated: one pair of 72 moves them by 1.4 points.
        for key, label in (("pair_accuracy", "pairs right"), ("code_accuracy", "right code")):
            category_rows.append(Row(POLICY_FOLLOWING, label, _num(following_c.get(key)), _num(following_b.get(key)),
                                     int(following_c["n"]), float("inf")))
    return rows, category_rows


def _row(suite: str, task: str, c: float | None, b: float | None, n: int, threshold: float,
         intervals: dict[tuple[str, str], paired.Difference]) -> Row:
    found = intervals.get((suite, task))
    if found is None:
        if intervals and suite == "categories" and task == "macro_f1":
            # The macro F1 has no paired interval: shown, never gated (a rare category moves it by tens of points).
            return Row(suite, task, c, b, n, float("inf"))
        return Row(suite, task, c, b, n, threshold)
    return Row(suite, task, c, b, n, threshold, found.low, found.high)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Pair:
    """Two reports of the same records: the candidate's and the baseline's."""

    candidate: dict[str, Any]
    baseline: dict[str, Any]
    source: str
    evaluated_at: datetime | None
    runs: tuple[int, int] | None = None


def _run_model_names(label: str) -> list[str]:
    return [EMBEDDED_LABEL] if label == EMBEDDED_LABEL else [label]


def _run_pairs(candidate: ModelVersion, label: str) -> list[Pair]:
    """Finished evaluation runs of both models with per-record outcomes over the same records (same mode
    and policy), one pair per record set: the newest run of each."""
    from evaluation.models import EvaluationRun

    def runs(names: list[str]) -> list[Any]:
        return list(EvaluationRun.objects.filter(model__in=names, status=EvaluationRun.Status.DONE, report__isnull=False)
                    .order_by("-finished_at", "-pk")[:RUNS_SEARCHED])

    newest: dict[tuple[str, str, str], Any] = {}
    for run in runs([candidate.name]):
        if paired.has_outcomes(run.report):
            newest.setdefault((run.report["outcomes"]["fingerprint"], run.mode, run.policy), run)
    pairs: list[Pair] = []
    seen: set[tuple[str, str, str]] = set()
    for run in runs(_run_model_names(label)):
        if not paired.has_outcomes(run.report):
            continue
        key = (run.report["outcomes"]["fingerprint"], run.mode, run.policy)
        if key in newest and key not in seen:
            seen.add(key)
            mine = newest[key]
            at = min(t for t in (mine.finished_at, run.finished_at) if t is not None) if mine.finished_at or run.finished_at else None
            pairs.append(Pair(mine.report, run.report, f"evaluation runs #{mine.pk} and #{run.pk}", at, (mine.pk, run.pk)))
    return pairs


def find_pair(candidate: ModelVersion, label: str) -> Pair | None:
    """The newest evaluations of ``candidate`` and of ``label`` (a model name, or "embedded") on the same records:
    evaluation runs of both, or the pair a training job made (``metrics["baseline"]``): the candidate's job against
    ``label``, or ``label``'s job against the candidate (re-promoting a model its successor was compared with)."""
    pairs = _run_pairs(candidate, label)
    if not pairs:
        # A job's pair is recorded as two evaluation runs too; the job's own record is the fallback.
        other = ModelVersion.objects.filter(name=label).exclude(pk=candidate.pk).first()
        for owner, against, swapped in ((candidate, label, False), (other, candidate.name, True)):
            metrics = (owner.metrics if owner is not None else None) or {}
            report, baseline = metrics.get("report"), metrics.get("baseline") or {}
            if owner is None or not isinstance(report, dict) or not isinstance(baseline.get("report"), dict):
                continue
            if baseline.get("model") != against:
                continue
            job = (owner.provenance or {}).get("job")
            source = f"evaluated together by training job #{job}" if job else "evaluated together"
            reports = (baseline["report"], report) if swapped else (report, baseline["report"])
            pairs.append(Pair(*reports, source, owner.created_at))
    if not pairs:
        return None
    return max(pairs, key=lambda p: p.evaluated_at or candidate.created_at)


def compare(candidate: ModelVersion, against: ModelVersion | None = None, threshold: float | None = None) -> Comparison:
    """Compare ``candidate`` with ``against`` (default: the current production model) on the same records."""
    threshold = max_regression() if threshold is None else threshold
    target = against if against is not None else current_production()
    if target is not None and target.pk == candidate.pk:
        target = None
    label = target.name if target is not None else EMBEDDED_LABEL
    baseline_entry = (candidate.metrics or {}).get("baseline") or {}
    if against is None and candidate.status == ModelVersion.Status.PRODUCTION and baseline_entry.get("model"):
        # The production model itself: compare it with the model it was evaluated against (the one it replaced).
        label = str(baseline_entry["model"])
    comparison = Comparison(candidate=candidate, baseline_label=label, source="", threshold=threshold)
    pair = find_pair(candidate, label)
    if pair is not None:
        comparison.source, comparison.evaluated_at, comparison.runs = pair.source, pair.evaluated_at, pair.runs
        comparison.record_set = record_set(pair.candidate)
        comparison.rows, comparison.category_rows = compare_reports(pair.candidate, pair.baseline, threshold)
    return comparison


def record_set_name(report: Any) -> str:
    """"guardsite_eval.jsonl (57): 57 records" for a report; "" for none."""
    found = record_set(report) if isinstance(report, dict) else None
    return found.label if found is not None else ""
