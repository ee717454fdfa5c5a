"""Latent heads: the guard's decisions read from its backbone's hidden states.

A guard model is a backbone (the embedded Gemma 3 270M, possibly fine-tuned) plus these
heads, fitted on a CPU in minutes (``guard.head_fitting``, ``manage.py fit_heads``):

* **task heads**: P(prompt unsafe), P(response unsafe), P(refusal): probes (logistic regression,
  shrinkage LDA or, for the prompt, a small MLP, chosen on a validation split) on standardised,
  mean-pooled hidden states (``guard.features``), each with the F1-maximising validation threshold;
* **category heads**: one per category of every corpus taxonomy with labelled examples,
  P(category | the text is unsafe), found for a policy's category by its name and
  description (``category_key``), so a preset or a copy of one gets its trained head;
* **borrowed heads**: a category worded differently from a trained one but meaning the same
  ("Crime and fraud" for the corpus's "Non-violent crimes": its description's centred vector
  within ``ZeroShot.borrow_threshold`` of a trained category's) reads that trained head;
* **zero-shot**: any other category (an operator's own) is scored by the cosine between
  the text's and the category's similarity-layer states (its name and description worded by
  ``ZeroShot.template``, e.g. "name (description)"), both centred,
  calibrated into a probability on the custom-category pool; a category's examples (the
  editor's "violates"/"allowed" lines, reviewers' decisions) refit a small per-category head
  in milliseconds (both in ``guard.zero_shot``); a category with near misses but no violating
  examples is not named for a text within ``NEAR_MISS_COSINE`` of one of them (its rewordings).

The decision under a policy (``GuardHeads.judge``): a text is unsafe when the harm head
fires and the policy covers it (a category of a corpus taxonomy or preset; a borrowed category
whose P(category | unsafe) reaches 0.5; or one of its own categories similar enough), or when
one of the policy's own (zero-shot or taught) categories fires by itself; trained and borrowed
categories never fire without the harm head. A text only a category missing from the policy
covers is safe under it. The codes are the fired categories (with the harm heads' own beside them where
those judged the text unsafe too), else the policy's best-matching one.

Heads are stored beside the model (``heads/heads.json`` + ``heads/heads.npz``, plain
arrays: nothing is unpickled) with the backbone fingerprint they were fitted on; loading
them for other weights raises ``HeadsError`` with a message saying so. A prompt head that
reads a tuned copy of layers 12-14 (``guard.layer_tuning``) carries its weights in
``heads/tuned_layers.safetensors`` (``GuardHeads.tuned``); the features then add that
copy's pooled output as one more block (``FeatureLayout.tuned``). Heads with tuned layers may carry a
peak head on that copy's per-token output (``GuardHeads.peak``, ``guard.peak_reading``): it reads a long
prompt whole and finds a harmful request hidden inside ordinary text, where the mean dilutes it; a response peak
head (``GuardHeads.response_peak``) reads a response longer than the features read whole and finds harmful content
inside a long ordinary answer, where the features never read its middle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guard.backends.base import GuardError
from guard.contract import CategorySpec, PolicySpec
from guard.features import FeatureLayout
from guard.peak_reading import PeakHead
from guard.tuned_layers import TunedWeights
from guard.zero_shot import LEGACY_TEMPLATE, NEAR_MISS_COSINE, ExampleHead, ZeroShot, sigmoid

HEADS_DIR = "heads"
META_FILE = "heads.json"
ARRAYS_FILE = "heads.npz"
HEADS_FORMAT = 1
# Inputs a head reads: the prompt's vector, the response's, or both side by side.
SOURCES = ("prompt", "response", "pair")
BLOCKS = ("taps", "similarity", "all", "tuned")


class HeadsError(GuardError):
    """Heads that cannot serve this model (another backbone, a broken file); the message says why."""


def category_key(category: CategorySpec) -> str:
    """How a policy's category finds its trained head: its name and description, normalised."""
    text = f"{' '.join(category.name.split()).casefold()}\n{' '.join(category.description.split()).casefold()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- heads


