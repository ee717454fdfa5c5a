"""Fit every latent head of a guard model from the corpus (``manage.py fit_heads``, the "Refit heads" job).

1. Draw the fit sample of the training split (``trainer.head_data``) and split it 80/20 by a
   hash of the record id: heads are fitted on 80% and chosen and thresholded on the 20%
   (the validation split: neither trained on nor held out).
2. Compute the backbone's features of every record (``guard.features``; cached on disk per
   backbone, so a refit only computes new texts).
3. With ``LayerTuning`` (``--tune-epochs``, the job's "tune layers" field; ``--tune-copies``: several orders averaged), the prompt head is a copy
   of layers 12-14 tuned with a linear head on the distinct labelled prompts (``guard.layer_tuning``:
   about 3 minutes an epoch and 6-9 minutes of layer-12 states on 2 cores); otherwise the best
   candidate on the frozen taps (an MLP, so far).
4. Task heads (prompt harm, response harm, refusal), category heads for every category of
   every taxonomy with examples, and the zero-shot calibration on corpus taxonomies plus the
   custom-category training pool (``trainer.policy_following.TRAIN_CATEGORIES``: none of the
   evaluation's categories).
5. Save ``heads/`` beside the model with what they saw: files, counts, licences, choices
   (``trainer.model_heads.fit_model_heads``: a loaded model's heads fitted and saved).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guard.contract import CategorySpec, PolicySpec
from guard.features import FeatureExtractor
from guard.head_fitting import (
    LINEAR_KINDS,
    Split,
    ZeroShotCase,
    average_precision,
    best_threshold,
    fit_category_head,
    fit_probe_head,
    fit_zero_shot,
)
from guard.heads import CategoryHead, GuardHeads, ProbeHead, category_key
from guard.layer_tuning import prompt_residuals, soup_prompt_layers, tune_prompt_layers
from guard.peak_reading import PeakHead, TokenReader
from guard.tuned_layers import TunedWeights
from guard.zero_shot import LEGACY_TEMPLATE, category_text, sigmoid, unit_rows
from trainer.head_data import HeadRecord
from trainer.peak_fitting import fit_peak_head
from trainer.policy_following import GENERAL_CATEGORIES, TRAIN_CATEGORIES, training_records
from trainer.response_peak_fitting import fit_response_peak_head

VALIDATION_PERCENT = 20
MIN_CATEGORY_POSITIVES = 3
BACKGROUND_TEXTS = 256
POOL_RECORDS = 800
# Wordings of a category for the zero-shot score, the one deciding the custom pool best is kept. Measured
# in the note of issue 20 (pool accuracy / held-out policy-following pairs): "name: description" 87.8% / 76%,
# "name (description)" 88.2% / 79%, "Messages about name: description" 87.8% / 75%; "description" alone
# 82.9% / 64%, and a mean over several wordings 86.4-86.6% / 60-71%.
CATEGORY_TEMPLATES = (LEGACY_TEMPLATE, "{name} ({description})", "Messages about {name}: {description}")
# The prompt head may be a small MLP (about 6,900 fitting rows for 1,920 inputs). The response head
# (about 3,300 rows for 3,840 inputs) and the refusal head stay linear: an MLP won the response head's
# validation AP (83.6 against 81.9 on 245 positives) but lost held-out response F1 (75.8 against 77.3),
# and tied on refusal (note of issue 20).
PROMPT_HEAD_KINDS = (*LINEAR_KINDS, "mlp")
Log = Callable[[str], None]


# Where the tuned copy is cut and where it ends, as fractions of the decoder: layers 12-14 of 18, the span
# measured in bench/tuned_layers.py (docs/guard.md).
TUNED_FROM, TUNED_TO = 12 / 18, 15 / 18
# The tuned layers may ship as their change from the served ones cut to a rank by SVD (``fit_heads --tuned-rank``,
# scripts/cut_tuned_rank.py): rank 128 takes 10 MB instead of 33 MB, but cost held-out AP 0.2-0.7 points and OpenAI
# Moderation F1 77.9 -> 74.0 on the shipped guard (docs/guard.md), so they are stored whole unless asked.


@dataclass
class LayerTuning:
    """Tune a copy of the backbone's layers 12-14 as the prompt head (``guard.layer_tuning``)."""

    decoder: Any  # the served model's decoder (the copy starts from its layers)
    epochs: int = 6
    learning_rate: float = 5e-5
    seed: int = 0
    rank: int | None = None  # the tuned layers stored as their change cut to this rank (None: whole)
    copies: int = 1  # more than one: copies tuned in as many orders (seeds), averaged in weight space (a soup)

    def span(self) -> tuple[int, int]:
        layers = len(self.decoder.layers)
        cut = min(layers - 1, max(1, round(layers * TUNED_FROM)))
        return cut, min(layers, max(cut + 1, round(layers * TUNED_TO)))


