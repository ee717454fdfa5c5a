"""What the latent heads are fitted and measured on: balanced samples of the corpus splits.

The heads (``guard.heads``) read hidden states, which cost a forward per text on a CPU
(about 200-450 tokens/s on 2 cores), so the samples are bounded per file and label: all
the chat traffic (ToxicChat, OpenAI Moderation: the hardest and the most like production),
a capped share of every other file, enough labelled responses and refusals, and a few
records of every category of every taxonomy (GSPR: many taxonomies teach categories).

Sampling is deterministic (a hash of the record id orders each file), so a refit draws the
same records, finds their features in the cache, and only computes new ones.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trainer.corpus import licence_for, read_jsonl

CHAT_FILES = ("toxicchat_train", "toxicchat_train_extra", "openai_moderation_train")
# Human response-harm labels (BeaverTails, PKU-SafeRLHF, DICES): the response head's best teachers.
RESPONSE_FILES = ("gr_beavertails_test", "gr_saferlhf_test", "dices")
# Per file and label: fit sample (train split) and measurement sample (held-out split).
FIT_PER_LABEL = 90
FIT_CHAT_PER_LABEL = 2000
FIT_RESPONSE_PER_LABEL = 120
FIT_HUMAN_RESPONSE_PER_LABEL = 300
FIT_REFUSAL_PER_LABEL = 200
FIT_PER_CATEGORY = 10
HELDOUT_PER_LABEL = 60
HELDOUT_CHAT_PER_LABEL = 1000


@dataclass(frozen=True)
class HeadRecord:
    """One corpus record, as the heads see it."""

    id: str
    file: str
    prompt: str
    response: str | None
    prompt_label: str | None
    response_label: str | None
    refusal_label: str | None
    categories: tuple[str, ...]
    taxonomy: str
    licence: str = ""

    @property
    def pair(self) -> tuple[str, str | None]:
        return self.prompt, self.response


@dataclass
class Sample:
    records: list[HeadRecord] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, record: HeadRecord) -> None:
        if record.id not in self.seen:
            self.seen.add(record.id)
            self.records.append(record)


def _order(record_id: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()


def read_records(path: Path) -> list[HeadRecord]:
    licence = licence_for(path)
    records = []
    for row in read_jsonl(path):
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            continue
        response = (row.get("response") or "").strip() or None
        records.append(
            HeadRecord(
                id=str(row.get("id")),
                file=path.stem,
                prompt=prompt,
                response=response,
                prompt_label=row.get("prompt_label"),
                response_label=row.get("response_label") if response else None,
                refusal_label=row.get("refusal_label") if response else None,
                categories=tuple(row.get("categories") or ()),
                taxonomy=str(row.get("taxonomy") or "none"),
                licence=licence,
            )
        )
    return records


def _take(records: Iterable[HeadRecord], key: str, limit: int, seed: str, sample: Sample) -> None:
    by_label: dict[str, list[HeadRecord]] = defaultdict(list)
    for record in records:
        label = getattr(record, key)
        if label:
            by_label[label].append(record)
    for group in by_label.values():
        for record in sorted(group, key=lambda r: _order(r.id, seed))[:limit]:
            sample.add(record)


def draw(
    directory: Path,
    *,
    per_label: int,
    chat_per_label: int,
    response_per_label: int,
    refusal_per_label: int,
    human_response_per_label: int | None = None,
    per_category: int,
    seed: str = "heads-v1",
    files: Mapping[str, list[HeadRecord]] | None = None,
) -> list[HeadRecord]:
    """A balanced sample of every ``*.jsonl`` in ``directory`` (see the module docstring)."""
    loaded = dict(files) if files is not None else {p.stem: read_records(p) for p in sorted(Path(directory).glob("*.jsonl"))}
    sample = Sample()
    for name, records in loaded.items():
        prompt_limit = chat_per_label if name in CHAT_FILES else per_label
        _take(records, "prompt_label", prompt_limit, seed, sample)
        response_limit = human_response_per_label if human_response_per_label and name in RESPONSE_FILES else response_per_label
        _take([r for r in records if r.response], "response_label", response_limit, seed, sample)
        _take([r for r in records if r.response], "refusal_label", refusal_per_label, seed, sample)
        if per_category:
            by_category: dict[tuple[str, str], list[HeadRecord]] = defaultdict(list)
            for record in records:
                for category in record.categories:
                    by_category[(record.taxonomy, category)].append(record)
            for group in by_category.values():
                for record in sorted(group, key=lambda r: _order(r.id, seed))[:per_category]:
                    sample.add(record)
    return sample.records


def fit_sample(directory: Path) -> list[HeadRecord]:
    return draw(
        directory,
        per_label=FIT_PER_LABEL,
        chat_per_label=FIT_CHAT_PER_LABEL,
        response_per_label=FIT_RESPONSE_PER_LABEL,
        refusal_per_label=FIT_REFUSAL_PER_LABEL,
        per_category=FIT_PER_CATEGORY,
        human_response_per_label=FIT_HUMAN_RESPONSE_PER_LABEL,
    )


def heldout_sample(directory: Path) -> list[HeadRecord]:
    return draw(
        directory,
        per_label=HELDOUT_PER_LABEL,
        chat_per_label=HELDOUT_CHAT_PER_LABEL,
        response_per_label=HELDOUT_PER_LABEL,
        refusal_per_label=HELDOUT_PER_LABEL,
        per_category=0,
        seed="heads-heldout-v1",
    )
