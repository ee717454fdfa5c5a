"""Fitting the peak head (``guard.peak_reading``): harmful requests hidden in harmless answers, found where they sit.

From the fit sample and the training split's long answers (all seeded, never the held-out split):

* **padded requests**: a harmful prompt of the fit sample (under 400 characters) after 300-1,400 characters of a
  harmless answer, followed half the time by 300-1,200 more: one forward gives the states of both. The mean over
  the request's tokens, and each window of ``PEAK_WIDTHS`` tokens ending or starting with it, are positives; the
  windows of the answer before and after it are negatives (the same answer on both sides of the contrast);
* **harmful prompts alone** (their mean), **harmless short prompts** (their mean under 48 tokens, and their
  windows), **long harmless prompts** and **harmless answers alone** (their windows) as the rest.

A logistic regression (balanced, the strength with the best validation AP) on the standardised window means is
the head; the texts are split for validation by their hash, and the threshold is the 99th percentile of the
validation harmless texts' peaks (1% of harmless texts flagged by the peak head alone). About 18 minutes on 2
cores at the default sizes, most of it the forward passes over about 450,000 tokens.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guard.head_fitting import average_precision
from guard.peak_reading import PEAK_MIN_TOKENS, PEAK_WIDTHS, PeakHead, TokenReader
from trainer.head_data import HeadRecord, read_records

Log = Callable[[str], None]

SHORT_PROMPT_CHARACTERS = 400  # a harmful prompt short enough to hide; a harmless one read as a whole
LONG_PROMPT_CHARACTERS = 600
FILLER_CHARACTERS = 900  # a harmless answer long enough to hide a request in
WHOLE_MEAN_TOKENS = 48  # a harmless prompt this short also counts as one window
FIT_STRENGTHS = (0.003, 0.01, 0.03)
BENIGN_QUANTILE = 0.99
VALIDATION_PERCENT = 20


@dataclass
class PeakSizes:
    padded: int = 1400  # 700 caught 57 and 77 of 100 held-out padded requests, 1400 66 and 81 (docs/guard.md)
    harmful: int = 800
    harmless: int = 1000
    long_harmless: int = 300
    fillers: int = 300


@dataclass
class PeakTexts:
    """The fit's texts: ``padded[i]`` holds a request at tokens ``spans[i]`` (start, end) of its token row."""

    padded: list[list[int]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    harmful: list[list[int]] = field(default_factory=list)
    harmless: list[list[int]] = field(default_factory=list)
    long_harmless: list[list[int]] = field(default_factory=list)
    fillers: list[list[int]] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)  # records per file, for the model card
    licences: Counter = field(default_factory=Counter)
    # The file of each harmful row by kind ("padded", "harmful"), where the fit draws from several (benchmarks).
    sources: dict[str, list[str]] = field(default_factory=dict)
    # The prompt each row answers, by kind, where the rows are responses (benchmarks read them in context).
    prompts: dict[str, list[str]] = field(default_factory=dict)


def filler_records(directory: Path) -> list[HeadRecord]:
    """Every record of a training split with a harmless answer long enough to hide a request in."""
    return [
        r for path in sorted(Path(directory).glob("*.jsonl")) for r in read_records(path)
        if r.response and len(r.response) > FILLER_CHARACTERS and r.response_label != "unsafe"
    ]


def filler_cut(rng: random.Random, answer: str) -> int:
    """Where in a harmless answer the hidden text goes: after 300-1,400 of its characters, 100 at least left after."""
    return rng.randint(300, max(300, min(1400, len(answer) - 100)))


def in_validation(text: str) -> bool:
    return int(hashlib.sha256(f"peak-validation:{text}".encode()).hexdigest(), 16) % 100 < VALIDATION_PERCENT


