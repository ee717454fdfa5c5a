"""Benchmark records: JSONL files in the shared corpus schema, read, checked and sampled.

Data: JSONL files (or directories of them) in the shared corpus schema
``{id, source, prompt, response, prompt_label, response_label, refusal_label,
categories, taxonomy}``; a malformed line raises ``EvaluationError`` naming file and line.

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.datasets import DatasetLineError, iter_jsonl, taxonomies_beside

SAMPLE_SEED = "guardsite-eval-v1"


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
