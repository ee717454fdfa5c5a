"""Fit every latent head of a guard model from the corpus (``manage.py fit_heads``, the "Refit heads" job).

1. Draw the fit sample of the training split (``trainer.head_data``) and split it 80/20 by a
   hash of the record id: heads are fitted on 80% and chosen and thresholded on the 20%
   (the validation split: neither trained on nor held out).
2. Compute the backbone's features of every record (``guard.features``; cached on disk per
   backbone, so a refit only computes new texts).
3. Task heads (prompt harm, response harm, refusal), category heads for every category of
   every taxonomy with examples, and the zero-shot calibration on corpus taxonomies plus the
   custom-category training pool (``trainer.policy_following.TRAIN_CATEGORIES``: none of the
   evaluation's categories).
4. Save ``heads/`` beside the model with what they saw: files, counts, licences, choices.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from guard.contract import CategorySpec, PolicySpec
from guard.features import FeatureExtractor
from guard.head_fitting import (
    Split,
    ZeroShotCase,
    fit_category_head,
    fit_linear_head,
    fit_zero_shot,
)
from guard.heads import CategoryHead, GuardHeads, category_key, category_text
from trainer.head_data import HeadRecord, fit_sample
from trainer.policy_following import BENIGN_TEXTS, TRAIN_CATEGORIES

VALIDATION_PERCENT = 20
MIN_CATEGORY_POSITIVES = 3
BACKGROUND_TEXTS = 256
Log = Callable[[str], None]


def in_validation(record_id: str) -> bool:
    return int(hashlib.sha256(f"heads-validation:{record_id}".encode()).hexdigest(), 16) % 100 < VALIDATION_PERCENT


def judged(prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The vector a category is read from: the response where there is one, else the prompt."""
    return np.where(np.isnan(response), prompt, response)


def _split(x: np.ndarray, y: np.ndarray, validation: np.ndarray) -> Split:
    return Split(x[~validation], y[~validation], x[validation], y[validation])


def taxonomy_policies(taxonomies_path: Path | None) -> dict[str, tuple[PolicySpec, dict[str, str]]]:
    """Each corpus taxonomy's preset policy and its source-name -> code map."""
    from policies import presets

    path = str(taxonomies_path) if taxonomies_path and taxonomies_path.is_file() else None
    out = {}
    for name in presets.load_taxonomies(path):
        if name == "none":
            continue
        out[name] = (presets.preset_spec(name, path), presets.taxonomy_code_map(name, path))
    return out


def _general_policies() -> list[PolicySpec]:
    from policies import presets

    return [presets.preset_spec(presets.GENERAL_DEFAULT), presets.preset_spec(presets.MLCOMMONS)]


def _pool_category(category: Any, code: str) -> CategorySpec:
    return CategorySpec(code=code, name=category.name, description=category.description)


