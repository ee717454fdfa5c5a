"""Fitting the response peak head: harmful content buried in a long ordinary answer, found where it sits.

The features read a response's first and last 96 tokens (``guard.features.RESPONSE_TOKENS``); harmful content in the
middle of a longer answer is never read by the response head. In ``bench/long_responses.py`` the shipped verdict
flagged 24 of 60 held-out harmful answers placed between two stretches of a harmless answer: no more than the
harmless filler alone (24 of 60, for the harmful prompt's sake). The prompt's peak head, fitted on requests, caught
18 of them, and cost four harmless jailbreak answers flagged on the held-out responses (docs/guard.md, "Long texts").

This head is fitted on that contrast itself, with the prompt's peak head's machinery (``trainer.peak_fitting``): the
tuned prompt copy's per-token output of the response read after its prompt (its first ``RESPONSE_CONTEXT_TOKENS``
tokens, as the conversation runs: ``TokenReader.read_responses``), windows of ``RESPONSE_PEAK_WIDTHS`` tokens over the
response's own tokens, from the fit sample and the training split's long answers (seeded, never the held-out split):

* **padded answers**: a harmful response of the fit sample (under 1,200 characters; not DICES, whose labels judge a
  whole conversation, not the answer's text) after 300-1,400 characters of a harmless answer and a blank line,
  followed half the time by 300-1,200 more, as the answer to the harmful response's own prompt. The mean over the
  harmful response, every window inside it (an answer's harm is spread over more tokens than a window holds) and the
  windows ending or starting with it are positives; the windows of the answer around it negatives;
* **harmful responses alone** (their mean and windows), **harmless responses** (refusals that name the harm,
  answers to harmful prompts that stay harmless, everyday answers: their windows) and **harmless answers alone**,
  each after its own prompt.

The threshold is the 99th percentile of the validation harmless texts' peaks. Serving reads only responses longer
than the features read whole (``min_tokens`` = ``RESPONSE_TOKENS``): a shorter one is read whole by the response
head already, and costs nothing more. The recipe (the prompt in context, three widths, inside windows) was chosen by
the share of validation padded answers flagged at that threshold, among the variants of ``bench/response_peak.py``
(docs/guard.md, "Long texts").
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from guard.features import RESPONSE_TOKENS
from guard.peak_reading import PeakHead, TokenReader
from trainer.head_data import HeadRecord
from trainer.peak_fitting import (
    FILLER_CHARACTERS,
    Log,
    PeakSizes,
    PeakTexts,
    filler_cut,
    fit_window_head,
)

RESPONSE_PEAK_WIDTHS = (32, 64, 128)  # a harmful answer runs to 50-300 tokens, longer than a request's 10-40
RESPONSE_CONTEXT_TOKENS = 128  # tokens of the prompt read before the response (``PeakHead.context_tokens``)
HARMFUL_RESPONSE_CHARACTERS = 1200
ALONE_TOKENS = 512
# Labels that judge the whole conversation rather than the answer's text (docs/guard.md: DICES pulled the response
# head's threshold away from the other human labels).
CONVERSATION_LABELLED = frozenset({"dices"})
PARAGRAPH = "\n\n"


def response_peak_sizes() -> PeakSizes:
    """How many texts of each kind (``PeakTexts``' names; ``harmless``: harmless responses alone)."""
    return PeakSizes(padded=700, harmful=250, harmless=800, long_harmless=0, fillers=300)


def response_peak_texts(reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord],
                        sizes: PeakSizes, seed: int = 0) -> PeakTexts:
    """The fit's token rows (see the module docstring), drawn with ``seed``: ``padded[i]`` holds a harmful response
    at tokens ``spans[i]``."""
    rng = random.Random(seed)
    harmful = [r for r in records if r.response and r.response_label == "unsafe" and r.file not in CONVERSATION_LABELLED
               and len(r.response) < HARMFUL_RESPONSE_CHARACTERS]
    harmless = [r for r in records if r.response and r.response_label == "safe"]
    answers = [r for r in fillers if r.response and len(r.response) > FILLER_CHARACTERS and r.response_label != "unsafe"]
    if not harmful or not answers:
        raise ValueError("the response peak head needs harmful responses under 1,200 characters and harmless answers "
                         "over 900")
    for group in (harmful, harmless, answers):
        rng.shuffle(group)
    texts = PeakTexts()
    used: list[HeadRecord] = []
    for k in range(sizes.padded):
        answer, content = answers[k % len(answers)], harmful[k % len(harmful)]
        assert answer.response is not None and content.response is not None
        cut = filler_cut(rng, answer.response)
        before = answer.response[:cut].rsplit(" ", 1)[0].rstrip() + PARAGRAPH
        after = ""
        if rng.random() < 0.5:
            after = PARAGRAPH + answer.response[cut : cut + rng.randint(300, 1200)].lstrip()
        start = len(reader.token_ids([before], 10**6)[0])
        end = len(reader.token_ids([before + content.response.rstrip()], 10**6)[0])
        texts.padded.append(reader.token_ids([before + content.response.rstrip() + after], 10**6)[0])
        texts.spans.append((start, end))
        used += [answer, content]
    texts.harmful = reader.token_ids([r.response or "" for r in harmful[sizes.padded : sizes.padded + sizes.harmful]],
                                     ALONE_TOKENS)
    used += harmful[sizes.padded : sizes.padded + sizes.harmful]
    texts.harmless = reader.token_ids([r.response or "" for r in harmless[: sizes.harmless]], ALONE_TOKENS)
    used += harmless[: sizes.harmless]
    alone = answers[sizes.padded : sizes.padded + sizes.fillers] or answers[: sizes.fillers]
    texts.fillers = reader.token_ids([r.response or "" for r in alone], ALONE_TOKENS)
    used += alone
    texts.sources = {"padded": [harmful[k % len(harmful)].file for k in range(sizes.padded)],
                     "harmful": [r.file for r in harmful[sizes.padded : sizes.padded + sizes.harmful]]}
    texts.prompts = {"padded": [harmful[k % len(harmful)].prompt for k in range(sizes.padded)],
                     "harmful": [r.prompt for r in harmful[sizes.padded : sizes.padded + sizes.harmful]],
                     "harmless": [r.prompt for r in harmless[: sizes.harmless]],
                     "long_harmless": [], "fillers": [r.prompt for r in alone]}
    unique = {r.id: r for r in used}.values()
    texts.seen = Counter(r.file for r in unique)
    texts.licences = Counter(r.licence for r in unique)
    return texts


