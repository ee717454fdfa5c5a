"""The evaluation harness: benchmark JSONL files -> a report with a fixed contract.

``evaluate()`` is used by ``manage.py evaluate``, by the evaluation runs of the
UI (``evaluation.tasks.run_evaluation``) and by the trainer as its promotion
gate: keep its signature and the report's keys stable.

Data: JSONL files (or directories of them) in the shared corpus schema
``{id, source, prompt, response, prompt_label, response_label, refusal_label,
categories, taxonomy}``.

Which tasks a record contributes to: every record is classified once (one
guard request). Its prompt prediction is scored when it has a gold
``prompt_label``; when it has an AI response, its response and refusal
predictions are scored against the gold ``response_label`` /
``refusal_label`` where present; its categories are scored when it has gold
categories. Parse failures count as wrong (see ``evaluation.metrics``).

Policies: ``policy="auto"`` judges each record under its own taxonomy, read
from a ``taxonomies.json`` next to the data file when there is one (else the
built-in presets); taxonomy ``none`` gets the general default policy.
Any other value names a database ``Policy`` (its latest published version)
or, failing that, a preset; every record is then judged under that policy, and
category metrics cover only records whose taxonomy *is* that preset (other
taxonomies' codes mean nothing under it).

Sampling (``limit=N``): per file, the records are shuffled with a seed derived
from the file *name* (so the same file samples identically wherever it lives)
and N are taken stratified by the gold label triple (prompt_label,
response_label, refusal_label): each stratum gets its proportional share
(largest remainder), every stratum at least one record when N is at least the
number of strata, and within a stratum the first records of the shuffled
order are taken. The same data and N always give the same sample.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.metrics import (
    POSITIVE_CLASS,
    PROMPT_TASK,
    REFUSAL_TASK,
    RESPONSE_TASK,
    TASKS,
    CategoryPrediction,
    Prediction,
    categories_by_file,
    category_scores,
    explanation_stats,
    fixed_code_share,
    mean,
    percentile,
    task_scores,
)
from guard.calibration import Calibration
from guard.contract import MODES, PolicySpec, Verdict
from policies.datasets import TAXONOMIES_FILE, DatasetLineError, iter_jsonl, taxonomies_beside

AUTO_POLICY = "auto"
SAMPLE_SEED = "guardsite-eval-v1"
REPORT_VERSION = 1

ProgressCallback = Callable[[int, int], None]


class EvaluationError(ValueError):
    """Bad input to the harness (a missing file, a malformed record, an unknown policy); the message says which."""


@dataclass(frozen=True)
class EvalRecord:
    file: str  # the report's key for the file (its name)
    line: int
    id: str
    prompt: str
    response: str | None
    prompt_label: str | None
    response_label: str | None
    refusal_label: str | None
    categories: tuple[str, ...]
    taxonomy: str
    taxonomies_path: str | None = None

    @property
    def has_response(self) -> bool:
        return bool(self.response and self.response.strip())

    @property
    def stratum(self) -> tuple[str | None, str | None, str | None]:
        return (self.prompt_label, self.response_label, self.refusal_label)


@dataclass
class LoadedFile:
    name: str
    path: Path
    records: list[EvalRecord] = field(default_factory=list)
    total: int = 0  # records in the file before sampling


# ------------------------------------------------------------------ data


def expand_data_paths(data: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories -> their ``*.jsonl`` files (sorted). Missing paths raise."""
    files: list[Path] = []
    for item in data:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
            if not found:
                raise EvaluationError(f"data directory {str(path)!r} holds no .jsonl files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise EvaluationError(f"data path {str(path)!r} does not exist")
    if not files:
        raise EvaluationError("no data given: pass at least one JSONL file or directory")
    unique: list[Path] = []
    for path in files:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def _file_keys(paths: Sequence[Path]) -> list[str]:
    """The report key of each file: its name, or parent/name where two files share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


_LABELS = {
    "prompt_label": ("safe", "unsafe"),
    "response_label": ("safe", "unsafe"),
    "refusal_label": ("refusal", "compliance"),
}


def _parse_record(raw: dict[str, Any], key: str, path: Path, line: int, taxonomies_path: str | None) -> EvalRecord:
    where = f"{path.name}:{line}"
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise EvaluationError(f"{where}: 'prompt' must be a non-empty string")
    response = raw.get("response")
    if response is not None and not isinstance(response, str):
        raise EvaluationError(f"{where}: 'response' must be a string or null")
    labels: dict[str, str | None] = {}
    for name, choices in _LABELS.items():
        value = raw.get(name)
        if value is not None and value not in choices:
            raise EvaluationError(f"{where}: {name} {value!r} is not one of {', '.join(choices)} or null")
        labels[name] = value
    categories = raw.get("categories") or []
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise EvaluationError(f"{where}: 'categories' must be a list of strings")
    taxonomy = raw.get("taxonomy") or "none"
    if not isinstance(taxonomy, str):
        raise EvaluationError(f"{where}: 'taxonomy' must be a string")
    return EvalRecord(
        file=key,
        line=line,
        id=str(raw.get("id") or f"{path.name}:{line}"),
        prompt=prompt,
        response=response,
        prompt_label=labels["prompt_label"],
        response_label=labels["response_label"],
        refusal_label=labels["refusal_label"],
        categories=tuple(categories),
        taxonomy=taxonomy,
        taxonomies_path=taxonomies_path,
    )


def read_jsonl(path: Path, key: str | None = None) -> list[EvalRecord]:
    """Every record of one file; a malformed line raises ``EvaluationError`` naming file and line."""
    beside = taxonomies_beside(path)
    taxonomies_path = str(beside) if beside else None
    records = []
    try:
        for number, raw in iter_jsonl(path):
            if not isinstance(raw, dict):
                raise EvaluationError(f"{path.name}:{number}: expected a JSON object")
            records.append(_parse_record(raw, key or path.name, path, number, taxonomies_path))
    except DatasetLineError as exc:
        raise EvaluationError(str(exc)) from None
    return records


def sample_records(records: Sequence[EvalRecord], limit: int | None, seed_key: str) -> list[EvalRecord]:
    """A deterministic, label-stratified sample of ``limit`` records (see the module docstring)."""
    if limit is None or limit >= len(records):
        return list(records)
    if limit <= 0:
        return []
    shuffled = list(records)
    random.Random(f"{SAMPLE_SEED}:{seed_key}").shuffle(shuffled)
    strata: dict[tuple, list[EvalRecord]] = {}
    for record in shuffled:
        strata.setdefault(record.stratum, []).append(record)
    keys = list(strata)
    exact = {k: limit * len(strata[k]) / len(shuffled) for k in keys}
    take = {k: int(exact[k]) for k in keys}
    # Largest remainder (ties: the stratum met first in the shuffled order).
    for k in sorted(keys, key=lambda k: exact[k] - take[k], reverse=True)[: limit - sum(take.values())]:
        take[k] += 1
    if limit >= len(keys):
        for k in keys:
            if take[k] == 0:
                donor = max(keys, key=lambda d: take[d])
                take[donor] -= 1
                take[k] = 1
    chosen = {id(r) for k in keys for r in strata[k][: take[k]]}
    return [r for r in shuffled if id(r) in chosen]


def load_data(data: Iterable[str | Path], limit: int | None = None,
              file_limits: Mapping[str, int | None] | None = None,
              exclude_ids: Collection[str] = ()) -> list[LoadedFile]:
    """Read and sample every file; ``file_limits`` (by file name, with or without
    ``.jsonl``; None = every record) overrides ``limit`` for the files it names.
    Records whose id is in ``exclude_ids`` (e.g. what a model was trained on) are
    dropped before sampling."""
    paths = expand_data_paths(data)
    overrides = dict(file_limits or {})
    unknown = set(overrides) - {name for path in paths for name in (path.name, path.stem)}
    if unknown:
        raise EvaluationError(f"a per-file limit names no data file: {', '.join(sorted(unknown))}")
    loaded = []
    for path, key in zip(paths, _file_keys(paths), strict=True):
        records = read_jsonl(path, key)
        if exclude_ids:
            records = [record for record in records if record.id not in exclude_ids]
        file_limit = next((overrides[name] for name in (path.name, path.stem) if name in overrides), limit)
        loaded.append(LoadedFile(name=key, path=path, records=sample_records(records, file_limit, path.name), total=len(records)))
    return loaded


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


def _classify(requests: list, model: str | None, calibration: Calibration | None = None) -> list[Verdict]:
    from guard import runtime

    verdicts = runtime.classify(requests, model, calibration=calibration)
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
    calibration: Calibration | None = None,
    record_filter: Callable[[EvalRecord], bool] | None = None,
) -> dict:
    """Classify the records of ``data`` with ``model`` and return the report (see the module docstring).

    ``progress(done, total)`` is called after every batch (and once with 0 at the start).
    ``keep_scores`` adds ``report["scores"]``: per task, ``[P(positive), gold is positive]``
    of every scored record (what ``manage.py calibrate`` fits thresholds on); ``calibration``
    replaces the model's own for this run; ``record_filter`` keeps only the sampled records it accepts.
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
        verdicts.extend(_classify(requests[start : start + batch_size], model, calibration))
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
    if exclude_ids:
        report["excluded_ids"] = len(exclude_ids)
    if keep_scores:
        report["scores"] = task_score_pairs(records, verdicts)
    return report


def task_score_pairs(records: Sequence[EvalRecord], verdicts: Sequence[Verdict]) -> dict[str, list[list[Any]]]:
    """``{task: [[P(positive), gold is positive], ...]}`` for the records with a gold label and a score."""
    return {
        task: [
            [round(p.score, 6), p.gold == POSITIVE_CLASS[task]]
            for p in predictions
            if p.gold is not None and p.score is not None and not p.parse_failed
        ]
        for task, predictions in _task_predictions(records, verdicts).items()
    }


def _task_predictions(records: Sequence[EvalRecord], verdicts: Sequence[Verdict]) -> dict[str, list[Prediction]]:
    out: dict[str, list[Prediction]] = {task: [] for task in TASKS}
    for record, verdict in zip(records, verdicts, strict=True):
        failed = verdict.parse_error is not None
        out[PROMPT_TASK].append(Prediction(record.prompt_label, verdict.prompt_label, failed, _score(verdict, PROMPT_TASK)))
        if record.has_response:
            out[RESPONSE_TASK].append(
                Prediction(record.response_label, verdict.response_label, failed, _score(verdict, RESPONSE_TASK))
            )
            out[REFUSAL_TASK].append(
                Prediction(record.refusal_label, verdict.refusal_label, failed, _score(verdict, REFUSAL_TASK))
            )
    return out


def _score(verdict: Verdict, task: str) -> float | None:
    """The verdict's probability of the task's positive class (fast scoring), if it has one."""
    value = (verdict.probabilities or {}).get(task, {}).get(POSITIVE_CLASS[task])
    return float(value) if isinstance(value, int | float) else None


def build_report(
    records: Sequence[EvalRecord],
    verdicts: Sequence[Verdict],
    gold_categories: Sequence[tuple[str, list[str]]],
    files: Sequence[LoadedFile],
    model: str,
    mode: str,
    elapsed_seconds: float,
    extra: dict[str, Any] | None = None,
    policies: Sequence[PolicySpec] | None = None,
) -> dict[str, Any]:
    """The report from records and their verdicts (pure: no model, no database).

    Besides the tasks: ``categories_by_file`` (category micro/macro F1 per file), ``first_code``
    (share of unsafe verdicts naming the policy's first code, beside gold's share; needs
    ``policies``, the policy each record was judged under) and ``explanations`` (flagged items:
    distinct share and mean words; meaningful in reason mode).
    """
    tasks = task_scores(_task_predictions(records, verdicts))
    per_file: dict[str, dict[str, Any]] = {}
    file_sizes: dict[str, dict[str, int]] = {}
    for loaded in files:
        pairs = [(r, v) for r, v in zip(records, verdicts, strict=True) if r.file == loaded.name]
        file_tasks = task_scores(_task_predictions([r for r, _ in pairs], [v for _, v in pairs]))
        per_file[loaded.name] = file_tasks
        file_sizes[loaded.name] = {"n": len(pairs), "records_in_file": loaded.total}
    category_predictions = [
        CategoryPrediction(taxonomy, gold, [] if verdict.parse_error else verdict.categories)
        for (taxonomy, gold), verdict in zip(gold_categories, verdicts, strict=True)
    ]
    categories = category_scores(category_predictions)
    flagged = [v for v in verdicts if v.parse_error is None and v.is_unsafe]
    # Explanations of parsed verdicts only: a parse failure has no explanation to measure.
    words = [float(v.explanation_words) for v in verdicts if v.parse_error is None]
    n = len(records)
    report: dict[str, Any] = {
        "model": model,
        "mode": mode,
        "n": n,
        "items_per_second": round(n / elapsed_seconds, 3) if elapsed_seconds > 0 else 0.0,
        "words_per_explanation": {"mean": mean(words), "p90": percentile(words, 90)},
        "tasks": tasks,
        "files": per_file,
        "categories": categories,
        "categories_by_file": categories_by_file([r.file for r in records], category_predictions),
        "explanations": explanation_stats([v.explanation for v in flagged]),
        "file_sizes": file_sizes,
        "parse_failures": sum(1 for v in verdicts if v.parse_error is not None),
        "elapsed_seconds": round(elapsed_seconds, 3),
        "data": [str(loaded.path) for loaded in files],
        "sampling": {"seed": SAMPLE_SEED, "stratified_by": ["prompt_label", "response_label", "refusal_label"]},
        "report_version": REPORT_VERSION,
    }
    if policies is not None:
        predicted = [v.categories if v.parse_error is None and v.is_unsafe else None for v in verdicts]
        golds = [gold for _, gold in gold_categories]
        for key, position in (("first_code", 0), ("last_code", -1)):
            report[key] = fixed_code_share([policy.codes[position] if policy.codes else None for policy in policies],
                                           predicted, golds)
    report.update(extra or {})
    return report


def format_summary(report: dict[str, Any]) -> str:
    """A small plain-text table of a report (also used by the bench script)."""
    lines = [
        f"model {report['model']} · mode {report['mode']} · n {report['n']} · "
        f"{report['items_per_second']:.2f} items/s · words/explanation mean {report['words_per_explanation']['mean']:.1f} "
        f"p90 {report['words_per_explanation']['p90']:.0f}",
        f"{'file':32} {'task':9} {'n':>5} {'F1':>7} {'P':>7} {'R':>7} {'AUROC':>7} {'parse!':>6}",
    ]
    rows = [("ALL", report["tasks"])] + sorted(report["files"].items())
    for name, tasks in rows:
        for task in TASKS:
            scores = tasks[task]
            if scores["n"]:
                auc = scores.get("auroc")
                lines.append(
                    f"{name[:32]:32} {task:9} {scores['n']:>5} {scores['f1']:>7.2f} {scores['precision']:>7.2f} "
                    f"{scores['recall']:>7.2f} {'-' if auc is None else f'{auc:.2f}':>7} {scores['parse_failures']:>6}"
                )
    categories = report["categories"]
    lines.append(
        f"categories: micro F1 {categories['micro_f1']:.2f} · macro F1 {categories['macro_f1']:.2f} "
        f"over {categories.get('n', 0)} records, {len(categories['per_category'])} categories"
    )
    for name, scores in sorted((report.get("categories_by_file") or {}).items()):
        if scores["n"]:
            lines.append(f"  {name[:40]:40} categories micro {scores['micro_f1']:.2f} macro {scores['macro_f1']:.2f} (n {scores['n']})")
    for key, which in (("first_code", "first"), ("last_code", "last")):
        if fixed := report.get(key):
            lines.append(f"{which} code: {fixed['share']:.1f}% of {fixed['with_codes']} unsafe verdicts with codes name the "
                         f"policy's {which} code (gold: {fixed['gold_share']:.1f}% of {fixed['gold_records']})")
    explained = report.get("explanations")
    if explained and explained["with_explanation"]:
        lines.append(f"explanations of flagged items: {explained['distinct_share']:.1f}% distinct "
                     f"({explained['distinct']}/{explained['with_explanation']}), mean {explained['mean_words']:.1f} words")
    following = report.get("policy_following")
    if following:
        lines.append(f"policy following: {following['pair_accuracy']:.1f}% of {following['n']} pairs right, "
                     f"code {following['code_accuracy']:.1f}%")
    return "\n".join(lines)

