"""The evaluation harness: benchmark JSONL files -> a report with a fixed contract.

``evaluate()`` is used by ``manage.py evaluate``, by the evaluation runs of the
UI (``evaluation.tasks.run_evaluation``) and by the trainer as its promotion
gate: keep its signature and the report's keys stable.

Data, records and sampling: ``evaluation.records``; the report built from the
verdicts: ``evaluation.report``. Every record is classified once (one guard request).

Policies: ``policy="auto"`` judges each record under its own taxonomy, read
from a ``taxonomies.json`` next to the data file when there is one (else the
built-in presets); taxonomy ``none`` gets the general default policy.
Any other value names a database ``Policy`` (its latest published version)
or, failing that, a preset; every record is then judged under that policy, and
category metrics cover only records whose taxonomy *is* that preset (other
taxonomies' codes mean nothing under it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from evaluation.records import EvalRecord, EvaluationError, load_data
from evaluation.report import build_report, format_summary, record_outcomes, task_score_pairs
from guard.calibration import Calibration
from guard.contract import MODES, PolicySpec, Verdict
from policies.datasets import TAXONOMIES_FILE

AUTO_POLICY = "auto"

ProgressCallback = Callable[[int, int], None]

__all__ = ["AUTO_POLICY", "EvaluationError", "PolicyResolver", "evaluate", "format_summary", "load_data"]


# ------------------------------------------------------------------ policies


class PolicyResolver:
    """The policy (and gold category codes) each record is judged under."""

    def __init__(self, policy: str) -> None:
        self.policy = (policy or AUTO_POLICY).strip()
        self._cache: dict[tuple[str, str | None], PolicySpec] = {}
        self.fixed: PolicySpec | None = None
        self.fixed_preset: str | None = None
        if self.policy != AUTO_POLICY:
            self.fixed, self.fixed_preset = self._resolve_named(self.policy)

    @staticmethod
    def _resolve_named(name: str) -> tuple[PolicySpec, str | None]:
        from policies import presets

        try:
            from policies.models import Policy

            stored = Policy.objects.filter(slug=name).first()
        except Exception:  # noqa: BLE001 - no database (plain scripts): presets only
            stored = None
        if stored is not None:
            version = stored.latest_version()
            if version is None:
                raise EvaluationError(f"policy {name!r} has no published version yet; publish one first")
            return version.to_spec(), None
        try:
            return presets.preset_spec(name), name
        except KeyError:
            known = ", ".join(presets.preset_names())
            raise EvaluationError(f"unknown policy {name!r}: not a policy slug nor a preset ({known}); or use 'auto'") from None

    def label(self) -> str:
        return self.policy

    def spec_for(self, record: EvalRecord) -> PolicySpec:
        if self.fixed is not None:
            return self.fixed
        key = (record.taxonomy, record.taxonomies_path)
        if key not in self._cache:
            self._cache[key] = self._taxonomy_spec(record)
        return self._cache[key]

    @staticmethod
    def _taxonomy_spec(record: EvalRecord) -> PolicySpec:
        from policies import presets

        for path in (record.taxonomies_path, None):
            try:
                return presets.preset_spec(record.taxonomy, path)
            except KeyError:
                continue
        raise EvaluationError(
            f"{record.file}:{record.line}: taxonomy {record.taxonomy!r} is neither in a {TAXONOMIES_FILE} "
            "beside the data nor a built-in preset"
        )

    def gold_codes(self, record: EvalRecord) -> tuple[str, list[str]]:
        """(taxonomy key for the report, gold codes under the judging policy); [] when not comparable."""
        from policies import presets

        if not record.categories:
            return record.taxonomy, []
        if self.fixed is not None and self.fixed_preset != record.taxonomy:
            return record.taxonomy, []
        for path in (record.taxonomies_path, None):
            try:
                return record.taxonomy, presets.gold_codes(record.taxonomy, list(record.categories), path)
            except KeyError:
                continue
        raise EvaluationError(
            f"{record.file}:{record.line}: categories {list(record.categories)} are not all in taxonomy {record.taxonomy!r}"
        )


# ------------------------------------------------------------------ the run


def _default_model_label(model: str | None) -> str:
    if model:
        return model
    try:
        from django.conf import settings

        return settings.GUARD_MODEL_DIR or "embedded"
    except Exception:  # noqa: BLE001 - settings not configured
        return "embedded"


def _load_model(model: str | None) -> Calibration:
    """Fail fast on an unknown model, and load it before the clock starts; raises ``GuardError``.
    Returns the model's own calibration."""
    from guard import runtime

    resolved = runtime.resolve_model(model)
    runtime.get_backend(model)
    return resolved.calibration