@dataclass
class ProbeHead:
    """A probe on a chosen view of the features: ``sigmoid(f((x - mean) / scale) @ coef + bias)``, where
    ``f`` is the identity (a linear head: logistic regression or shrinkage LDA) or, when the head has a
    hidden layer, ``relu(z @ hidden + hidden_bias)`` (a one-hidden-layer MLP; an ensemble of several
    seeds is stored as one wider layer whose output weights are averaged)."""

    source: str
    blocks: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    bias: float
    threshold: float = 0.5
    kind: str = "logistic"
    info: dict[str, Any] = field(default_factory=dict)
    hidden: np.ndarray | None = None  # (inputs, units)
    hidden_bias: np.ndarray | None = None  # (units,)

    def view(self, layout: FeatureLayout, prompt: np.ndarray, response: np.ndarray | None) -> np.ndarray:
        def pick(vectors: np.ndarray) -> np.ndarray:
            if self.blocks == "taps":
                return layout.taps(vectors)
            if self.blocks == "similarity":
                return layout.similarity(vectors)
            if self.blocks == "tuned":
                return layout.tuned_block(vectors)
            return vectors

        if self.source == "prompt":
            return pick(prompt)
        assert response is not None, "a response head needs response vectors"
        if self.source == "response":
            return pick(response)
        return np.concatenate([pick(response), pick(prompt)], axis=-1)

    def logit(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        if self.hidden is not None:
            z = np.maximum(z @ self.hidden + self.hidden_bias, 0.0)
        return z @ self.coef + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(x))

    def meta(self) -> dict[str, Any]:
        return {"source": self.source, "blocks": self.blocks, "bias": self.bias, "threshold": self.threshold,
                "kind": self.kind, "info": self.info}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.mean": self.mean, f"{prefix}.scale": self.scale, f"{prefix}.coef": self.coef}
        if self.hidden is not None and self.hidden_bias is not None:
            out.update({f"{prefix}.hidden": self.hidden, f"{prefix}.hidden_bias": self.hidden_bias})
        return out

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: Any, prefix: str) -> ProbeHead:
        def array(name: str) -> np.ndarray:
            return np.asarray(arrays[f"{prefix}.{name}"], dtype=np.float32)

        hidden = f"{prefix}.hidden" in arrays
        return cls(
            source=meta["source"], blocks=meta["blocks"], bias=float(meta["bias"]), threshold=float(meta["threshold"]),
            kind=meta.get("kind", "logistic"), info=meta.get("info", {}),
            mean=array("mean"), scale=array("scale"), coef=array("coef"),
            hidden=array("hidden") if hidden else None, hidden_bias=array("hidden_bias") if hidden else None,
        )


@dataclass
class CategoryHead:
    key: str
    taxonomy: str
    code: str
    name: str
    head: ProbeHead
    positives: int


# --------------------------------------------------------------------------- the decision


@dataclass
class CategoryScore:
    code: str
    probability: float
    source: str  # "head" | "zero-shot" | "examples"


@dataclass
class HeadDecision:
    prompt_unsafe: float
    prompt_label: str
    response_unsafe: float | None = None
    response_label: str | None = None
    refusal: float | None = None
    refusal_label: str | None = None
    categories: list[str] = field(default_factory=list)
    scores: list[CategoryScore] = field(default_factory=list)
    covered: bool = True
    # The text was longer than the features read (its first and last tokens): the verdict says ``truncated``.
    clipped: bool = False
    # The stretch of a long prompt where the peak head found a harmful request (``guard.peak_reading``).
    evidence: str = ""
    # The stretch of a long response where the response peak head found harmful content.
    response_evidence: str = ""

    @property
    def unsafe(self) -> bool:
        return "unsafe" in (self.prompt_label, self.response_label)