def fit_response_peak_head(reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord], *,
                           sizes: PeakSizes | None = None, seed: int = 0, log: Log = print) -> PeakHead:
    """The response peak head on ``reader``'s tuned copy, from the fit sample ``records`` and harmless answers
    ``fillers``."""
    started = time.perf_counter()
    texts = response_peak_texts(reader, records, fillers, sizes or response_peak_sizes(), seed)
    log(f"response peak head: {len(texts.padded)} padded answers, {len(texts.harmful)} harmful and "
        f"{len(texts.harmless)} harmless responses, {len(texts.fillers)} answers alone")
    return fit_window_head(reader, texts, widths=RESPONSE_PEAK_WIDTHS, inside=True, min_tokens=RESPONSE_TOKENS,
                           context_tokens=RESPONSE_CONTEXT_TOKENS, started=started, log=log, name="response peak head")


def add_response_peak_head(heads: Any, reader: TokenReader, records: Sequence[HeadRecord], fillers: Sequence[HeadRecord],
                           *, sizes: PeakSizes | None = None, log: Log = print) -> Any:
    """A copy of ``heads`` (a ``GuardHeads`` with tuned layers) with a response peak head fitted on its tuned copy."""
    if heads.tuned is None:
        raise ValueError("a peak head reads the tuned prompt layers; these heads carry none (fit_heads --tune-epochs)")
    head = fit_response_peak_head(reader, records, fillers, sizes=sizes, log=log)
    return dataclasses.replace(heads, response_peak=head)