class HeadFitter:
    """Fits a ``GuardHeads`` for one backbone (see the module docstring)."""

    def __init__(self, extractor: FeatureExtractor, fingerprint: str, *, log: Log = print, seed: int = 0) -> None:
        self.extractor = extractor
        self.layout = extractor.layout
        self.fingerprint = fingerprint
        self.log = log
        self.rng = random.Random(seed)

    def _encode(self, pairs: list[tuple[str, str | None]], what: str) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if total and (now - last[0] > 20 or done == total):
                last[0] = now
                self.log(f"  features of {what}: {done}/{total} new conversations ({now - started:.0f} s)")

        return self.extractor.encode(pairs, progress=progress)

    def fit(self, records: list[HeadRecord], taxonomies_path: Path | None) -> GuardHeads:
        started = time.perf_counter()
        self.log(f"fit sample: {len(records)} records from {len(set(r.file for r in records))} files")
        prompt, response = self._encode([r.pair for r in records], "the fit sample")
        feature_seconds = time.perf_counter() - started
        validation = np.array([in_validation(r.id) for r in records])
        fit_started = time.perf_counter()
        layout = self.layout

        prompt_rows = np.array([r.prompt_label in ("safe", "unsafe") for r in records])
        y = np.array([r.prompt_label == "unsafe" for r in records])
        prompt_head = fit_linear_head(
            _split(layout.taps(prompt[prompt_rows]), y[prompt_rows], validation[prompt_rows]), source="prompt", blocks="taps"
        )
        self.log(f"prompt head: {prompt_head.kind}, validation {prompt_head.info['validation']}")

        response_rows = np.array([r.response is not None and r.response_label in ("safe", "unsafe") for r in records])
        response_head = None
        if response_rows.sum() >= 20:
            y = np.array([r.response_label == "unsafe" for r in records])
            x = np.concatenate([layout.taps(response[response_rows]), layout.taps(prompt[response_rows])], axis=1)
            response_head = fit_linear_head(_split(x, y[response_rows], validation[response_rows]), source="pair", blocks="taps")
            self.log(f"response head: {response_head.kind}, validation {response_head.info['validation']}")

        refusal_rows = np.array([r.response is not None and r.refusal_label in ("refusal", "compliance") for r in records])
        refusal_head = None
        if refusal_rows.sum() >= 20:
            y = np.array([r.refusal_label == "refusal" for r in records])
            refusal_head = fit_linear_head(
                _split(layout.taps(response[refusal_rows]), y[refusal_rows], validation[refusal_rows]), source="response", blocks="taps"
            )
            self.log(f"refusal head: {refusal_head.kind}, validation {refusal_head.info['validation']}")

        policies = taxonomy_policies(taxonomies_path)
        vectors = judged(prompt, response)
        categories = self._category_heads(records, vectors, validation, policies)
        zero_shot, zero_shot_report = self._zero_shot(records, prompt, vectors, validation, policies)
        fit_seconds = time.perf_counter() - fit_started

        files = Counter(r.file for r in records)
        licences: dict[str, int] = Counter(r.licence for r in records)
        info = {
            "fit_records": len(records),
            "validation_percent": VALIDATION_PERCENT,
            "files": dict(sorted(files.items())),
            "licences": dict(sorted(licences.items())),
            "tasks": {name: head.info for name, head in (("prompt", prompt_head), ("response", response_head), ("refusal", refusal_head)) if head},
            "categories": {"heads": len(categories), "taxonomies": sorted({c.taxonomy for c in categories.values()})},
            "zero_shot": zero_shot_report,
            "feature_seconds": round(feature_seconds, 1),
            "feature_tokens_per_second": round(self.extractor.tokens_per_second, 1),
            "fit_seconds": round(fit_seconds, 1),
            "layout": layout.to_json(),
        }
        return GuardHeads(fingerprint=self.fingerprint, layout=layout, prompt=prompt_head, response=response_head,
                          refusal=refusal_head, categories=categories, zero_shot=zero_shot, info=info)

    # ----------------------------------------------------------------- categories

    def _category_heads(
        self, records: list[HeadRecord], vectors: np.ndarray, validation: np.ndarray,
        policies: dict[str, tuple[PolicySpec, dict[str, str]]],
    ) -> dict[str, CategoryHead]:
        """P(category | unsafe) per category, fitted on all labelled records of its taxonomy (few
        per category: the validation split is scored by the evaluation instead)."""
        by_taxonomy: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            if record.categories and record.taxonomy in policies:
                by_taxonomy[record.taxonomy].append(index)
        heads: dict[str, CategoryHead] = {}
        for taxonomy, indexes in sorted(by_taxonomy.items()):
            spec, code_map = policies[taxonomy]
            x = self.layout.taps(vectors[indexes])
            for source_name, code in code_map.items():
                y = np.array([source_name in records[i].categories for i in indexes])
                if y.sum() < MIN_CATEGORY_POSITIVES or y.sum() == len(y):
                    continue
                category = spec.category(code)
                assert category is not None
                head = fit_category_head(x, y, source="prompt", blocks="taps")
                key = category_key(category)
                heads[key] = CategoryHead(key=key, taxonomy=taxonomy, code=code, name=category.name, head=head, positives=int(y.sum()))
        self.log(f"category heads: {len(heads)} across {len(by_taxonomy)} taxonomies")
        return heads

    def _zero_shot(
        self, records: list[HeadRecord], prompt: np.ndarray, vectors: np.ndarray, validation: np.ndarray,
        policies: dict[str, tuple[PolicySpec, dict[str, str]]],
    ) -> tuple[Any, dict]:
        layout = self.layout
        pool_specs = [_pool_category(c, f"C{i}") for i, c in enumerate(TRAIN_CATEGORIES)]
        category_specs = [c for spec, _ in policies.values() for c in spec.categories]
        category_specs += [c for spec in _general_policies() for c in spec.categories] + pool_specs
        texts = list(dict.fromkeys(category_text(c) for c in category_specs))
        pool_texts = [t for c in TRAIN_CATEGORIES for t in c.violating] + list(BENIGN_TEXTS)
        encoded, _ = self._encode([(t, None) for t in texts + pool_texts], "category descriptions and the custom pool")
        category_final = dict(zip(texts, layout.final(encoded[: len(texts)]), strict=True))
        pool_final = dict(zip(pool_texts, layout.final(encoded[len(texts) :]), strict=True))

        text_center = layout.final(prompt).mean(axis=0)
        category_center = np.mean(list(category_final.values()), axis=0)

        def unit_text(final: np.ndarray) -> np.ndarray:
            centred = final - text_center
            return centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-6)

        def unit_categories(specs: list[CategorySpec]) -> np.ndarray:
            finals = np.stack([category_final[category_text(c)] for c in specs]) - category_center
            return finals / np.maximum(np.linalg.norm(finals, axis=-1, keepdims=True), 1e-6)

        cases: list[ZeroShotCase] = []
        # Corpus taxonomies: a labelled text against its taxonomy's categories (fit split only).
        for index, record in enumerate(records):
            if validation[index] or not record.categories or record.taxonomy not in policies:
                continue
            spec, code_map = policies[record.taxonomy]
            gold = {code_map[c] for c in record.categories if c in code_map}
            units = unit_categories(list(spec.categories))
            cosines = units @ unit_text(layout.final(vectors[index]))
            cases.append(ZeroShotCase(cosines, np.array([c.code in gold for c in spec.categories]), custom=False))
        # The custom pool: each text under a policy of its category and 2-4 others of the pool.
        for i, category in enumerate(TRAIN_CATEGORIES):
            for text in category.violating:
                others = self.rng.sample([j for j in range(len(pool_specs)) if j != i], self.rng.randint(2, 4))
                chosen = [i, *others]
                self.rng.shuffle(chosen)
                units = unit_categories([pool_specs[j] for j in chosen])
                cosines = units @ unit_text(pool_final[text])
                cases.append(ZeroShotCase(cosines, np.array([j == i for j in chosen]), custom=True))
        # Safe texts under custom policies: how often would a category fire on ordinary traffic?
        safe = [i for i, r in enumerate(records) if r.prompt_label == "safe" and not validation[i]]
        self.rng.shuffle(safe)
        background_cosines = []
        for index in safe[:400]:
            chosen = self.rng.sample(range(len(pool_specs)), 4)
            background_cosines.append(unit_categories([pool_specs[j] for j in chosen]) @ unit_text(layout.final(prompt[index])))
        for text in BENIGN_TEXTS:
            chosen = self.rng.sample(range(len(pool_specs)), 4)
            cases.append(ZeroShotCase(unit_categories([pool_specs[j] for j in chosen]) @ unit_text(pool_final[text]),
                                      np.zeros(4, dtype=bool), custom=True))
        # Unsafe corpus texts under the broad presets: the harm verdict must stand (coverage).
        general = _general_policies()[0]
        general_units = unit_categories(list(general.categories))
        unsafe = [i for i, r in enumerate(records) if r.prompt_label == "unsafe" and not validation[i]]
        cover_cosines = [general_units @ unit_text(layout.final(prompt[i])) for i in unsafe[:1500]]
        background = unit_text(layout.final(prompt[safe[:BACKGROUND_TEXTS]]))
        zero_shot, report = fit_zero_shot(
            cases, text_center=text_center, category_center=category_center, background=background,
            cover_cosines=cover_cosines, background_cosines=background_cosines,
        )
        self.log(f"zero-shot: {report}")
        return zero_shot, report


def fit_model_heads(
    backend: Any, data_dir: Path, out_dir: Path, *, log: Log = print, records: list[HeadRecord] | None = None
) -> GuardHeads:
    """Fit and save the heads of a loaded ``TransformersBackend`` from ``data_dir`` (a training split)."""
    from guard.features import extractor_for

    extractor = extractor_for(backend, cached=True)
    fitter = HeadFitter(extractor, backend.feature_fingerprint, log=log)
    records = records if records is not None else fit_sample(Path(data_dir))
    taxonomies = Path(data_dir) / "taxonomies.json"
    heads = fitter.fit(records, taxonomies if taxonomies.is_file() else None)
    heads.info["data"] = str(data_dir)
    target = heads.save(out_dir)
    log(f"heads saved to {target}")
    return heads
