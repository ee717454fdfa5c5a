"""Training examples for the guard.

Sources
    * JSONL files in the shared benchmark schema (``id, source, prompt, response,
      prompt_label, response_label, refusal_label, categories, taxonomy``), or
      directories of them. Every record is rendered under *its own* taxonomy
      (``policies.presets.preset_spec``; taxonomy ``none`` -> the general
      default), so one run teaches the model to follow whatever policy it is
      given (the GSPR idea).
    * ``reviewed:<slug>`` (or ``reviewed`` for every policy): human-reviewed items
      from ``moderation.export.reviewed_records()``, each rendered under the
      policy version it was judged against.

Augmentation (GSPR-style, ``trainer.augmentation``): the category order is shuffled, a
random subset that keeps the gold categories is shown, and some codes are renumbered.

Targets are ``guard.contract.format_answer`` texts. The explanation comes from
a teacher model (``Teacher``) when one is configured and its parsed labels match
gold; otherwise it is composed from the gold categories' policy descriptions.

Mix (``trainer.mix``): every example has a task (prompt, response, refusal) and a
task label; the budget is split across tasks, then labels (positive share 40-60%),
then water-filled across sources by weight with a per-source cap. The realised
task x label x source table is logged and stored in the run's provenance.

Unknown fields: a record may lack a gold label the answer block needs (a response
label but no prompt label, as in BeaverTails/DICES; a response without a refusal
label; an unsafe record without categories). The target then carries a placeholder
that the SFT loss ignores (``masked_fields``: those tokens get no loss) and the GRPO
rewards skip. A refusal label is *derived* (trained) where it is safe to: an unsafe
response complied, and a safe answer to a safe prompt that does not open like a
refusal is compliance.

Licences: each example carries its source's licence (``trainer.licences``, from the
MANIFEST.md beside the data); ``licences=`` restricts a run to an allowlist.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from guard.contract import (
    EXPLANATION_WORD_BUDGET,
    NONE,
    PolicySpec,
    parse,
)
from policies.datasets import TAXONOMIES_FILE, taxonomies_beside
from trainer import explanations as explaining
from trainer import licences as licensing
from trainer import mix as mixing
from trainer.augmentation import (  # noqa: F401 - re-exported
    DEFAULT_MAX_CATEGORIES,
    RENUMBER_SHARE,
    augment_policy,
    renumber_codes,
)
from trainer.corpus import (  # noqa: F401 - re-exported: the trainer's one entry point
    REVIEWED_PREFIX,
    expand_paths,
    file_sha256,
    is_held_out,
    licence_for,
    parse_manifest,
    read_jsonl,
    shared_dataset_files,
)
from trainer.examples import (  # noqa: F401 - re-exported
    ANSWER_END,
    GoldLabels,
    Teacher,
    TrainingExample,
    completion_mask_spans,
    gold_for_row,
    gold_from_record,
    looks_like_refusal,
    spec_from_json,
    spec_to_json,
)
from trainer.policy_views import (  # noqa: F401 - re-exported
    CROSS_POLICY_SHARE,
    GENERATED_POLICY_FLIP,
    GENERATED_POLICY_FOLLOWING,
    cross_policy,
    policy_flip_examples,
    policy_following_examples,
    policy_pool,
)

# The ids of every example a run was built from (one per line, in the run directory):
# what calibration and evaluation must leave out to measure the model on data it never saw.
TRAINING_IDS_FILE = "training_ids.txt"
# Safety margin under the 40-word budget for composed explanations.
COMPOSED_WORD_LIMIT = EXPLANATION_WORD_BUDGET - 2


# --------------------------------------------------------------------------- explanations


def compose_explanation(policy: PolicySpec, gold: GoldLabels, has_response: bool, prompt: str = "",
                        response: str | None = None, key: str = "", not_covered: str | None = None,
                        not_covered_how: str = "does not list") -> str:
    """A short rationale (<= 38 words) naming the code and quoting the triggering words (``trainer.explanations``)."""
    return explaining.compose(
        policy, prompt_label=gold.prompt_label, response_label=gold.response_label if has_response else None,
        refusal_label=gold.refusal_label if has_response else None, categories=gold.categories,
        prompt=prompt or "", response=response if has_response else None, key=key or prompt,
        not_covered=not_covered, not_covered_how=not_covered_how,
    )


# --------------------------------------------------------------------------- building


@dataclass
class FileReport:
    path: str
    name: str
    licence: str
    sha256: str
    licence_id: str = licensing.UNKNOWN
    records: int = 0
    usable: int = 0
    held_out: int = 0
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class BuiltData:
    examples: list[TrainingExample]
    files: list[FileReport]
    reviewed: dict[str, int]
    # {"before": {source: {label: n}}, "after": {...}, "labels": {label: n}, "explanations": {...}}
    mix: dict[str, Any]
    # file name -> held-out records (shared schema), for the evaluation harness.
    held_out: dict[str, list[dict[str, Any]]]

    def provenance(self) -> dict[str, Any]:
        return {
            "files": [asdict(f) for f in self.files],
            "reviewed": self.reviewed,
            "mix": self.mix,
        }

    def write_held_out(self, directory: Path) -> list[Path]:
        """Write held-out records as JSONL (same file names) plus taxonomies.json; return the files."""
        from policies.presets import BUNDLED_TAXONOMIES

        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, records in sorted(self.held_out.items()):
            if not records:
                continue
            target = directory / name
            with target.open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            written.append(target)
        taxonomies = next((found for f in self.files if (found := taxonomies_beside(Path(f.path)))), BUNDLED_TAXONOMIES)
        (directory / TAXONOMIES_FILE).write_text(Path(taxonomies).read_text(encoding="utf-8"), encoding="utf-8")
        return written


def _map_to_policy(policy: PolicySpec, names: list[str]) -> list[str] | None:
    """Gold categories of a benchmark record in a chosen policy's codes, matched by name.

    ``names`` are the record's source category names and its preset categories'
    names (never bare codes: "S1" means different things in different policies).
    None when the record names categories and none of them is in the policy (it
    may be allowed there, or unsafe for a reason the policy cannot express).
    """
    mapped: list[str] = []
    for name in names:
        wanted = name.strip().casefold()
        match = next((c.code for c in policy.categories if c.name.strip().casefold() == wanted), None)
        if match and match not in mapped:
            mapped.append(match)
    if names and not mapped:
        return None
    return mapped


def _records_from_file(path: Path, policy_override: PolicySpec | None, report: FileReport,
                       holdout_percent: int, held_out: list[dict[str, Any]]) -> Iterator[tuple[PolicySpec, dict, GoldLabels]]:
    from policies import presets

    beside = taxonomies_beside(path)
    taxonomy_path = str(beside) if beside else None
    skipped: Counter[str] = Counter()
    for record in read_jsonl(path):
        report.records += 1
        if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            skipped["no prompt text"] += 1
            continue
        record_id = str(record.get("id") or f"{path.stem}-{report.records}")
        taxonomy = str(record.get("taxonomy") or "none")
        categories = [str(c) for c in record.get("categories") or []]
        try:
            codes = presets.gold_codes(taxonomy, categories, taxonomy_path)
            spec = presets.preset_spec(taxonomy, taxonomy_path)
        except KeyError:
            skipped["unknown taxonomy or category"] += 1
            continue
        if policy_override is not None:
            preset_names = [c.name for c in (spec.category(code) for code in codes) if c is not None]
            mapped = _map_to_policy(policy_override, [*categories, *preset_names])
            if mapped is None:
                skipped["categories not in the chosen policy"] += 1
                continue
            codes, spec = mapped, policy_override
        gold = gold_from_record(record, codes)
        if gold is None:
            skipped["no usable gold label"] += 1
            continue
        report.usable += 1
        if is_held_out(record_id, holdout_percent):
            report.held_out += 1
            held_out.append(record)
            continue
        yield spec, {**record, "id": record_id}, gold
    report.skipped = dict(skipped)


def _reviewed_records(spec: str) -> Iterator[tuple[PolicySpec, dict, GoldLabels, str]]:
    """Reviewed items (human labels) under the policy version they were judged against."""
    from moderation.export import reviewed_records
    from policies.models import PolicyVersion

    wanted = spec.split(":", 1)[1].strip() if ":" in spec else ""
    versions: dict[int, PolicySpec] = {}
    for record in reviewed_records(wanted or None):
        taxonomy = str(record.get("taxonomy") or "")
        slug = taxonomy.removeprefix("policy:").split("@", 1)[0]
        version_id = record.get("policy_version_id")
        if version_id is None:
            continue
        if version_id not in versions:
            version = PolicyVersion.objects.select_related("policy").filter(pk=version_id).first()
            if version is None:
                continue
            versions[version_id] = version.to_spec()
        policy = versions[version_id]
        codes = [c.code for c in (policy.category(str(code)) for code in record.get("categories") or []) if c is not None]
        gold = gold_from_record(record, codes)
        if gold is None:
            continue
        yield policy, record, gold, f"{REVIEWED_PREFIX}:{slug}"


def _mix(examples: Sequence[TrainingExample]) -> dict[str, dict[str, int]]:
    mix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for example in examples:
        mix[example.source][example.gold.label] += 1
    return {source: dict(sorted(labels.items())) for source, labels in sorted(mix.items())}


REVIEWED_LICENCE = "operator-data"


def build_dataset(
    sources: Sequence[str],
    *,
    policy: str = "auto",
    max_examples: int | None = 2000,
    seed: int = 0,
    holdout_percent: int = 10,
    augment: bool = True,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    teacher: Teacher | None = None,
    log: Callable[[str], None] | None = None,
    mix: mixing.MixSpec | str | None = None,
    licences: str | None = None,
) -> BuiltData:
    """Read, label, mix, augment and explain. Deterministic for a given seed.

    ``mix``: a ``MixSpec`` or its text form (default: ``MixSpec()``); ``licences``: an
    allowlist (``permissive``, ids, ``all``); files whose licence it does not allow are skipped.
    """
    rng = random.Random(seed)
    spec = mix if isinstance(mix, mixing.MixSpec) else mixing.MixSpec.parse(mix)
    allowlist = licensing.parse_allowlist(licences)
    files, reviewed_specs = expand_paths(sources)
    if not files and not reviewed_specs:
        raise ValueError("no training data: give at least one JSONL file, directory or reviewed:<policy-slug>")
    policy_override = resolve_policy_override(policy)

    candidates: list[TrainingExample] = []
    reports: list[FileReport] = []
    held_out: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        licence_text = licence_for(path)
        report = FileReport(path=str(path.resolve()), name=path.name, licence=licence_text, sha256=file_sha256(path),
                            licence_id=licensing.licence_id(licence_text))
        reports.append(report)
        held = held_out.setdefault(path.name, [])
        if not licensing.allowed(report.licence_id, allowlist):
            report.skipped = {f"licence {report.licence_id} not in the allowlist": 1}
            continue
        for spec_, record, gold in _records_from_file(path, policy_override, report, holdout_percent, held):
            candidates.append(_example(record, spec_, gold, path.stem, report.licence_id))

    reviewed_counts: Counter[str] = Counter()
    for spec_text in reviewed_specs:
        for spec_, record, gold, source in _reviewed_records(spec_text):
            reviewed_counts[source] += 1
            candidates.append(_example(record, spec_, gold, source, REVIEWED_LICENCE))
    if not candidates:
        raise ValueError("the data sources hold no record with a usable gold label"
                         + (f" under the licence allowlist {licences!r}" if allowlist is not None else ""))

    # Generated policy-following examples join a mixed draw (a budget), not "every record as it is".
    generated: list[TrainingExample] = []
    if max_examples is not None:
        pf_count = round(spec.policy_following * max_examples)
        if policy_override is None and pf_count and licensing.allowed(licensing.PROJECT_LICENCE, allowlist):
            generated += policy_following_examples(pf_count, seed)
        generated += [e for e in policy_flip_examples(candidates, round(spec.policy_flip * max_examples), rng)
                      if licensing.allowed(e.licence, allowlist)]
    candidates += generated

    before = _mix(candidates)
    examples = mixing.allocate(candidates, max_examples, spec, rng, key=TrainingExample.mix_key)
    used = Counter(e.source for e in examples)
    for report in reports:
        report.used = used.get(Path(report.name).stem, 0)

    moved = 0
    pool = policy_pool(candidates) if policy_override is None and augment else []
    for example in examples:
        if example.source == GENERATED_POLICY_FOLLOWING:
            continue  # its two policies are the point: shown exactly as built
        if pool and not example.source.startswith("generated/") and rng.random() < CROSS_POLICY_SHARE:
            moved += cross_policy(example, pool, rng)
        if augment:
            example.policy = augment_policy(example.policy, example.gold, rng, max_categories=max_categories)
            if policy_override is None and rng.random() < RENUMBER_SHARE:
                example.policy, example.gold = renumber_codes(example.policy, example.gold, rng)
        elif len(example.policy.categories) > max_categories:
            example.policy = augment_policy(example.policy, example.gold, rng, shuffle=0.0, subset=0.0, max_categories=max_categories)
    explain_all(examples, teacher)
    origins = Counter(example.explanation_origin for example in examples)
    realised = mixing.table(examples, TrainingExample.mix_key)
    licence_counts = Counter(example.licence for example in examples)

    mix_record = {
        "before": before,
        "after": _mix(examples),
        "labels": dict(sorted(Counter(e.gold.label for e in examples).items())),
        "explanations": dict(origins),
        "total": len(examples),
        "table": realised,
        "summary": mixing.summary(realised),
        "spec": spec.to_json(),
        "licences": dict(sorted(licence_counts.items())),
        "licence_allowlist": licensing.describe_allowlist(allowlist),
        "masked_fields": dict(sorted(Counter(f for e in examples for f in e.masked_fields).items())),
        "derived_fields": dict(sorted(Counter(f for e in examples for f in e.gold.derived).items())),
        "cross_policy_safe": moved,
    }
    if log:
        log(f"built {len(examples)} examples from {len(candidates)} candidates; labels {mix_record['labels']}; "
            f"explanations {dict(origins)}; licences {dict(licence_counts)}")
        log("realised mix (task x label x source):\n" + mixing.format_table(realised))
    return BuiltData(examples=examples, files=reports, reviewed=dict(reviewed_counts), mix=mix_record, held_out=held_out)


def _example(record: dict[str, Any], spec: PolicySpec, gold: GoldLabels, source: str,
             licence: str = licensing.UNKNOWN) -> TrainingExample:
    response = record.get("response")
    return TrainingExample(
        id=str(record.get("id")),
        source=source,
        policy=spec,
        prompt=str(record["prompt"]),
        response=response if isinstance(response, str) and response.strip() else None,
        gold=gold,
        licence=licence,
    )


def accept_teacher_answer(example: TrainingExample, answer: str | None) -> str | None:
    """The teacher's explanation when its answer parses with exactly the gold labels
    (categories too, where gold categories are known) within the word budget; else None."""
    if not answer:
        return None
    verdict = parse(answer, example.policy, example.has_response).verdict
    gold = example.gold
    if verdict is None:
        return None
    if (verdict.prompt_label, verdict.response_label) != (gold.prompt_label, gold.response_label):
        return None
    if gold.refusal_label is not None and verdict.refusal_label != gold.refusal_label:
        return None
    if gold.categories_known and sorted(verdict.categories) != sorted(gold.categories):
        return None
    if not 0 < verdict.explanation_words <= EXPLANATION_WORD_BUDGET:
        return None
    return verdict.explanation


def explain_all(examples: Sequence[TrainingExample], teacher: Teacher | None) -> None:
    """Set every example's explanation: the teacher's where accepted, else composed from the policy."""
    answers: list[str | None] = [None] * len(examples)
    if teacher is not None:
        many = getattr(teacher, "answer_many", None)
        answers = list(many(list(examples))) if many else [teacher.answer(e) for e in examples]
    for example, answer in zip(examples, answers, strict=True):
        accepted = accept_teacher_answer(example, answer)
        if accepted is not None:
            example.explanation, example.explanation_origin = accepted, "teacher"
        else:
            example.explanation = compose_explanation(example.policy, example.gold, example.has_response, example.prompt,
                                                      example.response, example.id, example.not_covered,
                                                      example.not_covered_how)
            example.explanation_origin = "composed"


def resolve_policy_override(policy: str) -> PolicySpec | None:
    """``auto`` -> None (each record under its own taxonomy); a slug -> its latest published version."""
    value = (policy or "auto").strip()
    if value == "auto":
        return None
    from policies import presets
    from policies.models import Policy

    found = Policy.objects.filter(slug=value).first()
    if found is not None:
        version = found.latest_version() or found.draft()
        spec = version.to_spec()
        if not spec.categories:
            raise ValueError(f"policy {value!r} has no categories")
        return spec
    try:
        return presets.preset_spec(value)
    except KeyError:
        raise ValueError(f"unknown policy {value!r}: use auto, a policy slug or a preset name") from None


__all__ = [
    "ANSWER_END",
    "BuiltData",
    "GoldLabels",
    "NONE",
    "Teacher",
    "TrainingExample",
    "augment_policy",
    "build_dataset",
    "compose_explanation",
    "parse_manifest",
    "spec_from_json",
    "spec_to_json",
]
