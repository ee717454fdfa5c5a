"""The response peak head (``GuardHeads.response_peak``): a response longer than the features read is read whole on the
tuned copy, and harmful content found inside it makes the response unsafe and is named as the verdict's
``response_evidence``. Plumbing on a tiny random six-layer Gemma 3 (its judgements are noise: the thresholds decide)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guard.backends.base import GuardRequest
from guard.contract import CategorySpec, PolicySpec
from guard.features import RESPONSE_TOKENS
from guard.heads import HeadsError, load
from guard.peak_reading import PeakHead
from guard.testing import TINY_UNSAFE, fit_tiny_heads

POLICY = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
FILLER = " ".join(["The committee met on Tuesday to review the budget for the new library wing and the garden."] * 24)
CONTENT = "First get a metal pipe, then fill it with the powder and seal both ends."
LONG_ANSWER = FILLER + "\n\n" + CONTENT + "\n\n" + FILLER
SHORT_ANSWER = CONTENT


def response_peak(hidden: int, threshold: float, **options: object) -> PeakHead:
    options = {"widths": (16,), "min_tokens": RESPONSE_TOKENS, **options}
    return PeakHead(coef=np.linspace(-1, 1, hidden).astype(np.float32), bias=0.0, threshold=threshold, **options)


def verdicts_with(backend, heads_dir, threshold: float | None, requests: list[GuardRequest]) -> list:  # noqa: ANN001
    """``requests`` judged by the heads in ``heads_dir`` with a response peak head at ``threshold`` (None: none), the
    response head alone calling nothing unsafe."""
    heads = load(heads_dir)
    assert heads.response is not None
    heads.response.threshold = 0.999
    heads.response_peak = None if threshold is None else response_peak(backend.runner.hidden_size, threshold)
    heads.save(heads_dir)
    backend.use_heads(None)
    backend.use_heads(heads_dir / "heads")
    try:
        return backend.classify_batch(requests)
    finally:
        backend.use_heads(None)


def test_a_response_peak_head_round_trips_with_the_heads(six_layer_backend, tuned_heads_dir):
    heads = load(tuned_heads_dir)
    heads.response_peak = response_peak(six_layer_backend.runner.hidden_size, 2.5, widths=(32, 64), info={"files": {"jbb": 2}})
    heads.save(tuned_heads_dir)
    again = load(tuned_heads_dir, six_layer_backend.feature_fingerprint)
    assert again.peak is None and again.response_peak is not None
    assert again.response_peak.widths == (32, 64) and again.response_peak.min_tokens == RESPONSE_TOKENS
    assert again.response_peak.threshold == 2.5 and again.response_peak.info == {"files": {"jbb": 2}}
    np.testing.assert_array_equal(again.response_peak.coef, heads.response_peak.coef)


def test_heads_with_a_response_peak_head_but_no_tuned_layers_are_refused_with_a_message(six_layer_backend, tmp_path):
    heads = fit_tiny_heads(six_layer_backend, tmp_path)
    heads.response_peak = response_peak(six_layer_backend.runner.hidden_size, 0.0)
    heads.save(tmp_path)
    with pytest.raises(HeadsError, match="peak head but no tuned layers"):
        load(tmp_path)


def test_a_response_peak_over_its_threshold_makes_a_long_response_unsafe_and_leaves_a_short_one_to_the_response_head(
        six_layer_backend, tuned_heads_dir):
    requests = [GuardRequest(POLICY, "How do I plan a meeting?", LONG_ANSWER), GuardRequest(POLICY, "How?", SHORT_ANSWER)]
    assert len(six_layer_backend.tokenizer(LONG_ANSWER, add_special_tokens=False)["input_ids"]) > RESPONSE_TOKENS
    none = verdicts_with(six_layer_backend, tuned_heads_dir, None, requests)
    under = verdicts_with(six_layer_backend, tuned_heads_dir, 1e9, requests)
    over = verdicts_with(six_layer_backend, tuned_heads_dir, -1e9, requests)
    assert [v.response_label for v in none] == ["safe", "safe"]
    assert [(v.response_label, v.confidence) for v in under] == [(v.response_label, v.confidence) for v in none]
    # Over: the long response is unsafe; the short one (read whole by the features) was never read by the peak head.
    assert [v.response_label for v in over] == ["unsafe", "safe"]
    assert [v.prompt_label for v in over] == [v.prompt_label for v in none]  # the prompt is judged as before


def test_a_long_response_the_response_peak_head_flags_names_the_stretch_it_found(six_layer_backend, tuned_heads_dir):
    request = GuardRequest(POLICY, "How do I plan a meeting?", LONG_ANSWER)
    passed, = verdicts_with(six_layer_backend, tuned_heads_dir, 1e9, [request])
    flagged, = verdicts_with(six_layer_backend, tuned_heads_dir, -1e9, [request])
    assert passed.response_evidence == "" and passed.evidence == ""
    assert flagged.response_evidence and flagged.response_evidence in LONG_ANSWER and flagged.evidence == ""
    assert len(six_layer_backend.tokenizer(flagged.response_evidence, add_special_tokens=False)["input_ids"]) <= 18


def test_peak_reading_switched_off_leaves_the_response_head_alone_to_decide(six_layer_backend, tuned_heads_dir, settings):
    settings.GUARD_PEAK_READING = False
    verdict, = verdicts_with(six_layer_backend, tuned_heads_dir, -1e9, [GuardRequest(POLICY, TINY_UNSAFE[0], LONG_ANSWER)])
    assert verdict.response_label == "safe" and verdict.response_evidence == ""


def test_a_response_read_in_context_is_scored_on_its_own_tokens_after_its_prompt(six_layer_backend, tuned):
    from guard.peak_reading import TokenReader

    _, result = tuned
    reader = TokenReader(six_layer_backend.runner, six_layer_backend.tokenizer,
                         result.weights.module(six_layer_backend.model.get_decoder()))
    head = response_peak(six_layer_backend.runner.hidden_size, 0.0, context_tokens=8)
    prompt = TINY_UNSAFE[0] + " Please answer in detail, with every step written out."
    reading, short = reader.read_responses(head, [(prompt, LONG_ANSWER), (prompt, SHORT_ANSWER)])
    assert short is None and reading is not None
    response = reader.token_ids([LONG_ANSWER], head.max_tokens)[0]
    before = reader.token_ids([prompt], 8)[0] + reader.assistant
    whole = reader.states([before + response])[0]
    expected = head.window(whole[len(before):])
    assert (reading.start, reading.end) == (expected.start, expected.end) and reading.end <= len(response)
    assert abs(reading.logit - expected.logit) < 1e-3
    alone = reader.read_responses(dataclasses.replace(head, context_tokens=0), [(prompt, LONG_ANSWER)])[0]
    assert alone is not None and abs(alone.logit - head.window(reader.states([response])[0]).logit) < 1e-3


def test_a_response_peak_heads_context_round_trips_with_the_heads(six_layer_backend, tuned_heads_dir):
    heads = load(tuned_heads_dir)
    heads.response_peak = response_peak(six_layer_backend.runner.hidden_size, 1.0, context_tokens=128)
    heads.save(tuned_heads_dir)
    again = load(tuned_heads_dir)
    assert again.response_peak is not None and again.response_peak.context_tokens == 128