def in_validation(record_id: str) -> bool:
    return int(hashlib.sha256(f"heads-validation:{record_id}".encode()).hexdigest(), 16) % 100 < VALIDATION_PERCENT


def judged(prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The vector a category is read from: the response where there is one, else the prompt."""
    return np.where(np.isnan(response), prompt, response)


def distinct_prompts(records: list[HeadRecord], validation: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The distinct labelled prompts, their labels (True: unsafe) and validation sides (each prompt's first record decides)."""
    first: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.prompt_label in ("safe", "unsafe"):
            first.setdefault(record.prompt, index)
    index = np.array(list(first.values()), dtype=int)
    return list(first), np.array([records[i].prompt_label == "unsafe" for i in index], dtype=bool), validation[index]


def validation_threshold(probabilities: np.ndarray, y_val: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The F1-maximising threshold of a head's validation probabilities, and what its info records of them."""
    from sklearn.metrics import roc_auc_score

    threshold, f1 = best_threshold(probabilities, y_val)
    ap = average_precision(probabilities, y_val)
    auroc = float(roc_auc_score(y_val, probabilities)) if 0 < y_val.sum() < len(y_val) else 0.0
    return threshold, {"n": int(len(y_val)), "positives": int(y_val.sum()), "average_precision": round(100 * ap, 1),
                       "auroc": round(100 * auroc, 1), "f1_at_threshold": round(f1, 1)}


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


class HeadFitter:
    """Fits a ``GuardHeads`` for one backbone (see the module docstring)."""

    def __init__(
        self, extractor: FeatureExtractor, fingerprint: str, *, log: Log = print, seed: int = 0, tuning: LayerTuning | None = None,
        kept_prompt: tuple[ProbeHead, TunedWeights] | None = None, kept_peak: PeakHead | None = None,
        kept_response_peak: PeakHead | None = None, fillers: Sequence[HeadRecord] = (),
    ) -> None:
        """``tuning``: tune layers 12-14 as the prompt head, and fit a peak head on them (``trainer.peak_fitting``)
        with harmless answers of ``fillers`` (default: the fit records'); ``kept_prompt``: a tuned prompt head and
        its layers to keep instead of fitting one (a heads job without tune epochs, whose start model has them),
        with ``kept_peak`` and ``kept_response_peak``, the peak heads that read them."""
        self.extractor = extractor
        self.layout = extractor.layout
        self.fingerprint = fingerprint
        self.log = log
        self.rng = random.Random(seed)
        self.tuning = tuning
        self.kept_prompt = kept_prompt
        self.kept_peak = kept_peak
        self.kept_response_peak = kept_response_peak
        self.fillers = list(fillers)

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

        tuned = peak = response_peak = None
        tuning_seconds = 0.0  # the tuning (its own layer states and epochs) is counted apart from the heads' fit
        if self.kept_prompt is not None:
            prompt_head, tuned = self.kept_prompt
            peak, response_peak = self.kept_peak, self.kept_response_peak
        elif self.tuning is not None:
            tuning_started = time.perf_counter()
            prompt_head, tuned = self._tuned_prompt_head(records, validation, self.tuning)
            peak, response_peak = self._peak_heads(records, tuned, self.tuning)
            tuning_seconds = time.perf_counter() - tuning_started
        else:
            prompt_rows = np.array([r.prompt_label in ("safe", "unsafe") for r in records])
            y = np.array([r.prompt_label == "unsafe" for r in records])
            prompt_head = fit_probe_head(
                _split(layout.taps(prompt[prompt_rows]), y[prompt_rows], validation[prompt_rows]), source="prompt", blocks="taps",
                kinds=PROMPT_HEAD_KINDS,
            )
        self.log(f"prompt head: {prompt_head.kind}, validation {prompt_head.info['validation']}")

        response_rows = np.array([r.response is not None and r.response_label in ("safe", "unsafe") for r in records])
        response_head = None
        if response_rows.sum() >= 20:
            y = np.array([r.response_label == "unsafe" for r in records])
            x = np.concatenate([layout.taps(response[response_rows]), layout.taps(prompt[response_rows])], axis=1)
            response_head = fit_probe_head(_split(x, y[response_rows], validation[response_rows]), source="pair", blocks="taps")
            self.log(f"response head: {response_head.kind}, validation {response_head.info['validation']}")

        refusal_rows = np.array([r.response is not None and r.refusal_label in ("refusal", "compliance") for r in records])
        refusal_head = None
        if refusal_rows.sum() >= 20:
            y = np.array([r.refusal_label == "refusal" for r in records])
            refusal_head = fit_probe_head(
                _split(layout.taps(response[refusal_rows]), y[refusal_rows], validation[refusal_rows]), source="response", blocks="taps"
            )
            self.log(f"refusal head: {refusal_head.kind}, validation {refusal_head.info['validation']}")

        policies = taxonomy_policies(taxonomies_path)
        vectors = judged(prompt, response)
        categories = self._category_heads(records, vectors, validation, policies)
        zero_shot, zero_shot_report, category_units = self._zero_shot(records, prompt, validation, policies, categories)
        fit_seconds = time.perf_counter() - fit_started - tuning_seconds
        if tuned is not None:
            layout = layout.with_tuned((tuned.cut, tuned.top))

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
        if tuning_seconds:
            info["tuning_seconds"] = round(tuning_seconds, 1)
        if peak is not None:
            info["peak"] = peak.info
        if response_peak is not None:
            info["response_peak"] = response_peak.info
        known = {category_key(c) for spec, _ in policies.values() for c in spec.categories}
        known |= {category_key(c) for spec in _general_policies() for c in spec.categories}
        return GuardHeads(fingerprint=self.fingerprint, layout=layout, prompt=prompt_head, response=response_head,
                          refusal=refusal_head, categories=categories, zero_shot=zero_shot, info=info,
                          known_categories=frozenset(known), category_units=category_units, tuned=tuned, peak=peak,
                          response_peak=response_peak)

    # ----------------------------------------------------------------- the tuned prompt head

    def _tuned_prompt_head(
        self, records: list[HeadRecord], validation: np.ndarray, tuning: LayerTuning
    ) -> tuple[ProbeHead, TunedWeights]:
        """Layers 12-14 tuned with a linear head on the distinct labelled prompts (each prompt's first record
        decides its side of the validation split), thresholded at the kept epoch's validation F1 maximum."""
        started = time.perf_counter()
        prompts, y, in_val = distinct_prompts(records, validation)
        cut, top = tuning.span()
        self.log(f"tuning layers {cut}-{top - 1} for prompt harm: {len(prompts)} distinct prompts, {tuning.epochs} epochs")
        residuals = prompt_residuals(self.extractor, prompts, cut, log=self.log)
        rows = np.arange(len(prompts))
        train, val = list(rows[~in_val]), list(rows[in_val])
        results = [
            tune_prompt_layers(tuning.decoder, residuals, train, y[~in_val], val, y[in_val], cut=cut, top=top, epochs=tuning.epochs,
                               learning_rate=tuning.learning_rate, seed=tuning.seed + order, log=self.log,
                               rank=tuning.rank if tuning.copies == 1 else None)
            for order in range(tuning.copies)
        ]
        result = results[0]
        if tuning.copies > 1:
            result = soup_prompt_layers(tuning.decoder, residuals, [r.weights for r in results], train, y[~in_val], val, y[in_val],
                                        rank=tuning.rank, log=self.log)
            result.weights.info.update({k: v for k, v in results[0].weights.info.items() if k not in ("seed", "kept_epoch")})
            result.weights.info["copies"] = [{"seed": r.weights.info["seed"], "kept_epoch": r.weights.info["kept_epoch"],
                                              "history": r.history} for r in results]
        threshold, validation_info = validation_threshold(sigmoid(result.validation_scores), y[in_val])
        kind = f"tuned layers {cut}-{top - 1} + linear" + (f" (a soup of {tuning.copies} copies)" if tuning.copies > 1 else "")
        seconds = round(time.perf_counter() - started, 1)
        result.weights.info["seconds"] = seconds
        info = {
            "chosen": kind,
            "validation": validation_info,
            "fit": {"n": int((~in_val).sum()), "positives": int(y[~in_val].sum())},
            "candidates": {kind: validation_info["average_precision"]},
            "tuning": {**result.weights.info, "history": result.history},
        }
        head = ProbeHead(source="prompt", blocks="tuned", mean=result.mean, scale=result.scale, coef=result.coef, bias=result.bias,
                         threshold=threshold, kind=kind, info=info)
        return head, result.weights

    def _peak_heads(self, records: list[HeadRecord], tuned: TunedWeights, tuning: LayerTuning
                    ) -> tuple[PeakHead | None, PeakHead | None]:
        """The prompt's and the response's peak heads on the freshly tuned layers; None (logged) for either where the
        data hold nothing to hide or hide in."""
        decoder = tuning.decoder
        reader = TokenReader(self.extractor.runner, self.extractor.tokenizer, tuned.module(decoder, next(decoder.parameters()).device))
        heads: list[PeakHead | None] = []
        for what, fit in (("peak head", fit_peak_head), ("response peak head", fit_response_peak_head)):
            try:
                heads.append(fit(reader, records, self.fillers or records, log=self.log))
            except ValueError as error:
                self.log(f"no {what}: {error}")
                heads.append(None)
        return heads[0], heads[1]

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
        # Counted where a head was fitted (a taxonomy can have labelled records but no category with enough).
        self.log(f"category heads: {len(heads)} across {len({h.taxonomy for h in heads.values()})} taxonomies")
        return heads

    def _zero_shot(
        self, records: list[HeadRecord], prompt: np.ndarray, validation: np.ndarray,
        policies: dict[str, tuple[PolicySpec, dict[str, str]]], categories: dict[str, CategoryHead],
    ) -> tuple[Any, dict, np.ndarray]:
        """Zero-shot calibration on the custom-category training pool: its records (a violating text under
        a covering policy, the same text under a policy without that category or describing it as allowed,
        a benign text) as ``trainer.policy_following`` builds them for training; none of the evaluation's
        categories. Also returns the trained categories' description vectors (borrowing, below)."""
        layout = self.layout
        pool = training_records(POOL_RECORDS, seed=0)
        category_specs = [c for spec, _ in policies.values() for c in spec.categories]
        category_specs += [c for spec in _general_policies() for c in spec.categories]
        category_specs += [c for record in pool for c in record.policy.categories]
        by_key = {category_key(c): c for spec, _ in policies.values() for c in spec.categories}
        trained_specs = [by_key[key] for key in categories]
        general = [CategorySpec(code="G", name=name, description=description) for name, description in GENERAL_CATEGORIES]
        custom = [CategorySpec(code="C", name=c.name, description=c.description) for c in TRAIN_CATEGORIES]
        category_specs += [*general, *custom]
        texts = list(dict.fromkeys(category_text(c, t) for t in CATEGORY_TEMPLATES for c in category_specs))
        pool_texts = list(dict.fromkeys(record.prompt for record in pool))
        encoded, _ = self._encode([(t, None) for t in texts + pool_texts], "category descriptions and the custom pool")
        category_final = dict(zip(texts, layout.similarity(encoded[: len(texts)]), strict=True))
        pool_final = dict(zip(pool_texts, layout.similarity(encoded[len(texts) :]), strict=True))
        unsafe = [i for i, r in enumerate(records) if r.prompt_label == "unsafe" and not validation[i]]
        safe = [i for i, r in enumerate(records) if r.prompt_label == "safe" and not validation[i]]
        self.rng.shuffle(safe)
        pool_categories = [c for record in pool for c in record.policy.categories]

        # Where the cosines are centred, chosen on the pool like the calibration: the corpus (mostly
        # harmful prompts, every taxonomy's categories) or the everyday traffic of the custom pool
        # (its texts, its categories and the general ones). Measured in the note of issue 20.
        text_centres = {"corpus": layout.similarity(prompt).mean(axis=0), "custom pool": np.mean(list(pool_final.values()), axis=0)}

        def vectors(specs: list[CategorySpec], template: str) -> np.ndarray:
            return np.stack([category_final[category_text(c, template)] for c in specs])

        trials = []
        for template, centre_name in itertools.product(CATEGORY_TEMPLATES, text_centres):
            text_center = text_centres[centre_name]
            centred_on = list({category_text(c, template): c for c in category_specs}.values()) if centre_name == "corpus" else pool_categories
            category_center = vectors(centred_on, template).mean(axis=0)

            def unit_categories(specs: list[CategorySpec], template: str = template, center: np.ndarray = category_center) -> np.ndarray:
                return unit_rows(vectors(specs, template) - center)

            trained_units = unit_categories(trained_specs)
            borrow_threshold, borrow_report = _borrow_threshold(
                trained_units, unit_categories(general), unit_categories(custom)
            )
            zero_shot, report = self._calibrate(pool, prompt, unsafe, safe, unit_categories, pool_final, text_center,
                                                category_center, trained_units, borrow_threshold)
            zero_shot.borrow_threshold = borrow_threshold
            zero_shot.template = template
            report["borrowing"] = borrow_report
            trials.append((zero_shot, report, trained_units, f"{template!r}, centred on the {centre_name}"))
            self.log(f"zero-shot, {trials[-1][3]}: {report}")
        # A wording and centre whose borrowing separates the general harm categories from the custom ones
        # first (a general category left to zero-shot fires alone on everyday texts), then the better pool
        # accuracy (ties: the earlier candidate).
        zero_shot, report, trained_units, choice = max(
            trials, key=lambda t: (t[1]["borrowing"]["general_min"] > t[1]["borrowing"]["custom_max"], t[1]["custom_case_accuracy"])
        )
        report = {**report, "chosen": choice, "custom_case_accuracy_by_choice": {t[3]: t[1]["custom_case_accuracy"] for t in trials}}
        self.log(f"zero-shot: {report}")
        return zero_shot, report, trained_units.astype(np.float32)

    def _calibrate(
        self, pool: list, prompt: np.ndarray, unsafe: list[int], safe: list[int],
        unit_categories: Callable[[list[CategorySpec]], np.ndarray], pool_final: dict[str, np.ndarray],
        text_center: np.ndarray, category_center: np.ndarray, trained_units: np.ndarray, borrow_threshold: float,
    ) -> tuple[Any, dict]:
        """``fit_zero_shot`` on the pool's cases as serving will see them: a category that borrows a
        trained head takes part in the relative cosine but never fires by itself."""
        layout = self.layout

        def unit_text(vectors: np.ndarray) -> np.ndarray:
            return unit_rows(vectors - text_center)

        cases = []
        for record in pool:
            categories = list(record.policy.categories)
            if not categories:
                continue
            units = unit_categories(categories)
            cosines = units @ unit_text(pool_final[record.prompt])
            gold = np.array([record.unsafe and c.code == record.code for c in categories])
            fires = (units @ trained_units.T).max(axis=1) < borrow_threshold
            cases.append(ZeroShotCase(cosines, gold, custom=True, fires=fires))
        general_units = unit_categories(list(_general_policies()[0].categories))
        cover_cosines = [general_units @ unit_text(layout.similarity(prompt[i])) for i in unsafe[:1500]]
        background = unit_text(layout.similarity(prompt[safe[:BACKGROUND_TEXTS]]))
        return fit_zero_shot(cases, text_center=text_center, category_center=category_center,
                             background=background, cover_cosines=cover_cosines)


def _borrow_threshold(trained: np.ndarray, general: np.ndarray, custom: np.ndarray) -> tuple[float, dict]:
    """How close (centred cosine of descriptions) an operator's category must be to a trained one to
    read its head: midway between the general harm categories operators write
    (``trainer.policy_following.GENERAL_CATEGORIES``: they should borrow) and the custom pool's
    categories (they should not)."""
    general_nearest = (general @ trained.T).max(axis=1)
    custom_nearest = (custom @ trained.T).max(axis=1)
    low, high = float(custom_nearest.max()), float(general_nearest.min())
    # With no gap, borrow only above every custom category (an operator's own category must stay its own).
    threshold = (low + high) / 2 if high > low else low + 0.01
    return threshold, {"threshold": round(threshold, 4), "general_min": round(high, 4), "custom_max": round(low, 4)}