def _classify(requests: list, model: str | None, calibration: Calibration | None = None, heads: bool = True) -> list[Verdict]:
    from guard import runtime

    verdicts = runtime.classify(requests, model, calibration=calibration, heads=heads)
    if len(verdicts) != len(requests):
        raise RuntimeError(f"the guard returned {len(verdicts)} verdicts for {len(requests)} requests")
    return verdicts


def evaluate(
    data: list[str | Path],
    model: str | None,
    mode: str = "fast",
    policy: str = "auto",
    limit: int | None = None,
    batch_size: int = 16,
    progress: Callable | None = None,
    file_limits: Mapping[str, int | None] | None = None,
    exclude_ids: Collection[str] = (),
    keep_scores: bool = False,
    keep_outcomes: bool = False,
    calibration: Calibration | None = None,
    record_filter: Callable[[EvalRecord], bool] | None = None,
    heads: bool = True,
) -> dict:
    """Classify the records of ``data`` with ``model`` and return the report (see the module docstring).

    ``progress(done, total)`` is called after every batch (and once with 0 at the start).
    ``keep_scores`` adds ``report["scores"]``: per task, ``[P(positive), gold is positive]``
    of every scored record (what ``manage.py calibrate`` fits thresholds on); ``calibration``
    replaces the model's own for this run; ``keep_outcomes`` adds ``report["outcomes"]``, each record's outcome
    per task (``evaluation.report.record_outcomes``: what a paired comparison of two models needs); ``record_filter``
    keeps only the sampled records it accepts; ``heads=False`` judges with the label logits although the model has
    latent heads.
    Bad input raises ``EvaluationError``; an unknown model raises the guard's ``GuardError``.
    """
    from guard.backends.base import GuardRequest

    if mode not in MODES:
        raise EvaluationError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1 (got {limit})")
    if batch_size < 1:
        raise EvaluationError(f"batch size must be at least 1 (got {batch_size})")
    for name, file_limit in (file_limits or {}).items():
        if file_limit is not None and file_limit < 1:
            raise EvaluationError(f"limit for {name} must be at least 1 (got {file_limit})")
    files = load_data(data, limit, file_limits, exclude_ids)
    if record_filter is not None:
        for loaded in files:
            loaded.records = [record for record in loaded.records if record_filter(record)]
    records = [record for loaded in files for record in loaded.records]
    if not records:
        raise EvaluationError("the data holds no records")
    resolver = PolicyResolver(policy)
    own = _load_model(model)
    requests = [
        GuardRequest(
            policy=resolver.spec_for(record),
            prompt=record.prompt,
            response=record.response if record.has_response else None,
            mode=mode,  # type: ignore[arg-type]
            tag=index,
        )
        for index, record in enumerate(records)
    ]
    gold_categories = [resolver.gold_codes(record) for record in records]

    total = len(requests)
    if progress:
        progress(0, total)
    verdicts: list[Verdict] = []
    started = time.perf_counter()
    for start in range(0, total, batch_size):
        verdicts.extend(_classify(requests[start : start + batch_size], model, calibration, heads))
        if progress:
            progress(len(verdicts), total)
    elapsed = time.perf_counter() - started
    report = build_report(
        records=records,
        verdicts=verdicts,
        gold_categories=gold_categories,
        files=files,
        model=_default_model_label(model),
        mode=mode,
        elapsed_seconds=elapsed,
        policies=[request.policy for request in requests],
        extra={"policy": resolver.label(), "limit": limit, "file_limits": dict(file_limits or {}), "batch_size": batch_size},
    )
    report["calibration"] = (own if calibration is None else calibration).to_json()
    report["decided_by"] = dict(Counter(v.decided_by for v in verdicts))
    if exclude_ids:
        report["excluded_ids"] = len(exclude_ids)
    if keep_scores:
        report["scores"] = task_score_pairs(records, verdicts)
    if keep_outcomes:
        report["outcomes"] = record_outcomes(records, verdicts, gold_categories)
    return report