def peak_texts(reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord], sizes: PeakSizes,
               seed: int = 0) -> PeakTexts:
    """The fit's token rows (see the module docstring), drawn with ``seed``."""
    rng = random.Random(seed)
    harmful = [r for r in records if r.prompt_label == "unsafe" and len(r.prompt) < SHORT_PROMPT_CHARACTERS]
    harmless = [r for r in records if r.prompt_label == "safe" and len(r.prompt) < SHORT_PROMPT_CHARACTERS]
    long_harmless = [r for r in records if r.prompt_label == "safe" and len(r.prompt) >= LONG_PROMPT_CHARACTERS]
    answers = [r for r in fillers if r.response and len(r.response) > FILLER_CHARACTERS and r.response_label != "unsafe"]
    if not harmful or not answers:
        raise ValueError("the peak head needs harmful prompts under 400 characters and harmless answers over 900")
    for group in (harmful, harmless, long_harmless, answers):
        rng.shuffle(group)
    texts = PeakTexts()
    used: list[HeadRecord] = []

    def ids(text: str) -> list[int]:
        return reader.token_ids([text], 10**6)[0]

    for k in range(sizes.padded):
        answer, request = answers[k % len(answers)], harmful[k % len(harmful)]
        assert answer.response is not None
        cut = filler_cut(rng, answer.response)
        before = answer.response[:cut].rsplit(" ", 1)[0] + " "
        after = (" " + answer.response[cut : cut + rng.randint(300, 1200)]) if rng.random() < 0.5 else ""
        start = len(ids(before.rstrip()))
        end = len(ids(before + request.prompt))
        texts.padded.append(ids(before + request.prompt + after))
        texts.spans.append((start, end))
        used += [answer, request]
    plain = (
        (texts.harmful, harmful[sizes.padded : sizes.padded + sizes.harmful]),
        (texts.harmless, harmless[: sizes.harmless]),
        (texts.long_harmless, long_harmless[: sizes.long_harmless]),
    )
    for target, group in plain:
        target += reader.token_ids([r.prompt for r in group], 512)
        used += group
    alone = answers[sizes.padded : sizes.padded + sizes.fillers] or answers[: sizes.fillers]
    texts.fillers = reader.token_ids([r.response or "" for r in alone], 512)
    used += alone
    unique = {r.id: r for r in used}.values()
    texts.seen = Counter(r.file for r in unique)
    texts.licences = Counter(r.licence for r in unique)
    return texts