@dataclass
class PolicyView:
    """What ``judge`` needs of a policy: per category its trained head, or its zero-shot unit
    vector and optional example head (the backend builds and caches it per policy)."""

    spec: PolicySpec
    heads: list[CategoryHead | None]
    units: np.ndarray  # (k, hidden) centred unit category vectors (zero rows where a head serves)
    examples: list[ExampleHead | None]
    # Categories of a corpus taxonomy or a preset (by ``category_key``): a policy made of them relies
    # on the harm heads, as those taxonomies were labelled (no coverage check).
    known: list[bool] = field(default_factory=list)
    # Categories reading a trained head they were matched to by description (``GuardHeads.nearest_head``).
    borrowed: list[bool] = field(default_factory=list)
    # Per category without violating examples: its near misses ("allowed" examples, codes reviewers removed)
    # as (m, hidden) centred unit text vectors, else None. A text this close to one is not that category.
    near_misses: list[np.ndarray | None] = field(default_factory=list)


@dataclass
class GuardHeads:
    fingerprint: str
    layout: FeatureLayout
    prompt: ProbeHead
    response: ProbeHead | None
    refusal: ProbeHead | None
    categories: dict[str, CategoryHead]
    zero_shot: ZeroShot
    info: dict[str, Any] = field(default_factory=dict)
    known_categories: frozenset[str] = frozenset()
    # (len(categories), hidden) centred unit description vectors of the trained categories, in
    # ``categories``' order: what a policy's other categories are matched against to borrow a head.
    category_units: np.ndarray | None = None
    # A tuned copy of a few backbone layers whose pooled output the prompt head reads (``layout.tuned``).
    tuned: TunedWeights | None = None
    # Reads long prompts whole on the tuned copy's per-token output (needs ``tuned``).
    peak: PeakHead | None = None
    # The same for responses longer than the features read whole (``guard.peak_reading``; needs ``tuned``).
    response_peak: PeakHead | None = None

    def nearest_head(self, unit: np.ndarray) -> tuple[CategoryHead | None, float]:
        """The trained category whose description is closest to ``unit`` (a category-space unit
        vector), if it is close enough to borrow its head, and the cosine."""
        if self.category_units is None or not len(self.category_units):
            return None, 0.0
        cosines = self.category_units @ unit
        best = int(np.argmax(cosines))
        head = list(self.categories.values())[best]
        return (head if cosines[best] >= self.zero_shot.borrow_threshold else None), float(cosines[best])

    # ----------------------------------------------------------------- judging

    def category_scores(self, view: PolicyView, prompt: np.ndarray, response: np.ndarray | None) -> np.ndarray:
        """(n, k) probabilities: P(category | unsafe) for trained heads, P(text falls under it) otherwise."""
        n, k = prompt.shape[0], len(view.spec.categories)
        out = np.zeros((n, k), dtype=np.float64)
        if k == 0:
            return out
        judged = prompt if response is None else np.where(np.isnan(response), prompt, response)
        vetoed = any(m is not None for m in view.near_misses)
        free = [j for j, head in enumerate(view.heads) if head is None]
        # The texts' centred unit similarity-layer states: what zero-shot, example heads and near misses read.
        units = self.zero_shot.text_units(self.layout.similarity(judged)) if free or vetoed else None
        if free:
            # The relative cosine compares a category with all of the policy's described categories,
            # borrowed ones included, as the calibration on the custom pool did.
            described = [j for j in range(k) if view.heads[j] is None or (view.borrowed and view.borrowed[j])]
            zs_all = self.zero_shot.probabilities(units @ view.units[described].T)
            zs = zs_all[:, [described.index(j) for j in free]]
            for column, j in enumerate(free):
                taught = view.examples[j]
                # A taught category is read by its examples' head alone: measured on the custom pool,
                # a handful of examples says far more than a one-line description.
                out[:, j] = sigmoid(taught.logit(units)) if taught is not None else zs[:, column]
        for j, head in enumerate(view.heads):
            if head is not None:
                out[:, j] = head.head.probability(head.head.view(self.layout, prompt, response))
        if vetoed:
            for j, misses in enumerate(view.near_misses):
                if misses is not None:
                    out[(units @ misses.T).max(axis=1) >= NEAR_MISS_COSINE, j] = 0.0
        return out

    def judge(
        self, view: PolicyView, prompt: np.ndarray, response: np.ndarray | None, has_response: list[bool],
        peaks: np.ndarray | None = None, response_peaks: np.ndarray | None = None,
    ) -> list[HeadDecision]:
        """The verdicts of n texts under one policy (see the module docstring); ``peaks``: the peak head's logit
        of each prompt, ``response_peaks`` the response peak head's of each response (NaN where one did not read)."""
        n = prompt.shape[0]
        p_prompt = self.prompt.probability(self.prompt.view(self.layout, prompt, None))
        if peaks is not None and self.peak is not None:
            p_prompt = np.fmax(p_prompt, self.peak_probability(peaks))
        p_response = p_refusal = None
        if response is not None and any(has_response):
            safe_response = np.where(np.isnan(response), 0.0, response)
            if self.response is not None:
                p_response = self.response.probability(self.response.view(self.layout, prompt, safe_response))
                if response_peaks is not None and self.response_peak is not None:
                    p_response = np.fmax(p_response, on_scale(response_peaks, self.response_peak, self.response.threshold))
            if self.refusal is not None:
                p_refusal = self.refusal.probability(self.refusal.view(self.layout, prompt, safe_response))
        scores = self.category_scores(view, prompt, response if response is not None and any(has_response) else None)
        trained = [head is not None for head in view.heads]
        # A category of a corpus taxonomy or preset is judged by the harm heads, as its taxonomy was labelled:
        # left to fire by its zero-shot score, the General preset's "Violence and weapons" fired on arithmetic
        # answers (gsm8k). Examples an operator teaches it make it fire by itself like their own categories.
        own = [j for j, t in enumerate(trained) if not t and not (view.known and view.known[j] and view.examples[j] is None)]
        borrowed = [j for j, b in enumerate(view.borrowed) if b]
        decisions = []
        for i in range(n):
            row = scores[i]
            fired = [j for j in own if row[j] >= (self.zero_shot.taught_threshold if view.examples[j] else self.zero_shot.fire_threshold)]
            # Covered: a category of a corpus taxonomy or preset (they were labelled with the harm heads'
            # meaning), a borrowed category that this harm falls under, or an own category close enough.
            covered = (
                any(view.known)
                or any(row[j] >= 0.5 for j in borrowed)
                or (bool(own) and bool(max(row[j] for j in own) >= self.zero_shot.cover_threshold))
            )
            prompt_harm = bool(p_prompt[i] >= self.prompt.threshold)
            response_harm = None
            if has_response[i] and p_response is not None and self.response is not None:
                response_harm = bool(p_response[i] >= self.response.threshold)
            prompt_unsafe = (prompt_harm and covered) or (bool(fired) and not has_response[i])
            response_unsafe = None if response_harm is None else (response_harm and covered) or bool(fired)
            decision = HeadDecision(
                prompt_unsafe=float(p_prompt[i]),
                prompt_label="unsafe" if prompt_unsafe else "safe",
                covered=covered,
                scores=[
                    CategoryScore(c.code, round(float(row[j]), 4), "head" if trained[j] else ("examples" if view.examples[j] else "zero-shot"))
                    for j, c in enumerate(view.spec.categories)
                ],
            )
            if has_response[i] and p_response is not None:
                decision.response_unsafe = float(p_response[i])
                decision.response_label = "unsafe" if response_unsafe else "safe"
                if p_refusal is not None and self.refusal is not None:
                    decision.refusal = float(p_refusal[i])
                    decision.refusal_label = "refusal" if p_refusal[i] >= self.refusal.threshold else "compliance"
            if decision.unsafe and view.spec.categories:
                harmful = covered and (prompt_harm or bool(response_harm))
                decision.categories = self._codes(view, row, fired, harmful)
            decisions.append(decision)
        return decisions

    def peak_probability(self, peaks: np.ndarray) -> np.ndarray:
        """Peak logits on the prompt head's probability scale (``on_scale``)."""
        assert self.peak is not None
        return on_scale(peaks, self.peak, self.prompt.threshold)

    @staticmethod
    def _codes(view: PolicyView, row: np.ndarray, fired: list[int], harmful: bool = False) -> list[str]:
        """The fired own categories, strongest first; where the harm heads judged the text unsafe too, their
        categories beside them (a trained or borrowed category reaching 0.5, else the likeliest one): a
        zero-shot "Fortune telling" that also fires on a sexual story must not take "Sexual content" away."""
        categories = view.spec.categories
        if fired:
            chosen = sorted(fired, key=lambda j: -row[j])
            with_head = [j for j in range(len(categories)) if view.heads[j] is not None]
            if harmful and with_head:
                named = [j for j in with_head if row[j] >= 0.5] or [max(with_head, key=lambda j: row[j])]
                chosen += [j for j in named if j not in chosen]
        else:
            best = int(np.argmax(row))
            chosen = [best] + [j for j in range(len(categories)) if j != best and view.heads[j] is not None and row[j] >= 0.5]
        return [categories[j].code for j in chosen]

    # ----------------------------------------------------------------- storage

    def save(self, directory: Path) -> Path:
        target = Path(directory) / HEADS_DIR
        target.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        tasks: dict[str, Any] = {}
        for name in ("prompt", "response", "refusal"):
            head = getattr(self, name)
            if head is not None:
                tasks[name] = head.meta()
                arrays.update(head.arrays(f"task.{name}"))
        categories = {}
        for key, category in self.categories.items():
            categories[key] = {"taxonomy": category.taxonomy, "code": category.code, "name": category.name,
                               "positives": category.positives, **category.head.meta()}
            arrays.update(category.head.arrays(f"category.{key}"))
        zs = self.zero_shot
        arrays.update({"zs.text_center": zs.text_center, "zs.category_center": zs.category_center, "zs.background": zs.background})
        if self.category_units is not None:
            arrays["category_units"] = self.category_units
        meta = {
            "format": HEADS_FORMAT,
            "fingerprint": self.fingerprint,
            "layout": self.layout.to_json(),
            "tasks": tasks,
            "categories": categories,
            "zero_shot": {"weight_cos": zs.weight_cos, "weight_rel": zs.weight_rel, "bias": zs.bias,
                          "fire_threshold": zs.fire_threshold, "cover_threshold": zs.cover_threshold,
                          "taught_threshold": zs.taught_threshold, "borrow_threshold": zs.borrow_threshold,
                          "template": zs.template},
            "category_order": list(self.categories),
            "info": self.info,
            "known_categories": sorted(self.known_categories),
        }
        if self.tuned is not None:
            meta["tuned"] = self.tuned.save(target)
        if self.peak is not None:
            meta["peak"] = self.peak.meta()
            arrays.update(self.peak.arrays("peak"))
        if self.response_peak is not None:
            meta["response_peak"] = self.response_peak.meta()
            arrays.update(self.response_peak.arrays("response_peak"))
        np.savez_compressed(target / ARRAYS_FILE, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
        (target / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        return target


def on_scale(peaks: np.ndarray, peak: PeakHead, threshold: float) -> np.ndarray:
    """A peak head's logits on its task head's probability scale: the peak threshold lands on the task head's
    ``threshold``, so one P(unsafe) is shown and the text is harmful when either head fires (NaN stays NaN)."""
    threshold = float(np.clip(threshold, 1e-6, 1 - 1e-6))
    return sigmoid(peaks - peak.threshold + np.log(threshold / (1 - threshold)))


def heads_directory(model_dir: Path | None) -> Path | None:
    """The heads stored with a model or adapter directory, if any."""
    if model_dir is None:
        return None
    candidate = Path(model_dir) / HEADS_DIR
    return candidate if (candidate / META_FILE).is_file() else None


def load(directory: Path, fingerprint: str | None = None) -> GuardHeads:
    """Heads from ``directory`` (a ``heads/`` folder, or the model directory holding one);
    ``fingerprint``: the backbone they must have been fitted on (``HeadsError`` otherwise)."""
    directory = Path(directory)
    if (directory / HEADS_DIR / META_FILE).is_file():
        directory = directory / HEADS_DIR
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        arrays = np.load(directory / ARRAYS_FILE, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise HeadsError(f"heads in {directory} are unreadable ({error}); refit them with `manage.py fit_heads`") from error
    if meta.get("format") != HEADS_FORMAT:
        raise HeadsError(f"heads in {directory} have format {meta.get('format')!r}, this Guardsite reads {HEADS_FORMAT}")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise HeadsError(
            f"heads in {directory} were fitted for backbone {meta.get('fingerprint')!r}, not for this model's "
            f"{fingerprint!r} (other weights, or another feature recipe); refit them with `manage.py fit_heads`"
        )
    layout = FeatureLayout.from_json(meta["layout"])
    tasks = meta["tasks"]

    def task(name: str) -> ProbeHead | None:
        return ProbeHead.restore(tasks[name], arrays, f"task.{name}") if name in tasks else None

    prompt = task("prompt")
    if prompt is None:
        raise HeadsError(f"heads in {directory} have no prompt head")
    categories = {
        key: CategoryHead(key=key, taxonomy=c["taxonomy"], code=c["code"], name=c["name"], positives=int(c["positives"]),
                          head=ProbeHead.restore(c, arrays, f"category.{key}"))
        for key, c in meta["categories"].items()
    }
    zs = meta["zero_shot"]
    zero_shot = ZeroShot(
        text_center=arrays["zs.text_center"], category_center=arrays["zs.category_center"], background=arrays["zs.background"],
        weight_cos=float(zs["weight_cos"]), weight_rel=float(zs["weight_rel"]), bias=float(zs["bias"]),
        fire_threshold=float(zs["fire_threshold"]), cover_threshold=float(zs["cover_threshold"]),
        taught_threshold=float(zs.get("taught_threshold", 0.5)),
        borrow_threshold=float(zs.get("borrow_threshold", 1.01)),
        template=str(zs.get("template", LEGACY_TEMPLATE)),
    )
    order = meta.get("category_order")
    if order is not None:
        categories = {key: categories[key] for key in order}
    category_units = np.asarray(arrays["category_units"], dtype=np.float32) if "category_units" in arrays else None
    tuned = None
    if meta.get("tuned"):
        try:
            tuned = TunedWeights.load(directory, meta["tuned"])
        except (OSError, ValueError) as error:
            raise HeadsError(f"the tuned layers of the heads in {directory} are unreadable ({error}); refit them with "
                             "`manage.py fit_heads --tune-epochs 6`") from error
    if ((tuned.cut, tuned.top) if tuned else None) != layout.tuned:
        raise HeadsError(f"heads in {directory} record tuned layers {layout.tuned} but carry {tuned and (tuned.cut, tuned.top)}")
    peak = PeakHead.restore(meta["peak"], arrays, "peak") if meta.get("peak") else None
    response_peak = PeakHead.restore(meta["response_peak"], arrays, "response_peak") if meta.get("response_peak") else None
    if (peak is not None or response_peak is not None) and tuned is None:
        raise HeadsError(f"heads in {directory} carry a peak head but no tuned layers for it to read")
    return GuardHeads(fingerprint=meta["fingerprint"], layout=layout, prompt=prompt, response=task("response"),
                      refusal=task("refusal"), categories=categories, zero_shot=zero_shot, info=meta.get("info", {}),
                      known_categories=frozenset(meta.get("known_categories", ())), category_units=category_units,
                      tuned=tuned, peak=peak, response_peak=response_peak)