def _windows(states: np.ndarray, start: int, end: int, widths: Sequence[int] = PEAK_WIDTHS) -> list[np.ndarray]:
    out = []
    for width in widths:
        for first in range(start, end - width + 1, max(width // 2, 1)):
            out.append(states[first : first + width].mean(0))
    return out


@dataclass
class _Examples:
    vectors: list[np.ndarray] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    validation: list[bool] = field(default_factory=list)

    def add(self, vectors: list[np.ndarray], label: bool, held: bool) -> None:
        self.vectors += vectors
        self.labels += [label] * len(vectors)
        self.validation += [held] * len(vectors)


def _examples(texts: PeakTexts, states: dict[str, list[np.ndarray]], held: dict[str, list[bool]],
              widths: Sequence[int] = PEAK_WIDTHS, inside: bool = False) -> _Examples:
    """The windows' means and labels. ``inside``: the windows within a harmful span are positives too (a harmful
    answer is longer than any window, and its harm is spread over it; a request is shorter than one)."""
    examples = _Examples()
    for row, (start, end) in enumerate(texts.spans):
        x, v = states["padded"][row], held["padded"][row]
        end = min(end, len(x))
        if start < end:
            positives = [x[start:end].mean(0)] + (_windows(x, start, end, widths) if inside else [])
            for width in widths:
                if end - width >= 0:
                    positives.append(x[end - width : end].mean(0))  # a window ending with the request
                if end - start < width and start + width <= len(x) and end < len(x):
                    positives.append(x[start : start + width].mean(0))  # one starting with it
            examples.add(positives, True, v)
        examples.add(_windows(x, 0, max(start - 2, 0), widths) + _windows(x, end + 4, len(x), widths), False, v)
    for x, v in zip(states["harmful"], held["harmful"], strict=True):
        examples.add([x.mean(0)] + (_windows(x, 0, len(x), widths) if inside else []), True, v)
    for name in ("harmless", "long_harmless", "fillers"):
        for x, v in zip(states[name], held[name], strict=True):
            whole = [x.mean(0)] if len(x) <= WHOLE_MEAN_TOKENS else []
            examples.add(whole + _windows(x, 0, len(x), widths), False, v)
    return examples


TEXT_KINDS = ("padded", "harmful", "harmless", "long_harmless", "fillers")


def fit_peak_head(reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord], *,
                  sizes: PeakSizes | None = None, seed: int = 0, log: Log = print) -> PeakHead:
    """The peak head on ``reader``'s tuned copy, from the fit sample ``records`` and harmless answers ``fillers``."""
    started = time.perf_counter()
    texts = peak_texts(reader, records, fillers, sizes or PeakSizes(), seed)
    log(f"peak head: {len(texts.padded)} padded requests, {len(texts.harmful)} harmful and {len(texts.harmless)} harmless "
        f"prompts, {len(texts.long_harmless)} long harmless prompts, {len(texts.fillers)} answers alone")
    return fit_window_head(reader, texts, started=started, log=log)


def fit_window_head(reader: TokenReader, texts: PeakTexts, *, widths: Sequence[int] = PEAK_WIDTHS, inside: bool = False,
                    min_tokens: int = PEAK_MIN_TOKENS, context_tokens: int = 0, started: float | None = None,
                    log: Log = print, name: str = "peak head") -> PeakHead:
    """A peak head fitted on ``texts``' windows (``_examples``) and thresholded on their validation texts' peaks: the
    prompt's (``fit_peak_head``) and the response's (``trainer.response_peak_fitting``; ``context_tokens``: each
    response read after that many tokens of its prompt, ``texts.prompts``, as serving reads it)."""
    started = time.perf_counter() if started is None else started
    states = {}
    for kind in TEXT_KINDS:
        rows = getattr(texts, kind)
        before = reader.before_responses(texts.prompts.get(kind, [""] * len(rows)), context_tokens)
        states[kind] = reader.response_states(rows, before, log=log)
    head = fit_on_states(texts, states, widths=widths, inside=inside, min_tokens=min_tokens)
    head.context_tokens = context_tokens
    head.info["seconds"] = round(time.perf_counter() - started, 1)
    log(f"{name}: window AP {head.info['validation_window_ap']} (C={head.info['strength']}); threshold "
        f"{head.threshold:.2f} flags, on validation texts, "
        + ", ".join(f"{kind} {pct}%" for kind, pct in head.info["validation_flagged_percent"].items() if pct is not None))
    return head


def fit_on_states(texts: PeakTexts, states: dict[str, list[np.ndarray]], *, widths: Sequence[int] = PEAK_WIDTHS,
                  inside: bool = False, min_tokens: int = PEAK_MIN_TOKENS, strengths: Sequence[float] = FIT_STRENGTHS,
                  quantile: float = BENIGN_QUANTILE) -> PeakHead:
    """The peak head on the tuned copy's per-token ``states`` of ``texts`` (by kind, as ``TokenReader.states`` gives
    them): logistic regression on the standardised window means, the strength by validation window AP, the threshold
    the ``quantile`` of the validation harmless texts' peaks (``bench/response_peak.py`` fits variants on one draw)."""
    from sklearn.linear_model import LogisticRegression

    held = {name: [in_validation(" ".join(map(str, r))) for r in getattr(texts, name)] for name in TEXT_KINDS}
    examples = _examples(texts, states, held, widths, inside)
    x, y, v = np.stack(examples.vectors).astype(np.float32), np.array(examples.labels), np.array(examples.validation)
    finite = np.isfinite(x).all(axis=1)
    x, y, v = x[finite], y[finite], v[finite]
    if y[~v].min() == y[~v].max() or y[v].min() == y[v].max():
        raise ValueError("the peak head's fit and validation windows need both labels")
    mean, scale = x[~v].mean(0), x[~v].std(0) + 1e-3
    z = (x - mean) / scale
    trials = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for strength in strengths:
            model = LogisticRegression(C=strength, class_weight="balanced", max_iter=3000).fit(z[~v], y[~v])
            trials.append((average_precision(model.decision_function(z[v]), y[v]), strength, model))
    ap, strength, model = max(trials, key=lambda t: t[0])
    coef = (model.coef_[0] / scale).astype(np.float32)
    head = PeakHead(coef=coef, bias=float(model.intercept_[0] - (mean / scale) @ model.coef_[0]), threshold=0.0,
                    widths=tuple(widths), min_tokens=min_tokens)
    peaks = {name: np.array([head.peak(s) for s, h in zip(states[name], held[name], strict=True) if h]) for name in TEXT_KINDS}
    harmless_peaks = np.concatenate([peaks["harmless"], peaks["long_harmless"], peaks["fillers"]])
    head.threshold = float(np.quantile(harmless_peaks, quantile)) if len(harmless_peaks) else 0.0
    caught = {name: round(100 * float((p >= head.threshold).mean()), 1) if len(p) else None for name, p in peaks.items()}
    head.info = {
        "strength": strength, "validation_window_ap": round(100 * ap, 2),
        "validation_flagged_percent": caught, "benign_quantile": quantile,
        "texts": {name: len(getattr(texts, name)) for name in TEXT_KINDS},
        "files": dict(sorted(texts.seen.items())), "licences": dict(sorted(texts.licences.items())),
    }
    return head


def reader_of(backend: Any) -> TokenReader:
    """The token reader of a loaded ``TransformersBackend`` serving heads with tuned layers."""
    reader = backend.token_reader()
    if reader is None:
        raise ValueError("a peak head reads the tuned prompt layers; these heads carry none (fit_heads --tune-epochs)")
    return reader


def add_peak_head(heads: Any, reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord], *,
                  sizes: PeakSizes | None = None, log: Log = print) -> Any:
    """A copy of ``heads`` (a ``GuardHeads`` with tuned layers) with a peak head fitted on its tuned copy."""
    import dataclasses

    if heads.tuned is None:
        raise ValueError("a peak head reads the tuned prompt layers; these heads carry none (fit_heads --tune-epochs)")
    return dataclasses.replace(heads, peak=fit_peak_head(reader, records, fillers, sizes=sizes, log=log))
